"""`GeneratorTask`: trains an autoregressive or masked generator on token shards, in the one loop.

The shards are what `mediatok encode` wrote with any codec; the generator sees only their
`TokenSpec` (DESIGN.md § Layers). Samples of one shape train as they are; variable-length
shards (audio, 1-D variable-length codecs) are cut into windows of `data.window` tokens along the
spec's length axis. Class labels are used when the shards have them.

Whether an AR model may end a sample early (`ARConfig.variable_length`) comes from the shards
when the config leaves it None (`resolve_variable_length`): a 1-D model of L tokens is
variable-length iff some training sample has fewer than L tokens. The run config saved with the
checkpoint records the resolved value, so `mediatok sample` knows it.

Layout: batches `{"codes": (B, *token_shape) int64, "lengths": (B,), "labels": (B,)?}`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from mediatok.config import check_choice
from mediatok.data.folder import item_seed
from mediatok.generation import build_generator
from mediatok.generation.masked import check_choice_temperature
from mediatok.generation.sampling import check_guidance, check_sampling
from mediatok.tokens import TokenDataset, TokenSpec
from mediatok.training.base import Task, is_main_process


@dataclass
class GeneratorDataConfig:
    """Which token shards train the generator.

    Attributes:
        tokens: a directory written by `mediatok encode`.
        window: tokens per training sequence along the length axis, for shards whose samples
            differ in length (random windows; shorter samples are padded and their padding is
            not trained on). None: every sample must have the same token shape.
    """

    tokens: str = "demo-output/image/tokens"
    window: int | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError(f"expected window >= 1 or None, got {self.window}")


@dataclass
class SampleConfig:
    """How samples are drawn (`mediatok sample` defaults, and samples at evaluation).

    Attributes:
        cfg_scale: classifier-free guidance scale (1 = none, whatever the schedule).
        cfg_schedule: "constant", or "linear" (the scale ramps up over the steps).
        temperature: softmax temperature, finite (0 = greedy).
        top_k, top_p: truncation of the distribution (None = off).
        steps: masked generators: decoding steps (an AR run refuses another value, and
            `mediatok sample --steps` for an AR checkpoint too).
        choice_temperature: masked generators: Gumbel noise on confidences (annealed to 0).
        num_samples: how many samples each evaluation draws (and decodes when `codec` is set).
        precision: of `mediatok sample`: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16"
            or "fp32". Evaluations during training run under the loop's precision.
        compile: AR generators: compile the decode step (CUDA graphs on CUDA). Pays a compile
            (a minute or so) on the first batch, then each step is one graph launch.
    """

    cfg_scale: float = 1.0
    cfg_schedule: Literal["constant", "linear"] = "constant"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    steps: int = 8
    choice_temperature: float = 4.5
    num_samples: int = 8
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, ("auto", "bf16", "fp32"))
        # Checked here too, so that a bad value stops a run before training, not at its first
        # evaluation.
        check_guidance(self.cfg_scale, self.cfg_schedule)
        check_sampling(self.temperature, self.top_k, self.top_p)
        check_choice_temperature(self.choice_temperature)

    def options(self, generator: str) -> dict[str, Any]:
        """Keyword arguments of `generate` for generator kind `generator` ("ar" or "masked")."""
        common = {
            "cfg_scale": self.cfg_scale,
            "cfg_schedule": self.cfg_schedule,
            "temperature": self.temperature,
            "top_k": self.top_k,
        }
        if generator == "ar":
            return common | {"top_p": self.top_p, "compile_step": self.compile}
        if self.compile:
            raise ValueError("expected compile: false for a masked generator (AR only), got true")
        if self.top_p is not None:
            raise ValueError(
                f"expected top_p: null for a masked generator (AR only), got {self.top_p}"
            )
        return common | {"steps": self.steps, "choice_temperature": self.choice_temperature}


class TokenWindows(Dataset):
    """Samples of a `TokenDataset` as fixed-shape training items.

    Items are `{"codes": (*token_shape) int64, "length": int, "label": int?}`; `length` counts
    the real positions along the spec's length axis (the rest is padding with code 0).
    """

    def __init__(
        self,
        tokens: TokenDataset,
        token_shape: tuple[int, ...],
        window: int | None,
        seed: int = 0,
    ):
        self.tokens, self.token_shape, self.window, self.seed = tokens, token_shape, window, seed
        self.axis = tokens.spec.length_axis
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        if index < 0:
            index += len(self)  # the window's seed must not depend on how the index was written
        item = self.tokens[index]
        codes = item["codes"]
        if self.window is None:
            if tuple(codes.shape) != self.token_shape:
                raise ValueError(
                    f"{self.tokens.directory}: sample {item['key']!r} has token shape "
                    f"{tuple(codes.shape)}, expected {self.token_shape} like the first; set "
                    f"data.window to train on windows of variable-length samples"
                )
            length = codes.shape[self.axis]
        else:
            # Windows cut the length axis only; every other axis must already match.
            other = [size for axis, size in enumerate(codes.shape) if axis != self.axis]
            expected = [size for axis, size in enumerate(self.token_shape) if axis != self.axis]
            if other != expected:
                raise ValueError(
                    f"{self.tokens.directory}: sample {item['key']!r} has token shape "
                    f"{tuple(codes.shape)}, expected {self.token_shape} except along the length "
                    f"axis {self.tokens.spec.axes[self.axis]!r} (axis {self.axis}) that "
                    f"data.window cuts"
                )
            length = codes.shape[self.axis]
            if length > self.window:
                generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                start = int(torch.randint(length - self.window + 1, (), generator=generator))
                codes = codes.narrow(self.axis, start, self.window)
                length = self.window
            elif length < self.window:
                pad = list(codes.shape)
                pad[self.axis] = self.window - length
                codes = torch.cat([codes, codes.new_zeros(pad)], dim=self.axis)
        out = {"codes": codes, "length": length}
        if "label" in item:
            out["label"] = item["label"]
        return out


def resolve_variable_length(spec: TokenSpec, token_shape: tuple[int, ...], lengths: Any) -> bool:
    """Whether an AR generator of `token_shape` trained on samples of `lengths` tokens may end
    samples early: for a 1-D layout, True iff some sample is shorter than the model's L tokens;
    never for a multi-axis layout.

    A sample longer than L trains on random windows of exactly L tokens (`TokenWindows`): none
    of them is cut short, and where a window stops is not where the sample ends, so the end
    token is never their target; only a sample shorter than L teaches where to stop. Shards of
    one length (TiTok's K tokens; audio clips all at least `data.window` long) thus give a
    fixed-length model, which always samples all L tokens.

    Args:
        spec: the shards' token contract.
        token_shape: the model's sample shape (for windows: the window along the length axis).
        lengths: `(num_samples,)` tokens per sample (`TokenDataset.lengths`).
    """
    if spec.ndim != 1:
        return False
    lengths = torch.as_tensor(lengths)
    return bool(lengths.numel()) and int(lengths.min()) < token_shape[0]


class GeneratorTask(Task):
    """Trains generator `generator` ("ar" or "masked") with config overrides `model` on
    samples of `token_shape` under `spec`."""

    kind = "generator"

    def __init__(
        self,
        generator: str,
        model: dict[str, Any],
        spec: TokenSpec,
        token_shape: tuple[int, ...],
        data: GeneratorDataConfig,
        sample: SampleConfig,
        codec: str | None = None,
        seed: int = 0,
    ):
        self.generator_name, self.model_config = generator, model
        self.spec, self.token_shape = spec, tuple(token_shape)
        self.data, self.sample, self.codec_path, self.seed = data, sample, codec, seed
        self._codec = None

    def build_model(self) -> nn.Module:
        return build_generator(self.generator_name, self.model_config, self.spec, self.token_shape)

    def dataset(self) -> Dataset:
        tokens = TokenDataset(self.data.tokens, self.spec)
        return TokenWindows(tokens, self.token_shape, self.data.window, self.seed)

    def losses(self, model: nn.Module, batch: dict, step: int):
        # `model.num_classes: 0` trains an unconditional generator, on labelled shards too.
        labels = batch.get("label") if self.model_config.get("num_classes") else None
        loss = model(batch["codes"], labels=labels, lengths=batch["length"])
        return loss, {"cross_entropy": loss.detach()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int, out_dir: str | Path) -> dict[str, float]:
        """Draw `sample.num_samples` samples (classes in turn when conditional); decode and write
        them under `samples-<step>/` when the run names a codec."""
        device = next(model.parameters()).device
        count = self.sample.num_samples
        num_classes = model.config.num_classes
        labels = torch.arange(count, device=device) % num_classes if num_classes else None
        generator = torch.Generator(device).manual_seed(self.seed)
        out = model.generate(
            num_samples=count,
            labels=labels,
            generator=generator,
            **self.sample.options(self.generator_name),
        )
        metrics = {"distinct_codes": float(out.codes.unique().numel())}
        if self.codec_path and is_main_process():
            names = [f"sample-{i:03d}" for i in range(count)]
            folder = Path(out_dir) / f"samples-{step:07d}"
            lengths = getattr(out, "lengths", None)  # AR samples end at their end token
            write_decoded(self.codec_on(device), out.codes, folder, names, lengths)
        return metrics

    def codec_on(self, device: torch.device):
        if self._codec is None:
            from mediatok.codecs import load_codec

            self._codec = check_decodes(load_codec(self.codec_path), self.spec, self.codec_path)
        return self._codec.to(device)


def check_decodes(codec: Any, spec: TokenSpec, where: str | Path) -> Any:
    """`codec` if it is a codec that decodes tokens of `spec` (`TokenSpec.describe_mismatch`:
    vocabulary, layout, and geometry when both record one); else a `ValueError` naming `where`.
    A codec of another vocabulary would decode the samples into plausible-looking garbage, one of
    another geometry into media of the wrong size or speed."""
    from mediatok.codecs import Codec

    if not isinstance(codec, Codec):
        raise ValueError(f"{where}: expected a codec checkpoint to decode with, got a generator")
    mismatch = spec.describe_mismatch(codec.token_spec)
    if mismatch is not None:
        raise ValueError(
            f"{where}: expected a codec of the generator's tokens, got one of other tokens: "
            f"{mismatch}"
        )
    return codec


def write_decoded(
    codec,
    codes: torch.Tensor,
    directory: str | Path,
    names: list[str],
    lengths: torch.Tensor | None = None,
    audio_format: str = "wav",
) -> list[Path]:
    """Decode codes with `codec` and write one file per row: PNG for images, WAV/FLAC for audio.

    Args:
        codec: the codec the codes belong to (see `check_decodes`).
        codes: `(B, *token_shape)` int64.
        directory: created if needed.
        names: B file names without suffix.
        lengths: `(B,)` valid tokens per row for variable-length samples: each row is decoded
            from its tokens alone (`Tokens.lengths`) and its audio is cut there.
        audio_format: "wav" or "flac".

    Returns:
        The written paths.
    """
    from mediatok.codecs import Tokens
    from mediatok.data import write_audio, write_image

    directory = Path(directory)
    device = next(codec.parameters()).device
    tokens = codes.to(device)
    if lengths is not None:
        # Audio codecs decode each row alone to its length: with attention in the decoder, the
        # code-0 padding after an AR sample's end token would change the whole clip. Image
        # codecs' tokens all have the full length, which they ignore.
        tokens = Tokens(tokens, codec.token_spec, torch.as_tensor(lengths, device=device))
    media = codec.decode(tokens).float().clamp(-1, 1).cpu()
    paths = []
    for row, name in enumerate(names):
        if codec.modality == "image":
            path = directory / f"{name}.png"
            write_image(path, media[row])
        elif codec.modality == "audio":
            path = directory / f"{name}.{audio_format}"
            clip = media[row]
            if lengths is not None:
                clip = clip[..., : int(lengths[row]) * codec.config.hop_length]
            write_audio(path, clip, codec.config.sample_rate)
        else:
            raise ValueError(f"cannot write {codec.modality} samples yet")
        paths.append(path)
    return paths
