"""MaskGIT: a bidirectional transformer that generates any codec's tokens by iterative unmasking
(Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer"; classifier-free guidance as
in MUSE, Chang et al. 2023).

Training masks ceil(γ(r)·L) random positions of each sample, r ~ U(0, 1), and predicts them from
the rest: cross-entropy on the masked positions only (MaskGIT §3.1). Sampling starts from an
all-masked sequence; each of `steps` steps predicts every masked position, samples ids, and keeps
the most confident of them so that `masked_count(step)` positions remain masked. Confidence is the
log-probability of the sampled id (guided logits, temperature 1) plus Gumbel noise whose scale
`choice_temperature` falls linearly to 0 over the steps (MaskGIT §3.2).

How we differ from the paper:
- any `TokenSpec`: the sequence comes from `SequenceLayout` (a residual quantizer's levels become
  positions with a level embedding); one combined vocabulary serves every level and the logits
  of ids outside a position's level are -inf, so they are never predicted or sampled;
- the number of masked tokens after step t is the paper's ceil(γ((t+1)/T)·L), adjusted so that
  every step unmasks at least one token and the last step unmasks the rest;
- the class is a prefix token with an extra null row; class dropout trains the null row, and
  guidance runs the conditional and null rows as one doubled batch, with a constant scale or one
  that ramps linearly from 1 to `cfg_scale` over the steps (MUSE);
- the output head is its own linear layer (the paper ties it to the input embedding), and
  dropout acts on the input embeddings only (`mediatok.nn.Transformer` has none);
- variable-length samples: positions past `lengths` (along the spec's length axis) read a pad
  embedding and are never masked nor scored. Attention keys are not masked out: `nn.Attention`
  takes no mask, and a mask would take SDPA off the flash kernel on CUDA; a pad position carries
  no sample content, only where the padding starts.

Tensor layout: codes `(B, *token_shape)` in `spec.layout` order ⇄ ids `(B, L)` in `spec.order`
order (`SequenceLayout`); the transformer reads `(B, 1 + L, D)`, the class token first; logits
are `(B, L, V)` over the combined vocabulary, V = sum(spec.vocab_sizes). Ids V (mask) and V + 1
(pad) are inputs only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mediatok.config import check_choice, from_dict
from mediatok.generation.sampling import (
    GeneratedCodes,
    SampleSettings,
    cfg_logits,
    cfg_scale_at,
    resolve_settings,
    sample,
)
from mediatok.generation.sequence import IGNORE_INDEX, SequenceLayout
from mediatok.nn import Transformer, init_weights
from mediatok.tokens import TokenSpec

__all__ = [
    "SCHEDULES",
    "MaskedConfig",
    "MaskedTransformer",
    "build_masked_transformer",
    "mask_ratio",
    "masked_count",
]

SCHEDULES = ("cosine", "arccos", "linear")
# Guards ceil(γ·L) against round-off: cos(π/2) is 6e-17, not 0, and k/L·L may land just above k.
_ROUND_OFF = 1e-6


@dataclass
class MaskedConfig:
    """MaskGIT settings.

    Attributes:
        dim, depth, heads, mlp_ratio, qk_norm: the bidirectional transformer's.
        num_classes: number of classes for class-conditional generation; 0 is unconditional.
        class_dropout: probability that training replaces a label by the null class (for CFG).
        schedule: the mask ratio γ(r): "cosine" (the paper's), "arccos" or "linear".
        dropout: dropout on the input embeddings.
    """

    dim: int = 512
    depth: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    num_classes: int = 0
    class_dropout: float = 0.1
    schedule: Literal["cosine", "arccos", "linear"] = "cosine"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"expected {name} >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(
                f"expected dim divisible by heads, got dim={self.dim}, heads={self.heads}"
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"expected mlp_ratio > 0, got {self.mlp_ratio}")
        if self.num_classes < 0:
            raise ValueError(f"expected num_classes >= 0, got {self.num_classes}")
        for name in ("class_dropout", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"expected {name} in [0, 1), got {getattr(self, name)}")
        check_choice("schedule", self.schedule, SCHEDULES)


# ---------------------------------------------------------------------------------------------
# schedules


def mask_ratio(r: float | torch.Tensor, schedule: str = "cosine") -> float | torch.Tensor:
    """γ(r), the fraction of tokens masked at progress r: γ(0) = 1, γ(1) = 0, decreasing.

    Args:
        r: progress in [0, 1], a float or a tensor of any shape (not range-checked).
        schedule: "cosine" cos(πr/2) (MaskGIT §3.2), "arccos" arccos(r)/(π/2) (masks more of
            the sequence late in sampling), or "linear" 1 - r.

    Returns:
        γ(r), a float or a tensor like `r`.
    """
    check_choice("schedule", schedule, SCHEDULES)
    if not isinstance(r, torch.Tensor):
        if not 0 <= float(r) <= 1:
            raise ValueError(f"expected r in [0, 1], got {r}")
        return float(mask_ratio(torch.tensor(float(r), dtype=torch.float64), schedule))
    if schedule == "cosine":
        return torch.cos(r * (math.pi / 2))
    if schedule == "arccos":
        return torch.arccos(r) * (2 / math.pi)
    return 1 - r


def masked_count(step: int, steps: int, length: int, schedule: str = "cosine") -> int:
    """How many of `length` tokens are still masked after sampling step `step` of `steps`.

    ceil(γ((step + 1)/steps)·length), lowered where needed so that every step unmasks at least
    one token and raised where needed so that each later step has one left to unmask: the counts
    decrease strictly from `length` and the last is 0.

    Args:
        step: 0-based, in [0, steps).
        steps: number of sampling steps, in [1, length].
        length: L, tokens per sample.
        schedule: one of `SCHEDULES`.

    Returns:
        The count, in [0, length - step - 1].
    """
    _check_int("length", length, 1)
    _check_int("steps", steps, 1, length)  # each step unmasks at least one token
    _check_int("step", step, 0, steps - 1)
    check_choice("schedule", schedule, SCHEDULES)
    return _masked_counts(steps, length, schedule)[step]


@functools.lru_cache(maxsize=256)
def _masked_counts(steps: int, length: int, schedule: str) -> tuple[int, ...]:
    """`masked_count` for every step; arguments already checked."""
    counts, previous = [], length
    for step in range(steps - 1):
        scheduled = math.ceil(mask_ratio((step + 1) / steps, schedule) * length - _ROUND_OFF)
        # previous - 1 >= steps - 1 - step always holds, since previous >= steps - step.
        previous = max(min(scheduled, previous - 1), steps - 1 - step)
        counts.append(previous)
    return (*counts, 0)


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise unless `value` is an int in [low, high]."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"expected {name} to be an int {bound}, got {value!r}")


def _check_vector(
    name: str, values: Any, batch_size: int, low: int, high: int, device: torch.device
) -> torch.Tensor:
    """Raise unless `values` are `(batch_size,)` integers in [low, high]; → int64 on `device`."""
    values = torch.as_tensor(values, device=device)
    if values.shape != (batch_size,) or values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(
            f"expected integer {name} of shape ({batch_size},), got {values.dtype} "
            f"{tuple(values.shape)}"
        )
    # Range checks sync with the host: eager only, so a compiled model has no graph breaks.
    if not torch.compiler.is_compiling() and bool(((values < low) | (values > high)).any()):
        raise ValueError(
            f"expected {name} in [{low}, {high}], got values from {int(values.min())} to "
            f"{int(values.max())}"
        )
    return values.long()


# ---------------------------------------------------------------------------------------------
# model


class MaskedTransformer(nn.Module):
    """MaskGIT over the tokens of any codec with the given `TokenSpec` and token shape.

    Args:
        config: the model settings.
        spec: the codec's token contract.
        token_shape: one sample's code shape in layout order, e.g. `(N,)`, `(H, W)`, `(Q, T)`.

    Attributes:
        layout: the `SequenceLayout`; `length` L and `vocab_size` V are its.
        mask_id, pad_id: V and V + 1, the input ids of masked and padded positions.
        null_class: `config.num_classes`, the label that means "no class".
    """

    def __init__(self, config: MaskedConfig, spec: TokenSpec, token_shape: Sequence[int]):
        super().__init__()
        if not isinstance(config, MaskedConfig):
            raise TypeError(f"expected a MaskedConfig, got {type(config).__name__}")
        if not isinstance(spec, TokenSpec):
            raise TypeError(f"expected a TokenSpec, got {type(spec).__name__}")
        self.config, self.spec = config, spec
        self.layout = SequenceLayout(spec, token_shape)
        self.token_shape = self.layout.token_shape
        self.length, self.vocab_size = self.layout.length, self.layout.vocab_size
        self.mask_id, self.pad_id = self.vocab_size, self.vocab_size + 1
        self.null_class = config.num_classes

        dim = config.dim
        self.token_embedding = nn.Embedding(self.vocab_size + 2, dim)
        self.position_embedding = nn.Parameter(torch.zeros(self.length, dim))
        multilevel = spec.num_levels > 1
        self.level_embedding = nn.Embedding(spec.num_levels, dim) if multilevel else None
        self.class_embedding = nn.Embedding(config.num_classes + 1, dim)
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = Transformer(
            dim, config.depth, config.heads, config.mlp_ratio, config.qk_norm
        )
        self.head = nn.Linear(dim, self.vocab_size)

        # Derived from the spec, so not saved; buffers so that `.to(device)` moves them.
        self.register_buffer("level_ids", self.layout.level_ids.clone(), persistent=False)
        self.register_buffer("vocab_mask", self.layout.vocab_mask.clone(), persistent=False)
        # Coordinate of each position on the length axis, against which `lengths` are compared.
        length_axis = spec.axes[spec.length_axis]
        column = self.layout.coordinate_axes.index(length_axis)
        self.register_buffer(
            "length_coordinates", self.layout.coordinates[:, column].clone(), persistent=False
        )
        self.apply(init_weights)  # truncated normal(0.02) linear and embedding weights
        nn.init.trunc_normal_(self.position_embedding, std=0.02)

    def logits(self, ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Predict every position.

        Args:
            ids: `(B, L)` combined ids, `mask_id` or `pad_id` (not range-checked).
            labels: `(B,)` in [0, num_classes], num_classes being the null class; None: null.

        Returns:
            `(B, L, V)` logits, -inf at ids outside each position's level.
        """
        if ids.ndim != 2 or ids.shape[1] != self.length:
            raise ValueError(f"expected ids (B, {self.length}), got shape {tuple(ids.shape)}")
        return self._mask_invalid(self._raw_logits(ids, labels))

    def _raw_logits(self, ids: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """`(B, L)` ids → `(B, L, V)` logits over the whole combined vocabulary."""
        tokens = self.token_embedding(ids) + self.position_embedding  # (B, L, D)
        if self.level_embedding is not None:
            tokens = tokens + self.level_embedding(self.level_ids)  # (B, L, D)
        if labels is None:
            labels = ids.new_full((len(ids),), self.null_class)
        prefix = self.class_embedding(labels)[:, None]  # (B, 1, D)
        x = self.dropout(torch.cat([prefix, tokens], dim=1))  # (B, 1 + L, D)
        return self.head(self.transformer(x)[:, 1:])  # (B, L, V)

    def _mask_invalid(self, logits: torch.Tensor) -> torch.Tensor:
        """-inf at ids outside each position's level: `(B, L, V)` → `(B, L, V)`."""
        if self.spec.num_levels == 1:
            return logits
        invalid = ~self.vocab_mask[self.level_ids]  # (L, V)
        return logits.masked_fill(invalid, float("-inf"))

    def forward(
        self,
        codes: torch.Tensor,
        labels: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The masked-token loss (MaskGIT §3.1), `forward` so that DDP sees the call: masks the
        positions `draw_mask` draws and averages the cross-entropy over all masked positions of
        the batch. In training mode a label becomes the null class with prob. `class_dropout`.

        Args:
            codes: codes `(B, *token_shape)` in layout order, or combined ids `(B, L)` in
                sequence order (the two coincide for one-axis layouts).
            labels: `(B,)` int in [0, num_classes); required iff num_classes > 0.
            lengths: `(B,)` valid positions along the spec's length axis (`spec.length_axis`),
                in [1, its size]; positions past them are padding, never masked nor scored and
                not range-checked. None: no padding.
            generator: draws the mask, r and the class dropout (on the model's device).

        Returns:
            The scalar loss, fp32.
        """
        ids = self._to_ids(codes)  # (B, L)
        valid = None
        if lengths is not None:
            size = self.token_shape[self.spec.length_axis]
            lengths = _check_vector("lengths", lengths, len(ids), 1, size, ids.device)
            valid = self._valid_positions(lengths)  # (B, L)
        self._check_ids(ids, valid)
        labels = self._check_labels(labels, len(ids), allow_null=False)
        self._check_generator(generator)
        mask = self.draw_mask(len(ids), lengths, generator=generator)  # (B, L)
        inputs = ids.masked_fill(mask, self.mask_id)
        if valid is not None:
            inputs = inputs.masked_fill(~valid, self.pad_id)
        if labels is not None and self.training and self.config.class_dropout > 0:
            draw = torch.rand(len(ids), generator=generator, device=ids.device)
            labels = labels.masked_fill(draw < self.config.class_dropout, self.null_class)
        logits = self._mask_invalid(self._raw_logits(inputs, labels))  # (B, L, V)
        targets = ids.masked_fill(~mask, IGNORE_INDEX)  # (B, L): the masked positions only
        return F.cross_entropy(
            rearrange(logits, "b l v -> (b l) v").float(),
            rearrange(targets, "b l -> (b l)"),
            ignore_index=IGNORE_INDEX,
        )

    def draw_mask(
        self,
        batch_size: int,
        lengths: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The positions the loss masks, `(B, L)` bool: ceil(γ(r)·n) of each sample's n valid
        positions (r ~ U(0, 1), at least one), drawn uniformly, never a padded one. `lengths`
        `(B,)` as in `forward`, already checked; `generator` on the model's device.
        """
        device = self.position_embedding.device
        r = torch.rand(batch_size, generator=generator, device=device)  # (B,)
        scores = torch.rand(batch_size, self.length, generator=generator, device=device)
        if lengths is None:
            valid_count = torch.full((batch_size,), self.length, device=device)
        else:
            valid = self._valid_positions(lengths)  # (B, L)
            valid_count = valid.sum(dim=1)  # (B,)
            scores = scores.masked_fill(~valid, 2.0)  # padding sorts last
        count = torch.ceil(mask_ratio(r, self.config.schedule) * valid_count - _ROUND_OFF)
        count = torch.minimum(count.clamp(min=1), valid_count)  # (B,)
        rank = scores.argsort(dim=1).argsort(dim=1)  # (B, L): rank of each position's score
        return rank < count[:, None]

    @torch.no_grad()
    def generate(
        self,
        num_samples: int | None = None,
        labels: torch.Tensor | None = None,
        settings: SampleSettings | None = None,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> GeneratedCodes:
        """Iterative parallel decoding (MaskGIT §3.2), in eval mode (the training flag is restored).

        Args:
            num_samples: B; may be left out when `labels` are given.
            labels: `(B,)` classes in [0, num_classes] (num_classes: the null class, an
                unconditional sample); required iff num_classes > 0.
            settings: how to draw (None: `SampleSettings()`), checked for a masked generator
                (`SampleSettings.check_for`): `masked_steps` decoding steps T in [1, L];
                guidance with `cfg_scale` on the `cfg_schedule` (steps at scale 1 skip the
                null-class rows); ids drawn at `temperature` among the `top_k` most likely;
                Gumbel noise of scale `choice_temperature` on the confidences at the start,
                falling linearly to 0 at the last step (0 keeps exactly the most confident ids).
            generator: on the model's device; the same seed gives the same samples.
            callback: called after each step with `(step, ids)`, ids `(B, L)` with `mask_id`
                at the positions still masked.

        Returns:
            `GeneratedCodes` with codes `(B, *token_shape)` int64 and lengths None.
        """
        settings = resolve_settings(settings)
        labels, batch_size = self._check_batch(num_samples, labels)
        settings.check_for("masked", num_tokens=self.length, conditional=labels is not None)
        self._check_generator(generator)

        device = self.position_embedding.device
        steps, guided = settings.masked_steps, settings.cfg_scale != 1.0
        ids = torch.full((batch_size, self.length), self.mask_id, device=device)  # (B, L)
        was_training = self.training
        self.eval()
        try:
            for step in range(steps):
                scale = 1.0
                if guided:
                    scale = cfg_scale_at(step, steps, settings.cfg_scale, settings.cfg_schedule)
                count = masked_count(step, steps, self.length, self.config.schedule)
                noise = settings.choice_temperature * (1 - (step + 1) / steps)  # annealed to 0
                ids = self._unmask_step(ids, labels, scale, count, noise, settings, generator)
                if callback is not None:
                    callback(step, ids)
        finally:
            self.train(was_training)
        return GeneratedCodes(codes=self.layout.unflatten(ids))

    def _unmask_step(
        self,
        ids: torch.Tensor,
        labels: torch.Tensor | None,
        scale: float,
        count: int,
        noise_scale: float,
        settings: SampleSettings,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One decoding step: `(B, L)` ids → `(B, L)` ids with exactly `count` still masked.

        `scale` 1: no guidance; else conditional and null-class rows run as one doubled batch
        (MUSE) and their logits are combined with that scale. Ids are drawn at the settings'
        temperature among their top_k; `noise_scale` scales the Gumbel noise on confidences.
        """
        masked = ids == self.mask_id  # (B, L)
        if scale == 1.0:
            logits = self._raw_logits(ids, labels).float()  # (B, L, V)
        else:
            null = torch.full_like(labels, self.null_class)
            both = self._raw_logits(torch.cat([ids, ids]), torch.cat([labels, null]))  # (2B, L, V)
            cond, uncond = both.float().chunk(2)  # (B, L, V) each
            logits = cfg_logits(cond, uncond, scale)
        logits = self._mask_invalid(logits)
        sampled = sample(logits, settings.temperature, settings.top_k, None, generator)  # (B, L)
        confidence = logits.log_softmax(dim=-1).gather(-1, sampled[..., None])[..., 0]  # (B, L)
        sampled = torch.where(masked, sampled, ids)  # known ids stay
        confidence = confidence.masked_fill(~masked, float("inf"))
        if noise_scale > 0:
            uniform = torch.rand(confidence.shape, generator=generator, device=ids.device)
            gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20)))  # (B, L)
            confidence = confidence + noise_scale * gumbel
        # Re-mask the `count` least confident: all among the masked, the others being +inf.
        least = confidence.topk(count, dim=1, largest=False).indices  # (B, count)
        remask = torch.zeros_like(masked).scatter_(1, least, True)  # (B, L)
        return sampled.masked_fill(remask, self.mask_id)

    def _to_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes `(B, *token_shape)` or ids `(B, L)` → combined ids `(B, L)` int64."""
        expected = f"codes (B, {', '.join(map(str, self.token_shape))}) or ids (B, {self.length})"
        if not isinstance(tokens, torch.Tensor):
            raise ValueError(f"expected {expected} as a tensor, got {type(tokens).__name__}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"expected integer {expected}, got dtype {tokens.dtype}")
        device = self.position_embedding.device
        tokens = tokens.to(device=device, dtype=torch.int64)
        if tokens.ndim < 2 or len(tokens) < 1:
            raise ValueError(f"expected {expected} with B >= 1, got shape {tuple(tokens.shape)}")
        if tuple(tokens.shape[1:]) == self.token_shape:
            return self.layout.flatten(tokens)  # (B, L)
        if tokens.ndim == 2 and tokens.shape[1] == self.length:
            return tokens
        raise ValueError(f"expected {expected}, got shape {tuple(tokens.shape)}")

    def _check_ids(self, ids: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Raise unless every valid position of `(B, L)` ids holds an id of its level (eager only)."""
        if torch.compiler.is_compiling():
            return
        inside = (ids >= 0) & (ids < self.vocab_size)  # (B, L)
        level_ok = self.vocab_mask[self.level_ids, ids.clamp(0, self.vocab_size - 1)]  # (B, L)
        bad = ~(inside & level_ok)
        if valid is not None:
            bad &= valid
        if bool(bad.any()):
            row, position = torch.nonzero(bad)[0].tolist()
            level = int(self.level_ids[position])
            code = int(ids[row, position] - self.layout.offsets[level])
            raise ValueError(
                f"expected codes in [0, {self.spec.vocab_sizes[level]}) at level {level}, got "
                f"{code} in sample {row} (sequence position {position})"
            )

    def _check_labels(
        self, labels: torch.Tensor | None, batch_size: int, allow_null: bool
    ) -> torch.Tensor | None:
        """Checked `(B,)` int64 labels on the model's device, or None when unconditional."""
        classes = self.config.num_classes
        if classes == 0:
            if labels is not None:
                raise ValueError(
                    "expected no labels for an unconditional model (num_classes=0), got labels; "
                    "set num_classes to train on them"
                )
            return None
        high = classes if allow_null else classes - 1
        if labels is None:
            raise ValueError(
                f"expected labels (B,) in [0, {high}] for num_classes={classes}, got None"
            )
        return _check_vector("labels", labels, batch_size, 0, high, self.position_embedding.device)

    def _valid_positions(self, lengths: torch.Tensor) -> torch.Tensor:
        """`(B,)` lengths → `(B, L)` bool, True before each sample's length."""
        return self.length_coordinates[None] < lengths[:, None]

    def _check_batch(
        self, num_samples: int | None, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, int]:
        """`generate`'s batch: checked labels (or None) and B."""
        if num_samples is not None:
            _check_int("num_samples", num_samples, 1)
        if labels is None and num_samples is None:
            raise ValueError("expected num_samples or labels, got neither")
        batch_size = num_samples if labels is None else len(labels)
        if num_samples is not None and num_samples != batch_size:
            raise ValueError(
                f"expected {num_samples} labels for num_samples={num_samples}, got {batch_size}"
            )
        return self._check_labels(labels, batch_size, allow_null=True), batch_size

    def _check_generator(self, generator: torch.Generator | None) -> None:
        device = self.position_embedding.device
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"expected a generator on the model's device {device}, got one on {generator.device}"
            )


# ---------------------------------------------------------------------------------------------
# builder


def build_masked_transformer(
    config: MaskedConfig | Mapping[str, Any] | None,
    spec: TokenSpec | Mapping[str, Any],
    token_shape: Sequence[int],
) -> MaskedTransformer:
    """A `MaskedTransformer` from a config (or the fields that differ from the defaults), a
    token spec (or its `to_dict` form) and a token shape.

    Args:
        config: the settings.
        spec: the codec's token contract.
        token_shape: one sample's code shape in layout order.

    Returns:
        The model, randomly initialized.

    Raises:
        ValueError: an unknown or invalid config field, a bad spec or token shape.
    """
    if config is None or isinstance(config, Mapping):
        config = from_dict(MaskedConfig, dict(config or {}), where="model")
    if isinstance(spec, Mapping):
        spec = TokenSpec.from_dict(spec)
    return MaskedTransformer(config, spec, token_shape)
