"""FlexTok throughput: training step, encode and decode images/s, ms per decode step, peak memory.

For each model (FlexTok d18-d18, d18-d28 and the small default d6-d6 at 256×256, 256 registers):
one training step is forward (the flow loss + the quantizer's terms) + backward + AdamW (fused
on CUDA) under bf16 autocast on a batch of random images (the data loader is left out: this
measures the model); encode (all registers) and decode (25 Euler steps, without guidance and
with CFG 3.0, a doubled batch) run in eval mode under `torch.no_grad` and bf16 autocast.
`--compile` compiles the training model and decodes with `decode(compile=True)` (one graph per
step, `graphs` in the report; the compile is in the warmup, not the timing).

    python benchmarks/flextok.py                          # GPU, batch 32 train, 64 encode/decode
    python benchmarks/flextok.py --compile
    python benchmarks/flextok.py --device cpu --small     # a quick look on a CPU (1-2 min)

Writes `bench-output/flextok.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import add_device_arguments, device_name, small_without_gpu, timed, write_report
from mediatok.codecs import build_codec

MODELS = {
    "flextok-d18": {"size": "d18"},
    "flextok-d28": {"size": "d28"},
    "flextok-d6": {},
}
# --small: the demo's model (32×32, 64 registers) and the default d6-d6 widths at 64×64.
SMALL_MODELS = {
    "demo-32": {
        "image_size": 32,
        "patch_size": 4,
        "encoder_width": 64,
        "encoder_depth": 2,
        "encoder_heads": 4,
        "decoder_width": 64,
        "decoder_depth": 3,
        "decoder_heads": 4,
        "num_registers": 64,
    },
    "d6-64": {"image_size": 64, "patch_size": 8, "num_registers": 64},
}
CFG_SCALE = 3.0


def bench_model(name: str, options: dict, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    device = args.device
    codec = build_codec("flextok", options).to(device)
    size = codec.config.image_size
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    autocast = lambda: torch.autocast(device, dtype=dtype, enabled=args.precision == "bf16")  # noqa: E731
    model = torch.compile(codec) if args.compile else codec
    optimizer = torch.optim.AdamW(codec.parameters(), lr=1e-4, fused=device == "cuda")
    train_images = torch.rand(args.train_batch, 3, size, size, device=device) * 2 - 1

    def train_step():
        with autocast():
            out = model(train_images)
            loss = (out.velocity.float() - out.target).pow(2).mean()
            loss = loss + sum(out.quantize.losses.values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    codec.train()
    train_s, train_gib = timed(train_step, device, args.warmup, args.repeats)
    optimizer.state.clear()  # free the AdamW moments before inference
    codec.eval()
    images = torch.rand(args.infer_batch, 3, size, size, device=device) * 2 - 1

    def encode():
        with torch.no_grad(), autocast():
            codec.encode(images)

    encode_s, encode_gib = timed(encode, device, args.warmup, args.repeats)
    with torch.no_grad(), autocast():
        tokens = codec.encode(images)

    def decoder(cfg_scale: float):
        def decode():
            with torch.no_grad(), autocast():
                codec.decode(tokens, steps=args.steps, cfg_scale=cfg_scale, compile=args.compile)

        return decode

    decode_s, decode_gib = timed(decoder(1.0), device, args.warmup, args.repeats)
    cfg_s, cfg_gib = timed(decoder(CFG_SCALE), device, args.warmup, args.repeats)
    row = {
        "model": name,
        "image_size": size,
        "registers": codec.config.num_registers,
        "params_m": round(sum(p.numel() for p in codec.parameters()) / 1e6, 2),
        "precision": args.precision,
        "compile": args.compile,
        "train_batch": args.train_batch,
        "train_img_s": round(args.train_batch / train_s, 1),
        "train_peak_gib": round(train_gib, 2),
        "infer_batch": args.infer_batch,
        "encode_img_s": round(args.infer_batch / encode_s, 1),
        "encode_peak_gib": round(encode_gib, 2),
        "steps": args.steps,
        "decode_img_s": round(args.infer_batch / decode_s, 2),
        "decode_step_ms": round(1000 * decode_s / args.steps, 2),
        "decode_peak_gib": round(decode_gib, 2),
        "cfg_scale": CFG_SCALE,
        "decode_cfg_img_s": round(args.infer_batch / cfg_s, 2),
        "decode_cfg_step_ms": round(1000 * cfg_s / args.steps, 2),
        "decode_cfg_peak_gib": round(cfg_gib, 2),
        "graphs_per_step": step_graphs(codec, tokens) if args.compile else None,
    }
    print(json.dumps(row), flush=True)
    return row


def step_graphs(codec, tokens) -> int:
    """Graphs dynamo makes of one guided decode step (1: `torch.compile` captures it whole)."""
    conditions = codec._conditions(codec.quantizer.decode(tokens.codes), tokens.lengths)
    conditions = torch.cat([conditions, conditions])
    size, device = codec.config.image_size, tokens.codes.device
    x = torch.zeros(len(tokens.codes), 3, size, size, device=device)
    t, t_next = torch.tensor(0.5, device=device), torch.tensor(0.25, device=device)
    settings = [torch.tensor(v, device=device) for v in (CFG_SCALE, 0.0, 0.0, 0.0)]
    with torch.no_grad():
        explained = torch._dynamo.explain(codec._denoise_step)(
            x, t, t_next, conditions, *settings, x, "cfg"
        )
    return explained.graph_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "the demo's 32x32 model and the d6 widths at 64x64, for a CPU")
    parser.add_argument("--models", default=None, help="comma-separated (default: all)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench-output/flextok.json")
    args = parser.parse_args()
    small_without_gpu(args)
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    table = SMALL_MODELS if args.small else MODELS
    if args.small:
        args.train_batch, args.infer_batch = min(args.train_batch, 8), min(args.infer_batch, 8)
        args.warmup, args.repeats = 1, min(args.repeats, 3)
    names = args.models.split(",") if args.models else list(table)
    unknown = [name for name in names if name not in table]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(table)}")
    rows = [bench_model(name, table[name], args) for name in names]
    out = write_report(args.out, "flextok", args.device, rows=rows)
    print(f"\n{device_name(args.device)}, {args.precision}{', compiled' if args.compile else ''}")
    print(
        f"{'model':>12} {'params M':>9} {'train img/s':>12} {'encode img/s':>13} "
        f"{'decode img/s':>13} {'cfg img/s':>10} {'step ms':>8} {'cfg step ms':>12}"
    )
    for r in rows:
        print(
            f"{r['model']:>12} {r['params_m']:>9.2f} {r['train_img_s']:>12.1f} "
            f"{r['encode_img_s']:>13.1f} {r['decode_img_s']:>13.2f} {r['decode_cfg_img_s']:>10.2f} "
            f"{r['decode_step_ms']:>8.2f} {r['decode_cfg_step_ms']:>12.2f}"
        )
    print(f"decode: {args.steps} Euler steps, batch {args.infer_batch}; cfg scale {CFG_SCALE}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
