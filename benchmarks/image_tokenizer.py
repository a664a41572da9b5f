"""Image tokenizer throughput: training step, encode and decode images/s and peak memory.

For each model (TiTok-S-128 and TiTok-B-64 by default) at 256×256: one training step is forward
+ backward + AdamW (fused on CUDA) under bf16 autocast on a batch of random images (the data
loader is left out: this measures the model); encode and decode run in eval mode under
`torch.no_grad` and bf16 autocast. Optionally with `torch.compile` on the model.

    python benchmarks/image_tokenizer.py                         # GPU, batch 64 train, 256 encode/decode
    python benchmarks/image_tokenizer.py --compile
    python benchmarks/image_tokenizer.py --device cpu --small    # a quick look on a CPU

Writes `bench-output/image_tokenizer.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import add_device_arguments, device_name, small_without_gpu, timed, write_report
from mediatok.codecs import build_codec

MODELS = {
    "titok-s-128": ("titok", {"size": "S", "num_tokens": 128}),
    "titok-b-64": ("titok", {"size": "B", "num_tokens": 64}),
    "titok-l-32": ("titok", {"size": "L", "num_tokens": 32}),
    "vqgan-f16": ("vqgan", {}),
}
SMALL = {"image_size": 64, "size": "custom", "width": 64, "depth": 2, "heads": 4, "num_tokens": 16}


def bench_model(name: str, args: argparse.Namespace) -> dict:
    codec_name, options = MODELS[name]
    if args.small:
        options = (
            {**options, **SMALL} if codec_name == "titok" else {"image_size": 64, "channels": 32}
        )
    torch.manual_seed(0)
    device = args.device
    codec = build_codec(codec_name, options).to(device)
    size = codec.config.image_size
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    autocast = lambda: torch.autocast(device, dtype=dtype, enabled=args.precision == "bf16")  # noqa: E731
    model = torch.compile(codec) if args.compile else codec
    optimizer = torch.optim.AdamW(codec.parameters(), lr=1e-4, fused=device == "cuda")
    train_images = torch.rand(args.train_batch, 3, size, size, device=device) * 2 - 1

    def train_step():
        with autocast():
            out = model(train_images)
            loss = (out.reconstruction.float() - train_images).abs().mean()
            loss = loss + sum(out.quantize.losses.values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    codec.train()
    train_s, train_gib = timed(train_step, device, args.warmup, args.repeats)
    codec.eval()
    images = torch.rand(args.infer_batch, 3, size, size, device=device) * 2 - 1

    def encode():
        with torch.no_grad(), autocast():
            codec.encode(images)

    encode_s, encode_gib = timed(encode, device, args.warmup, args.repeats)
    with torch.no_grad(), autocast():
        tokens = codec.encode(images)

    def decode():
        with torch.no_grad(), autocast():
            codec.decode(tokens)

    decode_s, decode_gib = timed(decode, device, args.warmup, args.repeats)
    row = {
        "model": name,
        "image_size": size,
        "params_m": round(sum(p.numel() for p in codec.parameters()) / 1e6, 1),
        "precision": args.precision,
        "compile": args.compile,
        "train_batch": args.train_batch,
        "train_img_s": round(args.train_batch / train_s, 1),
        "train_peak_gib": round(train_gib, 2),
        "infer_batch": args.infer_batch,
        "encode_img_s": round(args.infer_batch / encode_s, 1),
        "encode_peak_gib": round(encode_gib, 2),
        "decode_img_s": round(args.infer_batch / decode_s, 1),
        "decode_peak_gib": round(decode_gib, 2),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "tiny models at 64x64, for a CPU")
    parser.add_argument("--models", default="titok-s-128,titok-b-64")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="bench-output/image_tokenizer.json")
    args = parser.parse_args()
    small_without_gpu(args)
    if args.small:
        args.train_batch, args.infer_batch = min(args.train_batch, 8), min(args.infer_batch, 16)
        args.warmup, args.repeats = 1, min(args.repeats, 3)
    rows = [bench_model(name, args) for name in args.models.split(",")]
    device = device_name(args.device)
    out = write_report(args.out, "image_tokenizer", args.device, rows=rows)
    print(f"\n{device}, {args.precision}{', compiled' if args.compile else ''}")
    print(
        f"{'model':>12} {'train img/s':>12} {'encode img/s':>13} {'decode img/s':>13} {'train GiB':>10}"
    )
    for r in rows:
        print(
            f"{r['model']:>12} {r['train_img_s']:>12.1f} {r['encode_img_s']:>13.1f} "
            f"{r['decode_img_s']:>13.1f} {r['train_peak_gib']:>10.2f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
