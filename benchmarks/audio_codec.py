"""Audio codec throughput: training step in seconds of audio per second, encode and decode real-time
factor, peak memory.

The training step is the whole of one optimizer step of `AudioCodecTask` as `mediatok train`
runs it: the codec forward, multi-scale mel loss, quantizer losses, the discriminators on the
reconstruction (adversarial + feature matching), the codec's backward and AdamW, then the
discriminators' own step (hinge on real and fake) — under bf16 autocast, on random audio (the
data loader is left out: this measures the model). Encode and decode run in eval mode under
`torch.no_grad` and bf16 autocast at batch 32 × 10 s. Real-time factor = seconds of audio coded
per second of wall time.

    python benchmarks/audio_codec.py                        # GPU: 75 and 40 tokens/s configs
    python benchmarks/audio_codec.py --compile
    python benchmarks/audio_codec.py --device cpu --small   # a quick look on a CPU
    python benchmarks/audio_codec.py --band-discriminator   # plus DAC's multi-band discriminator

`--band-discriminator` adds the third discriminator family, DAC's multi-band complex STFT one, at
DAC's settings (windows 2048, 1024, 512, five bands, width 32; width 8 under `--small`, which
shrinks the other families too), to measure what it costs per training step.

Writes `bench-output/audio_codec.json` (`audio_codec-mbd.json` with `--band-discriminator`, or
`--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import add_device_arguments, device_name, small_without_gpu, timed, write_report
from mediatok.config import from_dict
from mediatok.training.tasks import AudioCodecTask, AudioDataConfig, AudioLossConfig
from mediatok.training.tasks.audio_discriminators import DAC_BAND_WINDOWS, KINDS

MODELS = {
    "wavtokenizer-75": {"hop_length": 320},
    "wavtokenizer-40": {"hop_length": 600},
}
# A few-hundred-kilobyte model for a CPU look: same layer kinds, tiny widths.
SMALL = {
    "channels": 8,
    "latent_dim": 64,
    "decoder_dim": 64,
    "decoder_intermediate": 128,
    "decoder_layers": 2,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 256, "kmeans_init": True}},
}
SMALL_DISCRIMINATOR = {
    "period_channels": [8, 16, 32, 64, 64],
    "resolution_channels": 16,
    "band_channels": 8,  # used with --band-discriminator
}


def count_parameters(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def bench_model(name: str, args: argparse.Namespace) -> dict:
    options = dict(MODELS[name])
    discriminator_options = dict(SMALL_DISCRIMINATOR) if args.small else {}
    if args.small:
        options |= SMALL
    if args.band_discriminator:
        discriminator_options["band_windows"] = list(DAC_BAND_WINDOWS)
    loss = from_dict(AudioLossConfig, {"discriminator": discriminator_options})
    torch.manual_seed(0)
    device = args.device
    task = AudioCodecTask("wavtokenizer", options, AudioDataConfig(), loss)
    codec = task.build_model().to(device)
    discriminator = task.build_discriminator().to(device)
    task.mel_loss.to(device)
    rate = codec.config.sample_rate
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    autocast = lambda: torch.autocast(device, dtype=dtype, enabled=args.precision == "bf16")  # noqa: E731
    model = torch.compile(codec) if args.compile else codec
    fused = device == "cuda"
    optimizer = torch.optim.AdamW(codec.parameters(), lr=1e-4, fused=fused)
    disc_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=1e-4, fused=fused)
    train_audio = 0.5 * torch.randn(args.train_batch, 1, round(args.train_seconds * rate))
    batch = {"audio": train_audio.clamp(-1, 1).to(device)}

    def train_step():
        discriminator.requires_grad_(False)
        with autocast():
            loss, _ = task.losses(model, batch, step=1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        discriminator.requires_grad_(True)
        with autocast():
            disc_loss, _ = task.discriminator_losses(codec, discriminator, batch, step=1)
        disc_loss.backward()
        disc_optimizer.step()
        disc_optimizer.zero_grad(set_to_none=True)

    codec.train()
    train_s, train_gib = timed(train_step, device, args.warmup, args.repeats)
    codec.eval()
    samples = round(args.infer_seconds * rate)
    audio = (0.5 * torch.randn(args.infer_batch, 1, samples)).clamp(-1, 1).to(device)

    def encode():
        with torch.no_grad(), autocast():
            return codec.encode(audio)

    encode_s, encode_gib = timed(encode, device, args.warmup, args.repeats)
    tokens = encode()

    def decode():
        with torch.no_grad(), autocast():
            codec.decode(tokens)

    decode_s, decode_gib = timed(decode, device, args.warmup, args.repeats)
    coded_seconds = args.infer_batch * args.infer_seconds
    row = {
        "model": name,
        "tokens_per_second": rate / codec.config.hop_length,
        "params_m": round(sum(p.numel() for p in codec.parameters()) / 1e6, 2),
        "discriminator_params_m": round(count_parameters(discriminator) / 1e6, 2),
        "discriminator_params_m_by_family": {
            kind: round(count_parameters(family) / 1e6, 2)
            for kind, family in zip(KINDS, discriminator.families(), strict=True)
        },
        "band_discriminator": args.band_discriminator,
        "precision": args.precision,
        "compile": args.compile,
        "train_batch": args.train_batch,
        "train_seconds": args.train_seconds,
        "train_audio_s_per_s": round(args.train_batch * args.train_seconds / train_s, 1),
        "train_peak_gib": round(train_gib, 2),
        "infer_batch": args.infer_batch,
        "infer_seconds": args.infer_seconds,
        "encode_rtf": round(coded_seconds / encode_s, 1),
        "encode_peak_gib": round(encode_gib, 2),
        "decode_rtf": round(coded_seconds / decode_s, 1),
        "decode_peak_gib": round(decode_gib, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "tiny models, short clips, for a CPU")
    parser.add_argument("--models", default="wavtokenizer-75,wavtokenizer-40")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-seconds", type=float, default=3.0)
    parser.add_argument("--infer-batch", type=int, default=32)
    parser.add_argument("--infer-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--band-discriminator",
        action="store_true",
        help="add DAC's multi-band STFT discriminator family (off in the default configs)",
    )
    parser.add_argument("--out", default=None, help="default bench-output/audio_codec[-mbd].json")
    args = parser.parse_args()
    if args.out is None:
        suffix = "-mbd" if args.band_discriminator else ""
        args.out = f"bench-output/audio_codec{suffix}.json"
    small_without_gpu(args)
    if args.small:
        args.train_batch, args.train_seconds = min(args.train_batch, 4), min(args.train_seconds, 1)
        args.infer_batch, args.infer_seconds = min(args.infer_batch, 4), min(args.infer_seconds, 2)
        args.warmup, args.repeats = 1, min(args.repeats, 3)
    rows = [bench_model(name, args) for name in args.models.split(",")]
    out = write_report(args.out, "audio_codec", args.device, small=args.small, rows=rows)
    extras = [args.precision] + ["compiled"] * args.compile
    extras += ["band discriminator"] * args.band_discriminator
    print(f"\n{device_name(args.device)}, {', '.join(extras)}")
    print(
        f"{'model':>16} {'train audio s/s':>16} {'encode RTF':>11} {'decode RTF':>11} {'GiB':>6} "
        f"{'D params M':>11}"
    )
    for r in rows:
        print(
            f"{r['model']:>16} {r['train_audio_s_per_s']:>16.1f} {r['encode_rtf']:>11.1f} "
            f"{r['decode_rtf']:>11.1f} {r['train_peak_gib']:>6.2f} "
            f"{r['discriminator_params_m']:>11.2f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
