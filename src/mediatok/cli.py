"""`mediatok train|encode|decode|eval`: the command line. The only module that knows every layer.

    mediatok train configs/image/titok-s-128.yaml data.train_dir=photos/ train.steps=1000
    mediatok encode CKPT IMAGES_DIR -o TOKENS_DIR [--on-error skip|stop]
    mediatok decode CKPT TOKENS_DIR -o OUT_DIR
    mediatok eval CKPT IMAGES_DIR -o REPORT_DIR

Encoding is safe to kill and rerun: finished shards are kept and their files are not encoded
again. Under `torchrun`, each rank encodes its share of the files and writes its own shards;
rank 0 merges the manifests at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

PROGRAM = "mediatok"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"{PROGRAM}: --device {name} asked for, but CUDA is not available")
    return torch.device(name)


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, with a process group for the final barrier."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), world


def command_encode(args: argparse.Namespace) -> int:
    from mediatok.api import checkpoint_sha256, load
    from mediatok.config import config_hash
    from mediatok.data import decode_batch, list_images
    from mediatok.tokens import TokenWriter, merge_manifests

    rank, world = _distributed()
    device = _device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    codec = load(args.checkpoint, device=device)
    root = Path(args.input)
    files = list_images(root)[rank::world]
    writer = TokenWriter(
        args.output,
        codec.token_spec,
        codec=codec.name,
        config_hash=config_hash(codec.config),
        checkpoint_sha256=checkpoint_sha256(args.checkpoint),
        shard_size=args.shard_size,
        rank=rank,
        world_size=world,
    )
    done = writer.done_keys
    todo = [path for path in files if path.relative_to(root).as_posix() not in done]
    failed: list[tuple[str, str]] = []
    size = codec.config.image_size
    progress = tqdm(
        total=len(files), initial=len(files) - len(todo), desc="encode", unit="img",
        disable=rank != 0 or None,
    )  # fmt: skip
    try:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            images, paths, failures = decode_batch(batch, device, size, crop=args.crop)
            for path, message in failures:
                key = Path(path).relative_to(root).as_posix()
                failed.append((key, message))
                writer.skip(key, message)
                print(f"{PROGRAM} encode: cannot read {path}: {message}", file=sys.stderr)
                if args.on_error == "stop":
                    raise SystemExit(
                        f"{PROGRAM} encode: stopped at {path} (--on-error stop); finished "
                        f"shards are kept, rerun to continue"
                    )
            if len(paths):
                keys = [Path(p).relative_to(root).as_posix() for p in paths]
                codes = codec.encode(images).codes.cpu()
                writer.add_batch(codes, keys=keys)
            progress.update(len(batch))
    finally:
        progress.close()
        writer.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            merge_manifests(args.output)
    if rank == 0:
        print(f"encoded {len(files) - len(failed)} of {len(files)} images into {args.output}")
        for key, message in failed:
            print(f"  skipped {key}: {message}")
    return 0


def command_decode(args: argparse.Namespace) -> int:
    from mediatok.api import load
    from mediatok.data import write_image
    from mediatok.tokens import TokenDataset

    device = _device(args.device)
    codec = load(args.checkpoint, device=device)
    dataset = TokenDataset(args.tokens, codec.token_spec)
    out = Path(args.output)
    written = 0
    indices = [i for i in range(len(dataset)) if not _target(out, dataset.keys[i]).exists()]
    for start in tqdm(range(0, len(indices), args.batch_size), desc="decode", disable=None):
        items = [dataset[i] for i in indices[start : start + args.batch_size]]
        codes = torch.stack([item["codes"] for item in items]).to(device)
        images = codec.decode(codes).clamp(-1, 1).cpu()
        for item, image in zip(items, images, strict=True):
            write_image(_target(out, item["key"]), image)
            written += 1
    print(f"decoded {written} images into {out} ({len(dataset) - written} already there)")
    return 0


def _target(out: Path, key: str) -> Path:
    """Where the image decoded from source `key` goes: same relative path, PNG."""
    return (out / key).with_suffix(".png")


def command_eval(args: argparse.Namespace) -> int:
    from mediatok.api import evaluate_codec

    report = evaluate_codec(
        args.checkpoint,
        args.input,
        args.output,
        device=_device(args.device),
        batch_size=args.batch_size,
        limit=args.limit,
        fid=not args.no_fid,
    )
    print(json.dumps(report, indent=1))
    return 0


def command_train(args: argparse.Namespace) -> int:
    from mediatok.training.run import train_from_config

    train_from_config(args.config, args.overrides, resume=args.resume)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a tokenizer from a YAML config")
    train.add_argument("config", help="YAML file under configs/ (or your own)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.set_defaults(run=command_train)

    encode = commands.add_parser("encode", help="encode a folder of media into token shards")
    encode.add_argument("checkpoint")
    encode.add_argument("input", help="folder of images (searched recursively)")
    encode.add_argument("-o", "--output", required=True, help="token directory")
    encode.add_argument("--batch-size", type=int, default=32)
    encode.add_argument("--shard-size", type=int, default=4096, help="samples per shard")
    encode.add_argument("--crop", choices=["center", "random"], default="center")
    encode.add_argument("--on-error", choices=["skip", "stop"], default="skip")
    encode.add_argument("--device", default="auto")
    encode.set_defaults(run=command_encode)

    decode = commands.add_parser("decode", help="decode token shards back to media files")
    decode.add_argument("checkpoint")
    decode.add_argument("tokens", help="token directory written by `mediatok encode`")
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--batch-size", type=int, default=32)
    decode.add_argument("--device", default="auto")
    decode.set_defaults(run=command_decode)

    evaluate = commands.add_parser("eval", help="score a codec's reconstructions of a folder")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("input", help="folder of images")
    evaluate.add_argument("-o", "--output", required=True, help="report directory")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--limit", type=int, default=None, help="at most this many images")
    evaluate.add_argument("--no-fid", action="store_true", help="skip rFID")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(run=command_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
