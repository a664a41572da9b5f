"""`mediatok train|encode|decode|eval|sample`: the command line, a thin shell over
`mediatok.training` and `mediatok.pipelines`.

    mediatok train configs/image/titok-s-128.yaml data.train_dir=photos/ train.steps=1000
    mediatok train configs/audio/wavtokenizer-75.yaml data.train_dir=speech/
    mediatok encode CKPT MEDIA_DIR -o TOKENS_DIR [--on-error skip|stop]
    mediatok decode CKPT TOKENS_DIR -o OUT_DIR [--format wav|flac]
    mediatok eval CKPT MEDIA_DIR -o REPORT_DIR
    mediatok sample GEN_CKPT -n 64 [--class 3] [--cfg 2.0] [--seed 0] -o OUT_DIR
    mediatok eval SAMPLES_DIR --reference REFERENCE_DIR -o REPORT_DIR    # gFID

The checkpoint says whether the codec codes images or audio; the media folder is read to match
(audio at any sample rate and channel count is converted to the codec's, and decoding gives
each file back at its source's duration).

Encoding is safe to kill and rerun (finished shards are kept; Ctrl-C and SIGTERM also keep the
samples encoded so far), runs on every rank under `torchrun`, and a rerun may use another number
of ranks. Decoding into a folder again decodes only what is new or changed.

This module parses arguments, calls the pipeline and prints: a mistake in what the user gave
(the library's `ValueError`s say what was expected and what came) is one line, `mediatok CMD:
error: ...`, and exit status 2; library warnings are one line each, `mediatok CMD: warning:
...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

PROGRAM = "mediatok"


def command_train(args: argparse.Namespace) -> int:
    from mediatok.training.run import train_from_config

    trainer = train_from_config(args.config, args.overrides, resume=args.resume)
    if trainer.stopped_early and trainer.is_main:
        print(
            f"{PROGRAM} train: stopped by train.time_limit_minutes at step {trainer.step} of "
            f"{trainer.config.steps}; run the same command with --resume to continue",
            file=sys.stderr,
        )
    return 0


def command_encode(args: argparse.Namespace) -> int:
    from mediatok.pipelines import EncodeOptions, encode_folder
    from mediatok.runtime import torchrun_rank

    options = EncodeOptions(args.batch_size, args.crop, args.chunk_seconds)
    result = encode_folder(
        args.checkpoint,
        args.input,
        args.output,
        options=options,
        shard_size=args.shard_size,
        on_error=args.on_error,
        device=args.device,
    )
    if torchrun_rank()[0] == 0:  # the merged result of every rank
        print(f"encoded {result.encoded} of {result.total} {result.noun} into {args.output}")
        for entry in result.skipped:
            print(f"  skipped {entry['key']}: {entry['error']}")
    return 0


def command_decode(args: argparse.Namespace) -> int:
    from mediatok.pipelines import DecodeOptions, decode_folder

    options = DecodeOptions(args.batch_size, args.format, args.chunk_tokens)
    result = decode_folder(
        args.checkpoint, args.tokens, args.output, options=options, device=args.device
    )
    print(
        f"decoded {result.written} {result.noun} into {result.directory} "
        f"({result.total - result.written} already there)"
    )
    return 0


def command_eval(args: argparse.Namespace) -> int:
    import json

    from mediatok.pipelines import evaluate_codec, evaluate_samples

    if args.reference is not None:  # gFID of a folder of samples
        if args.input is not None:
            raise SystemExit(
                f"{PROGRAM} eval: with --reference, give one folder of samples, not "
                f"{args.checkpoint} and {args.input}"
            )
        if args.limit is not None:
            raise SystemExit(
                f"{PROGRAM} eval: --limit applies to reconstructions (CKPT MEDIA_DIR); gFID with "
                f"--reference scores every image of both folders, got --limit {args.limit}"
            )
        report = evaluate_samples(
            args.checkpoint,
            args.reference,
            args.output,
            batch_size=args.batch_size,
            device=args.device,
        )
    elif args.input is None:
        raise SystemExit(
            f"{PROGRAM} eval: expected CKPT MEDIA_DIR (reconstruction) or SAMPLES_DIR "
            f"--reference REFERENCE_DIR (gFID)"
        )
    else:
        report = evaluate_codec(
            args.checkpoint,
            args.input,
            args.output,
            device=args.device,
            batch_size=args.batch_size,
            limit=args.limit,
            fid=not args.no_fid,
            speech_metrics=not args.no_speech_metrics,
            dnsmos=args.dnsmos,
        )
    print(json.dumps(report, indent=1))
    return 0


def command_sample(args: argparse.Namespace) -> int:
    from mediatok.pipelines import DecodeOptions, sample, write_samples

    settings = {
        name: value
        for name, value in (
            ("cfg_scale", args.cfg),
            ("temperature", args.temperature),
            ("top_k", args.top_k),
            ("top_p", args.top_p),
            ("steps", args.steps),
            ("precision", args.precision),
            ("compile", args.compile),
        )
        if value is not None
    }
    samples = sample(
        args.checkpoint,
        args.num_samples,
        label=args.label,
        codec=args.codec,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        require_codec=True,
        **settings,
    )
    options = DecodeOptions(args.batch_size, args.format)
    write_samples(samples, args.output, options=options)
    tokens = os.path.join(args.output, "tokens")
    print(f"wrote {args.num_samples} samples and their tokens ({tokens}) into {args.output}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _natural_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    device = {"default": "auto", "help": "auto, cpu, cuda or cuda:N"}

    train = commands.add_parser("train", help="train a tokenizer or a generator from a YAML config")
    train.add_argument("config", help="YAML file under configs/ (or your own)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.set_defaults(run=command_train)

    encode = commands.add_parser("encode", help="encode a folder of media into token shards")
    encode.add_argument("checkpoint")
    encode.add_argument("input", help="folder of images or audio files (searched recursively)")
    encode.add_argument("-o", "--output", required=True, help="token directory")
    encode.add_argument("--batch-size", type=_positive_int, default=32)
    encode.add_argument("--shard-size", type=_positive_int, default=4096, help="samples per shard")
    encode.add_argument("--crop", choices=["center", "random"], default="center", help="images")
    encode.add_argument(
        "--chunk-seconds",
        type=_positive_float,
        default=30.0,
        help="audio longer than this is encoded alone, in chunks (same codes as one pass)",
    )
    encode.add_argument("--on-error", choices=["skip", "stop"], default="skip")
    encode.add_argument("--device", **device)
    encode.set_defaults(run=command_encode)

    decode = commands.add_parser("decode", help="decode token shards back to media files")
    decode.add_argument("checkpoint")
    decode.add_argument("tokens", help="token directory written by `mediatok encode`")
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--batch-size", type=_positive_int, default=32)
    decode.add_argument(
        "--format", choices=["png", "wav", "flac"], default=None, help="default: png, wav"
    )
    decode.add_argument(
        "--chunk-tokens",
        type=_natural_int,
        default=2250,
        help="audio longer than this many tokens is decoded alone, in overlapping chunks",
    )
    decode.add_argument("--device", **device)
    decode.set_defaults(run=command_decode)

    evaluate = commands.add_parser(
        "eval",
        help="score a codec's reconstructions of a folder, or samples against references (gFID)",
    )
    evaluate.add_argument("checkpoint", help="codec checkpoint (or, with --reference, samples)")
    evaluate.add_argument("input", nargs="?", help="folder of images or audio files")
    evaluate.add_argument(
        "--reference", help="gFID: folder of reference images at the samples' resolution"
    )
    evaluate.add_argument("-o", "--output", required=True, help="report directory")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument("--limit", type=int, default=None, help="at most this many files")
    evaluate.add_argument("--no-fid", action="store_true", help="images: skip rFID")
    evaluate.add_argument(
        "--no-speech-metrics", action="store_true", help="audio: skip PESQ and STOI"
    )
    evaluate.add_argument(
        "--dnsmos",
        action="store_true",
        help="audio: also DNSMOS of reconstructions and originals (pip install 'mediatok[dnsmos]')",
    )
    evaluate.add_argument("--device", **device)
    evaluate.set_defaults(run=command_eval)

    sampler = commands.add_parser("sample", help="sample media from a generator checkpoint")
    sampler.add_argument("checkpoint", help="generator checkpoint")
    sampler.add_argument("-n", "--num-samples", type=_positive_int, default=16)
    sampler.add_argument("-o", "--output", required=True)
    sampler.add_argument("--class", dest="label", type=int, default=None, help="class of all")
    sampler.add_argument("--cfg", type=float, default=None, help="guidance scale")
    sampler.add_argument("--temperature", type=float, default=None)
    sampler.add_argument("--top-k", type=int, default=None)
    sampler.add_argument("--top-p", type=float, default=None)
    sampler.add_argument("--steps", type=int, default=None, help="masked generators")
    sampler.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default=None,
        help="default: the run's (auto: bf16 on CUDA, fp32 elsewhere)",
    )
    sampler.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="AR: compile each sampling step (CUDA graphs on CUDA; pays a compile first); "
        "default: the run's",
    )
    sampler.add_argument("--codec", default=None, help="codec checkpoint (default: the run's)")
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--batch-size", type=_positive_int, default=64)
    sampler.add_argument(
        "--format", choices=["png", "wav", "flac"], default=None, help="default: png, wav"
    )
    sampler.add_argument("--device", **device)
    sampler.set_defaults(run=command_sample)
    return parser


@contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Show the library's warnings (logged under `mediatok`) as `mediatok CMD: warning: ...`
    lines on stderr while a command runs."""

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return f"{PROGRAM} {command}: {record.levelname.lower()}: {record.getMessage()}"

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(OneLine())
    logger = logging.getLogger("mediatok")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Run a command. A mistake in what the user gave (a config key, a value out of range, a
    missing or damaged file) prints its message on one line and exits with 2; a batch job that
    stopped before its end (a bad file with `--on-error stop`, SIGTERM) says so and how to
    continue, and exits with 1 (143 for SIGTERM). `MEDIATOK_TRACEBACK=1` raises the mistakes
    instead."""
    from mediatok.pipelines import Stopped

    args = build_parser().parse_args(argv)
    try:
        with _one_line_warnings(args.command):
            return args.run(args)
    except Stopped as stop:  # an outcome, not a mistake: its message says how to continue
        print(f"{PROGRAM} {args.command}: {stop}", file=sys.stderr)
        return stop.exit_status
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("MEDIATOK_TRACEBACK"):
            raise
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        print("(MEDIATOK_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
