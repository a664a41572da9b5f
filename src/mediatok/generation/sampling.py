"""Sampling helpers shared by the autoregressive and masked generators.

Order of operations in `sample`: keep the top-k logits, divide by the temperature, keep the
nucleus (top-p) of what is left, renormalize, draw. Logits already set to -inf (ids that are
invalid at a position) stay impossible through every step. The division is `scale_logits`: the
row's largest logit is subtracted first, so that no finite temperature gives NaN or lets a
masked id through; one so small that the quotients overflow leaves only the largest logits
finite, i.e. greedy (ties drawn at random).

The draw is the exponential race (the Gumbel-max trick in another form): with E_i ~ Exp(1) drawn
independently, `argmax_i(logit_i − log E_i)` is id i with probability softmax(logits)_i. It needs
no softmax, no cumulative sum and no host sync, so a compiled decode step can take the noise as an
input (`pick`) and `sample` (eager) draws the same ids from the same noise.

Classifier-free guidance (Ho & Salimans 2022): `cfg_logits` returns
`uncond + scale · (cond − uncond)`; scale 1 is plain conditional sampling. `cfg_scale_at` gives
the scale at one step of a schedule: `"constant"` uses `scale` at every step, `"linear"` ramps
from 1 at the first step to `scale` at the last, `1 + (scale − 1) · step / (total − 1)`, so that
guidance is weak while the first tokens are decided and full at the end.

`SampleSettings` is the one check of sampling settings, where they enter (a config, a command
line, a Python call): `__post_init__` checks each value, `check_for` what depends on the
generator (AR or masked, its token count, whether it is conditional). The models check only
their own inputs. `SampleConfig` is the `sample:` section of a generator run: the settings plus
how many samples an evaluation draws and the precision of `mediatok sample`. Both generators
return `GeneratedCodes`.

Layout: logits `(..., V)`, samples `(...)` int64.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from mediatok.config import check_choice

__all__ = [
    "CFG_SCHEDULES",
    "COMPILE_MODES",
    "MASKED_STEPS",
    "PRECISIONS",
    "GeneratedCodes",
    "SampleConfig",
    "SampleSettings",
    "cfg_logits",
    "cfg_scale_at",
    "check_guidance",
    "check_sampling",
    "draw_noise",
    "filter_logits",
    "pick",
    "resolve_settings",
    "sample",
    "scale_logits",
]

CFG_SCHEDULES = ("constant", "linear")
MASKED_STEPS = 8  # decoding steps of a masked generator when `SampleSettings.steps` is None
# `torch.compile` modes that `SampleSettings.compile` may name (True picks one by device).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PRECISIONS = ("auto", "bf16", "fp32")


class GeneratedCodes(NamedTuple):
    """What `generate` returns, for both generators: `codes, lengths = model.generate(...)`,
    or `.codes`.

    Attributes:
        codes: `(B, *token_shape)` int64 in layout order (a variable-length AR model's:
            `(B, max_tokens)`, code 0 after a sample's end).
        lengths: `(B,)` int64 of an AR model: tokens before the end token (fixed-length: the
            full extent along the spec's length axis). None for a masked model: every sample
            fills the whole token shape.
    """

    codes: Tensor
    lengths: Tensor | None = None


@dataclass(frozen=True)
class SampleSettings:
    """How a generator draws samples; every value is checked here, once.

    Attributes:
        cfg_scale: classifier-free guidance scale s, finite: logits = uncond + s · (cond −
            uncond); 1 is no guidance, whatever the schedule (no doubled batch either).
        cfg_schedule: "constant" (s at every step) or "linear" (from 1 at the first step to s
            at the last, `cfg_scale_at`).
        temperature: softmax temperature, finite, >= 0; 0 is greedy.
        top_k: sample among the k most likely ids only; None: all.
        top_p: AR only: nucleus sampling, in (0, 1]; None: off.
        steps: masked only: decoding steps, in [1, L]; None: `MASKED_STEPS`. An AR generator
            refuses a value (it draws one token per step).
        choice_temperature: masked only: scale of the Gumbel noise on confidences at the first
            step, annealed to 0 at the last; finite, >= 0 (inf · noise would be a NaN
            confidence).
        compile: AR only: compile each decode step (guidance, the draw, the end-token
            bookkeeping and the decode of the drawn token) with `torch.compile`: True is
            "reduce-overhead" (one CUDA graph per step) on CUDA and "default" elsewhere; a
            string names the mode (`COMPILE_MODES`). See `mediatok.generation.engine`.
    """

    cfg_scale: float = 1.0
    cfg_schedule: Literal["constant", "linear"] = "constant"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    steps: int | None = None
    choice_temperature: float = 4.5
    compile: bool | str = False

    def __post_init__(self) -> None:
        check_guidance(self.cfg_scale, self.cfg_schedule)
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.steps is not None and not (_is_int(self.steps) and self.steps >= 1):
            raise ValueError(f"expected steps to be an int >= 1 or None, got {self.steps!r}")
        if not (_is_finite(self.choice_temperature) and self.choice_temperature >= 0):
            raise ValueError(
                f"expected a finite choice_temperature >= 0, got {self.choice_temperature}"
            )
        if not isinstance(self.compile, bool) and self.compile not in COMPILE_MODES:
            modes = ", ".join(repr(mode) for mode in COMPILE_MODES)
            raise ValueError(
                f"expected compile True, False or one of {modes}, got {self.compile!r}"
            )

    @property
    def masked_steps(self) -> int:
        """The decoding steps of a masked generator: `steps`, or `MASKED_STEPS` when None."""
        return MASKED_STEPS if self.steps is None else self.steps

    def check_for(self, generator: str, *, num_tokens: int | None, conditional: bool) -> None:
        """Raise `ValueError` unless these settings suit a generator: the checks that depend on
        the model, in one place.

        Args:
            generator: "ar" or "masked".
            num_tokens: L, tokens per sample (a masked generator unmasks at least one per step);
                None: not known yet (the steps are checked when it is).
            conditional: whether the samples have labels (a class-conditional model given
                labels); guidance needs them.
        """
        check_choice("generator", generator, ("ar", "masked"))
        if generator == "ar" and self.steps is not None:
            raise ValueError(
                f"expected no steps for an {generator!r} generator (steps, --steps on the "
                "command line, are the decoding steps of masked generators only), got "
                f"steps={self.steps!r}"
            )
        if generator == "masked":
            if self.compile is not False:
                got = "true" if self.compile is True else repr(self.compile)
                raise ValueError(
                    f"expected compile: false for a masked generator (AR only), got {got}"
                )
            if self.top_p is not None:
                raise ValueError(
                    f"expected top_p: null for a masked generator (AR only), got {self.top_p}"
                )
            if num_tokens is not None and self.masked_steps > num_tokens:  # >= 1 a step
                raise ValueError(
                    f"expected steps to be an int in [1, {num_tokens}], got {self.masked_steps}"
                )
        if self.cfg_scale != 1.0 and not conditional:
            got = f"cfg_scale={self.cfg_scale}, cfg_schedule={self.cfg_schedule!r} and no labels"
            raise ValueError(f"expected labels (of a class-conditional model) for CFG, got {got}")


@dataclass(frozen=True)
class SampleConfig(SampleSettings):
    """The `sample:` section of a generator run config: `mediatok sample`'s defaults, and the
    samples drawn at each evaluation during training.

    Attributes:
        (those of `SampleSettings`)
        num_samples: how many samples each evaluation draws (and decodes when the run names a
            codec), >= 1.
        precision: of `mediatok sample`: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16"
            or "fp32". Evaluations during training run under the loop's precision.
    """

    num_samples: int = 8
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (_is_int(self.num_samples) and self.num_samples >= 1):
            raise ValueError(f"expected num_samples >= 1, got {self.num_samples!r}")
        check_choice("precision", self.precision, PRECISIONS)

    def settings(self) -> SampleSettings:
        """The sampling settings alone, for `generate`."""
        fields = dataclasses.fields(SampleSettings)
        return SampleSettings(**{field.name: getattr(self, field.name) for field in fields})


def resolve_settings(settings: SampleSettings | None) -> SampleSettings:
    """`settings`, or `SampleSettings()` for None: what `generate` does with its argument.

    Raises:
        TypeError: anything else (a dict of settings, say).
    """
    if settings is None:
        return SampleSettings()
    if not isinstance(settings, SampleSettings):
        raise TypeError(
            f"expected settings a SampleSettings or None, got {type(settings).__name__}"
        )
    return settings


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise `ValueError` unless temperature is finite and >= 0, top_k an int >= 1 or None,
    top_p in (0, 1] or None."""
    if not (_is_finite(temperature) and temperature >= 0):
        raise ValueError(f"expected a finite temperature >= 0 (0: greedy), got {temperature}")
    if top_k is not None and not (_is_int(top_k) and top_k >= 1):
        raise ValueError(f"expected top_k >= 1 or None, got {top_k!r}")
    if top_p is not None and not (_is_finite(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"expected top_p in (0, 1] or None, got {top_p}")


def check_guidance(cfg_scale: float, cfg_schedule: str) -> None:
    """Raise `ValueError` unless cfg_scale is finite (NaN or inf logits would be drawn as id 0)
    and cfg_schedule is one of `CFG_SCHEDULES`."""
    if not _is_finite(cfg_scale):
        raise ValueError(f"expected a finite cfg_scale (1: no guidance), got {cfg_scale}")
    check_choice("cfg_schedule", cfg_schedule, CFG_SCHEDULES)


def _is_finite(value: object) -> bool:
    """Whether `value` is a finite real number (a string is not)."""
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def _is_int(value: object) -> bool:
    """Whether `value` is an int (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def scale_logits(logits: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """`logits / temperature` in fp32, shifted so that each row's largest logit is 0.

    Dividing the raw logits overflows: a temperature of 1e-40 turns every logit into ±inf (the
    first +inf then wins the draw, not the largest logit), and one above fp32's range (1e300, as
    a 0-d fp32 tensor inf) turns -inf into NaN. Here the row maximum is subtracted first, 0 / 0
    (a temperature that rounds to 0 in fp32) is 0, and a -inf logit stays -inf, so the result
    is never NaN: a tiny temperature leaves only the largest logits finite (greedy), a huge one
    makes every finite logit 0 (uniform over the valid ids).

    Args:
        logits: `(..., V)`; at least one finite logit per row (+inf is taken as fp32's max).
        temperature: > 0, a float or a 0-d tensor (unchecked).

    Returns:
        `(..., V)` fp32, <= 0, 0 at each row's largest logit, -inf where `logits` is -inf.
    """
    logits = logits.float().clamp(max=torch.finfo(torch.float32).max)  # +inf - +inf is NaN
    shifted = logits - logits.amax(dim=-1, keepdim=True)  # (..., V), <= 0
    scaled = (shifted / temperature).masked_fill(shifted == 0, 0.0)
    return scaled.masked_fill(torch.isneginf(shifted), -math.inf)


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Set every logit outside the top-k, then outside the nucleus, to -inf.

    Args:
        logits: `(..., V)`.
        top_k: keep the k largest logits (ties with the k-th are kept too); None or >= V keeps
            all.
        top_p: then keep the smallest set of largest-probability ids whose probability (after
            top-k, renormalized) reaches `top_p`; None or 1 keeps all. The most likely id is
            always kept. A 0-d tensor is used unchecked (see `pick`).

    Returns:
        `(..., V)`, a new tensor (the input is not modified).

    Raises:
        ValueError: top_k < 1 or top_p outside (0, 1].
    """
    check_sampling(0.0, top_k, _number(top_p))
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and (isinstance(top_p, torch.Tensor) or top_p < 1.0):
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V) each
        probabilities = sorted_logits.float().softmax(dim=-1)
        # Mass of the ids strictly more likely than each one: keep an id while that is < top_p,
        # so the kept set is the smallest one reaching top_p and never empty.
        before = probabilities.cumsum(dim=-1) - probabilities
        remove = (before >= top_p).scatter(-1, order, before >= top_p)  # back to id order
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def draw_noise(
    shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Exp(1) noise for `pick`: `shape` fp32.

    Args:
        shape: the logits' shape `(..., V)`.
        device: where (the generator's device).
        generator: the random source; None uses the global one.
    """
    return torch.empty(shape, dtype=torch.float32, device=device).exponential_(generator=generator)


def pick(
    logits: torch.Tensor,
    noise: torch.Tensor | None,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | None = None,
    top_p: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one id per row given the noise: what `sample` does after drawing the noise.

    Pure tensor code with no host sync (`torch.compile` captures it whole).

    Args:
        logits: `(..., V)`; at least one finite logit per row.
        noise: `(..., V)` from `draw_noise`; None only with temperature 0.
        temperature: > 0 divides the logits (`scale_logits`); 0 takes the argmax (greedy,
            ignores top-k/top-p and the noise).
        top_k, top_p: see `filter_logits`.

        temperature and top_p may be 0-d tensors, which a compiled step takes as inputs so that
        a new value is not a new graph; tensors are used unchecked (checking one is a host
        sync): the caller checks temperature > 0 and top_p in (0, 1].

    Returns:
        `(...)` int64 ids.
    """
    check_sampling(_number(temperature, 1.0), top_k, _number(top_p))
    if not isinstance(temperature, torch.Tensor) and temperature == 0:
        return logits.argmax(dim=-1)
    if noise is None or noise.shape != logits.shape:
        got = None if noise is None else tuple(noise.shape)
        raise ValueError(f"expected noise of shape {tuple(logits.shape)}, got {got}")
    # Top-k first: the k largest do not depend on the temperature, but after a huge one the
    # quotients may all round to 0 and tie.
    logits = filter_logits(logits.float(), top_k)
    logits = filter_logits(scale_logits(logits, temperature), None, top_p)
    # argmax(logit − log E): -inf logits stay -inf, so masked ids are never drawn. E is kept
    # above 0 (exponential_ may round to 0), whose log would turn a -inf logit into NaN.
    tiny = torch.finfo(torch.float32).tiny
    return noise.clamp_min(tiny).log_().neg_().add_(logits).argmax(dim=-1)


def _number(value: float | torch.Tensor | None, instead: float | None = None) -> float | None:
    """`value`, or `instead` when it is a tensor (left unchecked)."""
    return instead if isinstance(value, torch.Tensor) else value


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one id per row.

    Args:
        logits: `(..., V)`; at least one finite logit per row.
        temperature: finite, > 0 divides the logits (`scale_logits`); 0 takes the argmax
            (greedy, ignores top-k/top-p and the generator).
        top_k, top_p: see `filter_logits`.
        generator: the random source (on the logits' device); None uses the global one. The same
            generator state gives the same samples.

    Returns:
        `(...)` int64 ids.

    Raises:
        ValueError: a negative or non-finite temperature, or a bad top_k / top_p.
    """
    check_sampling(temperature, top_k, top_p)
    noise = None if temperature == 0 else draw_noise(logits.shape, logits.device, generator)
    return pick(logits, noise, temperature, top_k, top_p)


def cfg_scale_at(step: int, total: int, scale: float, schedule: str = "constant") -> float:
    """The guidance scale at one step of a schedule.

    Args:
        step: 0-based step, in `[0, total)`.
        total: number of steps.
        scale: the guidance scale (the final one for `"linear"`).
        schedule: `"constant"` (scale at every step) or `"linear"`
            (`1 + (scale − 1) · step / (total − 1)`, `scale` when total is 1).

    Returns:
        The scale for that step.

    Raises:
        ValueError: unknown schedule, or step outside `[0, total)`.
    """
    check_choice("cfg_schedule", schedule, CFG_SCHEDULES)
    if not 0 <= step < total:
        raise ValueError(f"expected step in [0, {total}), got {step}")
    if schedule == "constant" or total == 1:
        return float(scale)
    return 1.0 + (scale - 1.0) * step / (total - 1)


def cfg_logits(
    cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor
) -> torch.Tensor:
    """Classifier-free guidance: `uncond + scale · (cond − uncond)`.

    Args:
        cond: `(..., V)` logits given the condition.
        uncond: `(..., V)` logits given the null condition.
        scale: guidance scale, a float or a tensor that broadcasts against the rows (a
            compiled step takes it as a tensor so that a schedule does not recompile); a float
            of exactly 1 returns `cond` unchanged.

    Returns:
        `(..., V)`; -inf wherever either input is -inf (an id masked out in either stays out,
        rather than becoming NaN from `-inf − -inf`).
    """
    if cond.shape != uncond.shape:
        raise ValueError(
            f"expected cond and uncond of the same shape, got {tuple(cond.shape)} and "
            f"{tuple(uncond.shape)}"
        )
    if isinstance(scale, float | int) and scale == 1.0:
        return cond
    guided = uncond + scale * (cond - uncond)
    return guided.masked_fill(torch.isneginf(cond) | torch.isneginf(uncond), float("-inf"))
