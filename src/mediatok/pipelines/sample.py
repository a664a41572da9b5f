"""`mediatok sample`: draw token sequences from a generator checkpoint, decode them with the
codec the run recorded, and write media files and their tokens.

The same seed, count, batch size and settings give the same samples: batch b draws from a
generator seeded with `batch_seed(seed, b)`.

Layer 5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediatok.checkpoint import read_checkpoint
from mediatok.codecs import Codec, Tokens
from mediatok.config import check_positive_int, from_dict
from mediatok.generation import SampleConfig, load_generator, read_generator_run
from mediatok.modalities import DecodeOptions, modality_of
from mediatok.pipelines.common import check_decodes, load_decoding_codec
from mediatok.pipelines.decode import write_decoded
from mediatok.progress import progress
from mediatok.runtime import resolve_device
from mediatok.tokens import TokenDataset, TokenWriter

__all__ = ["Samples", "batch_seed", "sample", "write_samples"]


@dataclass
class Samples:
    """What `sample` returns.

    Attributes:
        codes: `(N, *token_shape)` int64 sampled codes.
        lengths: `(N,)` valid tokens along the length axis (variable-length specs), or None.
        labels: `(N,)` the classes sampled, or None for an unconditional generator.
        codec: the codec to decode them with, or None when none is known.
    """

    codes: torch.Tensor
    lengths: torch.Tensor | None
    labels: torch.Tensor | None
    codec: Codec | None

    @property
    def tokens(self) -> Tokens:
        """The codes with their lengths, to decode: `samples.codec.decode(samples.tokens)`
        decodes each variable-length sample from its own tokens, not from the code-0 padding
        after its end (which an audio decoder's attention would hear)."""
        if self.codec is None:
            raise ValueError(
                "expected samples with a codec (sample(..., codec=CKPT)) to build their tokens, "
                "got samples of a generator that records no codec"
            )
        return Tokens(self.codes, self.codec.token_spec, self.lengths)


def sample(
    checkpoint: str | os.PathLike,
    num_samples: int,
    *,
    label: int | str | None = None,
    codec: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    require_codec: bool = False,
    tokens: int | None = None,
    **settings: Any,
) -> Samples:
    """Sample token sequences from a generator checkpoint (and load the codec that decodes them).

    Args:
        checkpoint: a generator checkpoint directory.
        num_samples: N.
        label: class of every sample for a class-conditional generator, by id or by the name
            that `mediatok encode --labels` recorded (`class_id`); None cycles through the
            classes (0, 1, 2, ...). An unconditional generator refuses one.
        codec: codec checkpoint to decode with; None: the one the run recorded, if any.
        seed: seeds the sampling, an integer in [0, 2**64).
        batch_size: samples per `generate` call.
        device: where to sample ("auto", "cpu", "cuda", or a torch.device).
        require_codec: raise unless a codec is known (to write media files).
        tokens: AR generators: stop each sample at this many tokens, fewer than the model's L
            where its samples may be shorter (a variable-length model, or tokens whose spec
            says any prefix decodes: FlexTok's); None: all L (or to the end token).
        **settings: override the run's sampling settings: fields of
            `mediatok.generation.SampleConfig` (`cfg_scale`, `temperature`, `top_k`, `top_p`,
            `steps`, `precision`, `compile`, ...), checked there.

    Raises:
        ValueError: a bad count, class or setting; a codec that does not decode the
            generator's tokens.
        FileNotFoundError: the checkpoint, or the codec it records, is missing.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"expected num_samples >= 1, got {num_samples}")
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    run = read_generator_run(checkpoint)
    if tokens is not None:
        check_positive_int("tokens", tokens)
        if run.generator != "ar":
            raise ValueError(
                f"expected an AR generator to stop at a number of tokens (tokens, --tokens), "
                f"got a {run.generator!r} one, which fills every position"
            )
    config = from_dict(SampleConfig, {**run.sample, **settings}, where="sampling")
    config.check_for(
        run.generator,
        num_tokens=int(np.prod(run.token_shape)),
        conditional=bool(run.model.get("num_classes")),
    )
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model = load_generator(checkpoint, device=device)
    num_classes = model.config.num_classes
    if label is not None and not num_classes:
        raise ValueError(f"{checkpoint}: an unconditional generator takes no class, got {label}")
    names = read_checkpoint(checkpoint, kind="generator").run.get("class_names")
    label = class_id(label, names, num_classes, checkpoint)
    decoder = _codec(checkpoint, codec, run.codec, run.spec, device, require_codec)
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    codes, lengths, labels = [], [], []
    bar = progress(desc="sample", total=num_samples, unit="sample")
    for batch, start in enumerate(range(0, num_samples, batch_size)):
        count = min(batch_size, num_samples - start)
        batch_labels = None
        if num_classes:
            batch_labels = torch.arange(start, start + count) % num_classes
            if label is not None:
                batch_labels = torch.full((count,), label)
            labels.append(batch_labels)
            batch_labels = batch_labels.to(device)
        generator = torch.Generator(device).manual_seed(batch_seed(seed, batch))
        bf16 = precision == "bf16"
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            stop = {} if tokens is None else {"max_tokens": tokens}
            out = model.generate(
                count, batch_labels, config.settings(), generator=generator, **stop
            )
        codes.append(out.codes.cpu())
        if out.lengths is not None:
            lengths.append(out.lengths.cpu())
        bar.update(count)
    bar.close()
    return Samples(
        codes=torch.cat(codes),
        lengths=torch.cat(lengths) if lengths else None,
        labels=torch.cat(labels) if labels else None,
        codec=decoder,
    )


def _codec(
    checkpoint: str | os.PathLike,
    given: str | os.PathLike | None,
    recorded: str | None,
    spec: Any,
    device: torch.device,
    required: bool,
) -> Codec | None:
    """The codec that decodes the generator's samples, checked against its tokens, or None."""
    path = given if given is not None else recorded
    if path is None:
        if required:
            raise ValueError(
                f"{checkpoint} records no codec to decode with; pass the codec checkpoint with "
                "--codec CKPT (codec=... in Python)"
            )
        return None
    if given is None and not Path(path).exists():
        raise FileNotFoundError(
            f"{checkpoint}: the codec recorded in the generator checkpoint was not found at "
            f"{path}; pass the codec checkpoint with --codec CKPT (codec=... in Python)"
        )
    return check_decodes(
        load_decoding_codec(path, device),
        spec,
        path,
        "the generator's tokens",
        advice="decode with the codec whose tokens the generator was trained on",
    )


def class_id(
    label: int | str | None,
    names: list[str] | None,
    num_classes: int,
    checkpoint: str | os.PathLike = "",
) -> int | None:
    """The class id that `label` asks for.

    Args:
        label: an id, a class name (one of `names`), a string of digits that is not a name (an
            id typed on the command line), or None.
        names: the class names the generator's run recorded (`GeneratorRunConfig.class_names`,
            from the shards' manifest), or None.
        num_classes: the generator's number of classes.
        checkpoint: named in the errors.

    Returns:
        An id in `[0, num_classes)`, or None for None.

    Raises:
        ValueError: an unknown name (the known ones are listed), or an id out of range.
    """
    if label is None:
        return None
    if isinstance(label, str):
        if names is not None and label in names:
            return names.index(label)
        if not label.strip().lstrip("-").isdigit():
            known = f"one of {', '.join(names)}" if names else "an id: the run records no names"
            raise ValueError(f"{checkpoint}: expected a class name or id, {known}; got {label!r}")
        label = int(label)
    if not 0 <= label < num_classes:
        named = f" ({', '.join(names)})" if names else ""
        raise ValueError(f"expected a class in [0, {num_classes}){named}, got {label}")
    return label


def batch_seed(seed: int, batch: int) -> int:
    """The 64-bit seed of batch `batch` of a `sample` run seeded with `seed`.

    Mixed by numpy's `SeedSequence`, not `seed + batch`: with a sum, seed 1's first batch would
    be seed 0's second, and runs with neighbouring seeds would share samples.

    Raises:
        ValueError: a seed outside [0, 2**64) (a negative one used to alias seed + 2**64).
    """
    check_seed(seed)
    sequence = np.random.SeedSequence(seed, spawn_key=(batch,))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def check_seed(seed: int) -> None:
    """Raise unless `seed` is an integer in [0, 2**64), naming what came."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"expected a seed, an integer in [0, 2**64), got {seed!r}")


def write_samples(
    samples: Samples, out: str | os.PathLike, *, options: DecodeOptions | None = None
) -> list[str]:
    """Write decoded samples as media files into `out` and their tokens into `out/tokens`.

    Files are named `sample-00000` (or `class-0003-sample-00000` for a conditional generator).
    The modality's preview goes beside them (`Modality.write_preview`; images: `grid.png`,
    one row per class when labelled). A rerun of the same command skips the tokens already written, so that a killed run
    finishes; a folder that holds other samples under these names is refused before anything
    is written.

    Args:
        samples: from `sample`, with a codec.
        out: the folder (created).
        options: batch size and file format of the decoded media.

    Returns:
        The names written, without suffix.

    Raises:
        ValueError: samples without a codec, or a folder of other samples.
    """
    options = options or DecodeOptions()
    if samples.codec is None:
        raise ValueError("expected samples with a codec to write media files, got none")
    out = Path(out)
    names = [f"sample-{i:05d}" for i in range(len(samples.codes))]
    if samples.labels is not None:
        names = [
            f"class-{int(c):04d}-{name}" for c, name in zip(samples.labels, names, strict=True)
        ]
    _check_earlier_samples(out, samples, names)
    files = write_decoded(
        samples.codec, samples.codes, out, names, samples.lengths, options=options
    )
    labels = None if samples.labels is None else samples.labels.tolist()
    modality_of(samples.codec).write_preview(out, files, labels)  # grid.png of images
    codec = samples.codec
    with TokenWriter(out / "tokens", codec.token_spec, codec=codec.name) as writer:
        new = [i for i, name in enumerate(names) if name not in writer.done_keys]  # a rerun
        if new:
            rows = torch.tensor(new)
            writer.add_batch(
                samples.codes[rows],
                labels=None if samples.labels is None else samples.labels[rows],
                keys=[names[i] for i in new],
                lengths=None if samples.lengths is None else samples.lengths[rows],
            )
    return names


def _check_earlier_samples(out: Path, samples: Samples, names: list[str]) -> None:
    """Refuse to write into a folder whose `tokens/` holds other samples under these names.

    A rerun skips the tokens already written (so that a killed run finishes) but rewrites the
    media files, which is right only when the earlier run drew the same samples (same seed,
    count, batch size and settings); otherwise the folder would pair new media with old tokens.
    """
    directory = out / "tokens"
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    codec = samples.codec
    with TokenWriter(directory, codec.token_spec, codec=codec.name):
        pass  # adopts the shards of a killed run and writes manifest.json
    earlier = TokenDataset(directory, codec.token_spec)
    rows = {name: row for row, name in enumerate(names)}
    axis = codec.token_spec.length_axis
    for index, key in enumerate(earlier.keys):
        if key not in rows:
            continue
        codes = samples.codes[rows[key]]  # (*token_shape)
        if samples.lengths is not None:  # stored trimmed at the end token
            codes = codes.narrow(axis, 0, int(samples.lengths[rows[key]]))
        if not torch.equal(earlier[index]["codes"], codes):
            raise ValueError(
                f"{out} already holds other samples under the same names ({key} in "
                f"{directory} differs from this run's: another seed, count, batch size or "
                "setting?); choose another -o or remove the folder"
            )
