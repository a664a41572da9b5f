"""Video codec throughput: training clips/s, encode and decode frames/s, peak memory and MFU.

For each model (the causal tokenizer at 4×8×8 and 4×16×16 by default, the shipped configs'
sizes): one training step is the codec's forward + backward with an L1 reconstruction loss plus
the quantizer's losses, then AdamW (fused on CUDA), under bf16 autocast on a batch of random
clips of 17 frames at the model's image size (the data loader, the perceptual and adversarial
losses are left out: this measures the codec). Encode and decode run in eval mode under
`torch.no_grad` and bf16 autocast on 17-frame clips at 128² and 256² (the model is fully
convolutional; 256² costs 4× the pixels). frames/s counts source frames (17 per clip).

FLOPs of one call are counted once with `torch.utils.flop_counter.FlopCounterMode` (convs,
matmuls, attention; elementwise ops and norms count nothing, so MFU is slightly understated).
MFU = FLOPs per call / seconds per call / the GPU's dense bf16 peak (`PEAK_BF16_FLOPS`, by device
name; other GPUs, CPUs and fp32 get none). Peak memory (CUDA only) is GiB allocated above what
was allocated when the timed calls began. `--compile` compiles the encoder and the decoder
(`nn.Module.compile`; the quantizer stays eager) for training and inference alike.

    python benchmarks/video_codec.py                        # GPU: 4x8x8 and 4x16x16, eager
    python benchmarks/video_codec.py --compile
    python benchmarks/video_codec.py --device cpu --small   # a quick look on a CPU (< 1 min)

`--small`: narrow models (channels 16, one residual block per level), 9-frame clips at 32² and
64², batch 2, one intra-op thread on a CPU (two threads on a shared two-core machine spend their
time in OpenMP barriers).

Writes `bench-output/video_codec.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import add_device_arguments, device_name, small_without_gpu, timed, write_report
from mediatok.codecs import build_codec

# Dense (no sparsity) bf16 tensor-core peak by `torch.cuda.get_device_name()`.
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H200": 989e12,
}
# name → (config overrides, training image size, training batch)
MODELS = {
    "video-4x8x8": ({}, 128, 8),
    "video-4x16x16": ({"channel_mult": [1, 2, 2, 4, 4], "image_size": 256}, 256, 4),
    "video-4x8x8-lfq": (
        {"latent_dim": 18, "quantizer": {"kind": "lfq", "options": {"codebook_size": 2**18}}},
        128,
        8,
    ),
}
SMALL = {"channels": 16, "num_res_blocks": 1, "attention_heads": 4}
FRAMES, SIZES = 17, (128, 256)
SMALL_FRAMES, SMALL_SIZES = 9, (32, 64)


def gib(value: float) -> float | None:
    """Peak GiB rounded, None where it is not measured (a CPU: `timed` gives nan)."""
    return None if math.isnan(value) else round(value, 2)


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` (forward and, if it runs one, backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def rates(flops: int, seconds: float, peak_flops: float | None) -> dict:
    row = {"tflops_per_call": round(flops / 1e12, 4), "tflop_s": round(flops / seconds / 1e12, 3)}
    if peak_flops is not None:
        row["mfu"] = round(flops / seconds / peak_flops, 4)
    return row


def bench_inference(codec, frames: int, size: int, autocast, peak_flops, args) -> dict:
    """Encode and decode `args.infer_batch` random clips of `frames` × `size`²."""
    device = args.device
    video = torch.rand(args.infer_batch, 3, frames, size, size, device=device) * 2 - 1

    def encode():
        with torch.no_grad(), autocast():
            return codec.encode(video)

    encode_s, encode_gib = timed(encode, device, args.warmup, args.repeats)
    tokens = encode()

    def decode():
        with torch.no_grad(), autocast():
            return codec.decode(tokens)

    decode_s, decode_gib = timed(decode, device, args.warmup, args.repeats)
    coded = args.infer_batch * frames
    return {
        "batch": args.infer_batch,
        "clip": [frames, size, size],
        "codes": list(tokens.codes.shape[1:]),
        "encode_frames_per_s": round(coded / encode_s, 1),
        "encode_peak_gib": gib(encode_gib),
        "encode": rates(count_flops(encode), encode_s, peak_flops),
        "decode_frames_per_s": round(coded / decode_s, 1),
        "decode_peak_gib": gib(decode_gib),
        "decode": rates(count_flops(decode), decode_s, peak_flops),
    }


def bench_model(name: str, args: argparse.Namespace) -> dict:
    options, train_size, train_batch = MODELS[name]
    frames, sizes = (SMALL_FRAMES, SMALL_SIZES) if args.small else (FRAMES, SIZES)
    if args.small:
        options, train_size = {**options, **SMALL, "image_size": 32}, 32
        train_batch = 2
    train_batch = args.train_batch or train_batch
    torch.manual_seed(0)
    device = args.device
    codec = build_codec("causal_video", options).to(device)
    bf16 = args.precision == "bf16"
    autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    peak_flops = PEAK_BF16_FLOPS.get(device_name(device)) if bf16 else None
    if args.compile:
        codec.encoder.compile()
        codec.decoder.compile()
    optimizer = torch.optim.AdamW(codec.parameters(), lr=1e-4, fused=device == "cuda")
    clips = torch.rand(train_batch, 3, frames, train_size, train_size, device=device) * 2 - 1

    def forward_backward():
        with autocast():
            out = codec(clips)
            loss = (out.reconstruction.float() - clips).abs().mean()
            loss = loss + sum(out.quantize.losses.values())
        loss.backward()

    def train_step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    codec.train()
    train_s, train_gib = timed(train_step, device, args.warmup, args.repeats)
    train_flops = count_flops(forward_backward)
    optimizer.zero_grad(set_to_none=True)
    row = {
        "model": name,
        "params_m": round(sum(p.numel() for p in codec.parameters()) / 1e6, 2),
        "precision": args.precision,
        "compile": args.compile,
        "train": {
            "batch": train_batch,
            "clip": [frames, train_size, train_size],
            "clips_per_s": round(train_batch / train_s, 2),
            "peak_gib": gib(train_gib),
            **rates(train_flops, train_s, peak_flops),
        },
    }
    codec.eval()
    for size in sizes:
        row[f"infer_{size}"] = bench_inference(codec, frames, size, autocast, peak_flops, args)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "narrow models, 9-frame clips at 32² and 64², for a CPU")
    parser.add_argument("--models", default="video-4x8x8,video-4x16x16")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--train-batch", type=int, default=0, help="0: the model's default")
    parser.add_argument("--infer-batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="bench-output/video_codec.json")
    args = parser.parse_args()
    small_without_gpu(args)
    if args.small:
        args.infer_batch = min(args.infer_batch, 2)
        args.warmup, args.repeats = 1, min(args.repeats, 3)
        if args.device == "cpu":
            torch.set_num_threads(1)
    rows = [bench_model(name, args) for name in args.models.split(",")]
    device = device_name(args.device)
    out = write_report(args.out, "video_codec", args.device, rows=rows)
    print(f"\n{device}, {args.precision}{', compiled' if args.compile else ''}")
    print(
        f"{'model':>16} {'phase':>7} {'clip':>10} {'batch':>5} {'rate':>16} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'GiB':>6}"
    )
    for r in rows:
        phases = [("train", r["train"], f"{r['train']['clips_per_s']:.2f} clip/s", "")]
        for key in (k for k in r if k.startswith("infer_")):
            infer = r[key]
            for phase in ("encode", "decode"):
                rate = f"{infer[f'{phase}_frames_per_s']:.1f} frame/s"
                phases.append((phase, {**infer, **infer[phase]}, rate, f"{phase}_"))
        for phase, numbers, rate, prefix in phases:
            mfu = f"{numbers['mfu']:.1%}" if "mfu" in numbers else "-"
            gib = numbers[f"{prefix}peak_gib"]
            print(
                f"{r['model']:>16} {phase:>7} {'x'.join(map(str, numbers['clip'])):>10} "
                f"{numbers['batch']:>5} {rate:>16} {numbers['tflop_s']:>8.3f} {mfu:>6} "
                f"{'-' if gib is None else f'{gib:.2f}':>6}"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
