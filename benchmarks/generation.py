"""Generator throughput: AR (and optionally MaskGIT) training tokens/s with an MFU estimate,
class-conditional sampling tokens/s, peak memory.

The model is GPT-B-sized (LlamaGen's class-conditional B: 12 layers, width 768, 12 heads) over
`TokenSpec([16384], layout="N")`, 256 tokens per sample, 1000 classes; random codes and labels
(the data loader is left out: this measures the model).

- Training: one optimizer step (forward loss + backward + AdamW, fused on CUDA) at batch
  64 × 256 under bf16 autocast, eager and, with `--compile`, with `torch.compile` of the model.
  tokens/s = 64 · 256 / step time. MFU = 6 · non-embedding parameters · tokens/s / the GPU's
  dense bf16 peak (`PEAK_BF16_FLOPS`, by device name; other GPUs, CPUs and fp32 get none). The
  output head counts (a matmul), the embedding tables do not (lookups). The estimate ignores
  attention FLOPs (12 · layers · 256 · width per token, about 5% of 6N here, half of that with
  the causal mask), so it slightly understates MFU.
- Sampling: 64 class-conditional sequences of 256 tokens with classifier-free guidance 2.0
  (constant schedule: 128 rows through the model), temperature 1.0, no top-k and no top-p;
  wall time per batch and tokens/s = 64 · 256 / time. By default the sampled model is a bf16
  copy of the weights, as LlamaGen's sample script casts its model; `--sample-precision
  autocast` keeps fp32 weights under bf16 autocast (the KV cache then takes the autocast dtype),
  `fp32` neither. Eager always; compiled (`SampleSettings(compile="reduce-overhead")`: the
  KV-cached decode step as one CUDA graph, `mediatok.generation.engine`) by default on CUDA,
  since the target below is about it, and with `--compile` on a CPU (mode "default" there, no
  CUDA graphs); `--no-compile-sampling` skips it.
  Warm-up calls are not timed (the compiled path's first call compiles and records the graph).
  The model is fixed-length (`variable_length=False`, as `mediatok train` sets for TiTok's
  tokens and as the reference's 16 × 16 grid is): every row has all 256 tokens, so no early end
  shortens the timed loop; `mean_length` in the JSON says so.
- `--masked`: a MaskGIT model of the same width and depth (mlp ratio 4): training tokens/s and
  MFU as above, and sampling 64 × 256 in 8 steps with CFG 2.0 (eager: `MaskedTransformer`
  has no compiled path).

Peak memory (CUDA only) is GiB allocated above what was allocated when the timed calls began.

Targets of the issue, for reference (compared in the table, never asserted), on an H100 at
64 × 256 with CFG 2.0: sampling >= 2 × the compiled LlamaGen GPT-B reference (50,340 tokens/s
compiled, 4,351 eager), i.e. >= 100,680 tokens/s; training >= 512,600 tokens/s at batch
64 × 256 (the compiled reference).

    python benchmarks/generation.py                      # GPU: GPT-B, eager + compiled sampling
    python benchmarks/generation.py --compile --masked   # compiled training too, and MaskGIT
    python benchmarks/generation.py --small              # a quick look on a CPU

Writes `bench-output/generation.json` (or `--out`) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import torch
from torch import nn
from torch._dynamo.utils import counters

from common import add_device_arguments, device_name, small_without_gpu, timed, write_report
from mediatok.generation import (
    ARConfig,
    MaskedConfig,
    SampleSettings,
    build_ar_transformer,
    build_masked_transformer,
)
from mediatok.tokens import TokenSpec

# Dense (no sparsity) bf16 tensor-core peak by `torch.cuda.get_device_name()`.
PEAK_BF16_FLOPS = {
    "NVIDIA H100 80GB HBM3": 989e12,  # H100 SXM
    "NVIDIA H200": 989e12,
}
LLAMAGEN_SAMPLE_COMPILED, LLAMAGEN_SAMPLE_EAGER = 50_340, 4_351  # GPT-B, 64 × 256, CFG 2, H100
TARGETS = {
    "ar_sample_tokens_per_s": 2 * LLAMAGEN_SAMPLE_COMPILED,
    "ar_train_tokens_per_s": 512_600,
    "llamagen_sample_compiled_tokens_per_s": LLAMAGEN_SAMPLE_COMPILED,
    "llamagen_sample_eager_tokens_per_s": LLAMAGEN_SAMPLE_EAGER,
}
GPT_B = {"dim": 768, "depth": 12, "heads": 12, "vocab": 16384, "tokens": 256, "classes": 1000}
SMALL = {"dim": 64, "depth": 2, "heads": 4, "vocab": 512, "tokens": 32, "classes": 1000}


def build_model(kind: str, sizes: dict) -> nn.Module:
    spec, shape = TokenSpec([sizes["vocab"]], layout="N"), (sizes["tokens"],)
    width = {"dim": sizes["dim"], "depth": sizes["depth"], "heads": sizes["heads"]}
    if kind == "ar":
        config = ARConfig(**width, num_classes=sizes["classes"], variable_length=False)
        return build_ar_transformer(config, spec, shape)
    return build_masked_transformer(
        MaskedConfig(**width, num_classes=sizes["classes"]), spec, shape
    )


def non_embedding_params(model: nn.Module) -> int:
    """Parameters that take part in matmuls: all but the embedding tables and learned tokens."""
    lookups = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    skip = ("start_token", "position_embedding")
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if id(p) not in lookups and name not in skip
    )


def bench_train(kind: str, model: nn.Module, compiled: bool, args: argparse.Namespace) -> dict:
    device, sizes = args.device, args.sizes
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    generator = torch.Generator(device).manual_seed(0)
    shape = (args.batch, sizes["tokens"])
    tokens = torch.randint(0, sizes["vocab"], shape, device=device, generator=generator)
    labels = torch.randint(0, sizes["classes"], (args.batch,), device=device, generator=generator)

    def train_step():
        with torch.autocast(device, dtype=dtype, enabled=args.precision == "bf16"):
            loss = step_model(tokens, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    seconds, peak = timed(train_step, device, args.warmup, args.repeats)
    tokens_per_s = args.batch * sizes["tokens"] / seconds
    row = {
        "model": kind,
        "phase": "train",
        "mode": "compiled" if compiled else "eager",
        "precision": args.precision,
        "batch": args.batch,
        "tokens": sizes["tokens"],
        "ms_per_batch": round(1e3 * seconds, 2),
        "tokens_per_s": round(tokens_per_s),
        "peak_gib": round(peak, 2),
    }
    peak_flops = PEAK_BF16_FLOPS.get(device_name(device))
    if peak_flops is not None and args.precision == "bf16":
        row["mfu"] = round(6 * non_embedding_params(model) * tokens_per_s / peak_flops, 4)
    print(json.dumps(row), flush=True)
    return row


def bench_sample(kind: str, model: nn.Module, compiled: bool, args: argparse.Namespace) -> dict:
    device, sizes = args.device, args.sizes
    autocast = torch.autocast(device, dtype=torch.bfloat16)
    context = autocast if args.sample_precision == "autocast" else contextlib.nullcontext()
    generator = torch.Generator(device).manual_seed(0)
    labels = torch.randint(0, sizes["classes"], (args.samples,), device=device, generator=generator)
    options = {"cfg_scale": args.cfg_scale, "cfg_schedule": "constant", "temperature": 1.0}
    options["top_k"] = None
    if kind == "ar":
        options |= {"top_p": None, "compile": args.compile_mode if compiled else False}
    else:
        options["steps"] = args.masked_steps
    settings = SampleSettings(**options)
    lengths = []

    def draw():
        with context:
            out = model.generate(labels=labels, settings=settings, generator=generator)
        if out.lengths is not None:
            lengths.append(out.lengths)

    skips = counters["inductor"]["cudagraph_skips"]
    seconds, peak = timed(draw, device, args.sample_warmup, args.sample_repeats)
    row = {
        "model": kind,
        "phase": "sample",
        "mode": "compiled" if compiled else "eager",
        "precision": args.sample_precision,
        "batch": args.samples,
        "tokens": sizes["tokens"],
        "cfg_scale": args.cfg_scale,
        "ms_per_batch": round(1e3 * seconds, 2),
        "tokens_per_s": round(args.samples * sizes["tokens"] / seconds),
        "peak_gib": round(peak, 2),
    }
    if kind == "ar":
        row["mean_length"] = round(torch.cat(lengths).float().mean().item(), 1)
    else:
        row["steps"] = args.masked_steps
    if compiled and device == "cuda":  # CUDA graphs skipped (mutated inputs, CPU tensors, ...)
        row["cudagraph_skips"] = counters["inductor"]["cudagraph_skips"] - skips
    print(json.dumps(row), flush=True)
    return row


def bench_kind(kind: str, args: argparse.Namespace) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    model = build_model(kind, args.sizes).to(args.device)
    info = {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "non_embedding_params_m": round(non_embedding_params(model) / 1e6, 2),
    }
    rows = [bench_train(kind, model, False, args)]
    if args.compile:
        rows.append(bench_train(kind, model, True, args))
    model.zero_grad(set_to_none=True)
    if args.sample_precision == "bf16":
        model.to(torch.bfloat16)
    rows.append(bench_sample(kind, model, False, args))
    if kind == "ar" and args.compile_sampling:
        rows.append(bench_sample(kind, model, True, args))
    return rows, info


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    compiled = ", compiled training" if args.compile else ""
    print(f"\n{device_name(args.device)}, train {args.precision}{compiled}, ", end="")
    sizes = args.sizes
    print(
        f"sample {args.sample_precision}, CFG {args.cfg_scale}; width {sizes['dim']}, depth "
        f"{sizes['depth']}, {sizes['heads']} heads, vocabulary {sizes['vocab']}"
    )
    print(
        f"{'model':>6} {'phase':>6} {'mode':>8} {'batch':>9} {'ms/batch':>10} {'tokens/s':>10} "
        f"{'MFU':>6} {'GiB':>6} {'target':>8} {'vs target':>9}"
    )
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        gib = "-" if r["peak_gib"] != r["peak_gib"] else f"{r['peak_gib']:.2f}"  # nan off CUDA
        target = (
            None if args.small or r["model"] != "ar" else TARGETS[f"ar_{r['phase']}_tokens_per_s"]
        )
        target_text = "-" if target is None else f"{target:,}"
        ratio = "-" if target is None else f"{r['tokens_per_s'] / target:.2f}x"
        batch = f"{r['batch']}x{r['tokens']}"
        print(
            f"{r['model']:>6} {r['phase']:>6} {r['mode']:>8} {batch:>9} {r['ms_per_batch']:>10.1f} "
            f"{r['tokens_per_s']:>10,} {mfu:>6} {gib:>6} {target_text:>8} {ratio:>9}"
        )
    if not args.small:
        print(
            f"LlamaGen GPT-B sampling reference: {LLAMAGEN_SAMPLE_COMPILED:,} tokens/s compiled, "
            f"{LLAMAGEN_SAMPLE_EAGER:,} eager (H100)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, "a tiny model, for a CPU")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="training")
    parser.add_argument("--sample-precision", choices=["bf16", "autocast", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true", help="compiled training (and sampling)")
    parser.add_argument(
        "--compile-sampling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time compiled sampling (default: on CUDA, or with --compile)",
    )
    parser.add_argument("--masked", action="store_true", help="a MaskGIT model too")
    parser.add_argument("--batch", type=int, default=64, help="training batch")
    parser.add_argument("--samples", type=int, default=64, help="sampling batch")
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--masked-steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-warmup", type=int, default=1)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--out", default="bench-output/generation.json")
    args = parser.parse_args()
    small_without_gpu(args, "GPT-B needs a CUDA device")
    args.sizes = SMALL if args.small else GPT_B
    if args.small:
        args.batch, args.samples = min(args.batch, 4), min(args.samples, 4)
        args.warmup, args.repeats = 1, min(args.repeats, 3)
        args.sample_repeats = min(args.sample_repeats, 2)
    if args.compile_sampling is None:
        args.compile_sampling = args.compile or args.device == "cuda"
    # CUDA graphs on CUDA; "default" (no graphs) elsewhere.
    args.compile_mode = "reduce-overhead" if args.device == "cuda" else True
    rows, models = [], {}
    for kind in ["ar", "masked"] if args.masked else ["ar"]:
        kind_rows, models[kind] = bench_kind(kind, args)
        rows += kind_rows
    out = write_report(
        args.out,
        "generation",
        args.device,
        small=args.small,
        sizes=args.sizes,
        models=models,
        precision=args.precision,
        sample_precision=args.sample_precision,
        compile=args.compile,
        targets=None if args.small else TARGETS,
        rows=rows,
    )
    print_table(rows, args)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
