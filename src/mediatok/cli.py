"""`mediatok train|encode|decode|eval|sample`: the command line, a thin shell over
`mediatok.training` and `mediatok.pipelines`.

    mediatok train configs/image/titok-s-128.yaml data.train_dir=photos/ train.steps=1000
    mediatok train configs/audio/wavtokenizer-75.yaml data.train_dir=speech/
    mediatok train RUN_DIR --resume [train.steps=N] [--allow-changes]
    mediatok encode CKPT MEDIA_DIR -o TOKENS_DIR [--on-error skip|stop] [--labels folders|F.csv]
    mediatok decode CKPT TOKENS_DIR -o OUT_DIR [--format wav|flac] [--force]
    mediatok eval CKPT MEDIA_DIR -o REPORT_DIR [--on-error skip|stop]  # + report.html
    mediatok sample GEN_CKPT -n 64 [--class 3|NAME] [--cfg 2.0] [--seed 0] -o OUT_DIR
    mediatok eval SAMPLES_DIR --reference REFERENCE_DIR -o REPORT_DIR    # gFID
    mediatok --quiet CMD ...   # (or CMD ... --quiet): no progress bars or progress lines

The checkpoint says whether the codec codes images, audio or video; the media folder is read to
match (audio at any sample rate and channel count is converted to the codec's, and decoding
gives each file back at its source's duration; a video at its source's frame count and rate).

Encoding is safe to kill and rerun (finished shards are kept; Ctrl-C and SIGTERM also keep the
samples encoded so far), runs on every rank under `torchrun`, and a rerun may use another number
of ranks. Decoding into a folder again decodes only what is new or changed (other codes, or
another checkpoint).

This module parses arguments, calls the pipeline and prints: a mistake in what the user gave
(the library's `ValueError`s say what was expected and what came; an optional package that is
not installed) is one line, `mediatok CMD: error: ...`, and exit status 2; library warnings are
one line each, `mediatok CMD: warning: ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mediatok.progress import is_quiet, quiet  # tqdm only: `--help` still imports no torch

PROGRAM = "mediatok"
# The `formats` of the modality table's entries, written out so that `--help` imports no torch
# (a test keeps them equal).
DECODED_FORMATS = ("png", "wav", "flac", "mp4", "webm", "mkv")


def command_train(args: argparse.Namespace) -> int:
    from mediatok.training.run import RunFinished, train_from_config

    try:
        with _progress_lines("train"):
            trainer = train_from_config(
                args.config, args.overrides, resume=args.resume, allow_changes=args.allow_changes
            )
    except RunFinished as finished:  # an outcome, not a mistake: it says how to go on
        print(f"{PROGRAM} train: {finished}", file=sys.stderr)
        return 0
    if not trainer.is_main:
        return 0
    if trainer.stopped_early:
        print(
            f"{PROGRAM} train: stopped by train.time_limit_minutes at step {trainer.step} of "
            f"{trainer.config.steps}; run the same command with --resume to continue",
            file=sys.stderr,
        )
    loss = trainer.last_logged.get("train/loss")
    print(
        f"trained to step {trainer.step} of {trainer.config.steps}"
        + ("" if loss is None else f", train/loss {loss:.4g}")
        + f"; checkpoint: {trainer.checkpoint_dir}"
    )
    return 0


def command_encode(args: argparse.Namespace) -> int:
    from mediatok.pipelines import EncodeOptions, encode_folder
    from mediatok.runtime import torchrun_rank

    options = EncodeOptions(
        batch_size=args.batch_size,
        crop=args.crop,
        chunk_seconds=args.chunk_seconds,
        chunk_frames=args.chunk_frames,
        fps=args.fps,
        num_tokens=args.tokens,
    )
    result = encode_folder(
        args.checkpoint,
        args.input,
        args.output,
        options=options,
        shard_size=args.shard_size,
        on_error=args.on_error,
        device=args.device,
        labels=args.labels,
    )
    if torchrun_rank()[0] == 0:  # the merged result of every rank
        notes = []
        if result.reencoded:
            notes.append(f"{result.reencoded} re-encoded: changed since the last run")
        if result.class_names is not None:
            notes.append(f"{len(result.class_names)} classes")
        note = f" ({'; '.join(notes)})" if notes else ""
        print(f"encoded {result.encoded} of {result.total} {result.noun} into {args.output}{note}")
        for entry in result.skipped:
            print(f"  skipped {entry['key']}: {entry['error']}")
        for entry in result.stale:
            print(f"  kept the earlier tokens of {entry['key']}, changed, now: {entry['error']}")
    return 0


def command_decode(args: argparse.Namespace) -> int:
    from mediatok.pipelines import DecodeOptions, decode_folder

    options = DecodeOptions(
        args.batch_size, args.format, args.chunk_tokens, codec_settings=_codec_settings(args)
    )
    result = decode_folder(
        args.checkpoint,
        args.tokens,
        args.output,
        options=options,
        device=args.device,
        force=args.force,
    )
    print(result.summary())
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
            on_error=args.on_error,
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
            chunk_frames=args.chunk_frames,
            i3d_weights=args.i3d_weights,
            codec_settings=_codec_settings(args),
            on_error=args.on_error,
        )
    print(json.dumps(report, indent=1))
    # stderr: stdout stays the JSON alone, for a pipe into jq
    page = os.path.join(args.output, "report.html")
    print(f"{PROGRAM} eval: wrote {page}, the report to look at and listen to", file=sys.stderr)
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
        tokens=args.tokens,
        **settings,
    )
    decode = {"steps": args.decode_steps, "cfg": args.decode_cfg, "seed": args.decode_seed}
    options = DecodeOptions(
        args.batch_size, args.format, codec_settings=_codec_settings(argparse.Namespace(**decode))
    )
    write_samples(samples, args.output, options=options)
    tokens = os.path.join(args.output, "tokens")
    print(f"wrote {args.num_samples} samples and their tokens ({tokens}) into {args.output}")
    return 0


def _codec_settings(args: argparse.Namespace) -> dict[str, object]:
    """The decode settings given on the command line (`--steps`, `--cfg`, `--seed`,
    `--guidance`), for codecs whose decoding is sampling (FlexTok); the pipelines refuse them for
    other codecs."""
    names = {"steps": "steps", "cfg": "cfg_scale", "seed": "seed", "guidance": "guidance"}
    given = {name: getattr(args, flag, None) for flag, name in names.items()}
    return {name: value for name, value in given.items() if value is not None}


def _decode_flags(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """`--steps`, `--cfg`, `--seed`, `--guidance`: how a codec whose decoding is sampling
    (FlexTok's flow decoder) decodes; `prefix` names them apart where a command has its own."""
    parser.add_argument(
        f"--{prefix}steps", type=_positive_int, default=None, help="FlexTok: Euler steps (25)"
    )
    parser.add_argument(
        f"--{prefix}cfg", type=float, default=None, help="FlexTok: guidance scale (1: none)"
    )
    parser.add_argument(
        f"--{prefix}seed", type=_natural_int, default=None, help="FlexTok: the noise's seed (0)"
    )
    if not prefix:
        parser.add_argument(
            "--guidance", choices=["cfg", "apg"], default=None, help="FlexTok: cfg or apg"
        )


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
    train.add_argument(
        "config", help="YAML file under configs/ (or your own); with --resume, the run's folder"
    )
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in train.out_dir with the settings its checkpoint saved; "
        "overrides may change train.steps, the time limit, cadences, workers and device",
    )
    train.add_argument(
        "--allow-changes",
        action="store_true",
        help="with --resume: let overrides change other settings (data, model, losses) too",
    )
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
    encode.add_argument(
        "--chunk-frames",
        type=_positive_int,
        default=64,
        help="video: longer videos are encoded alone, in chunks of this many frames (same codes)",
    )
    encode.add_argument(
        "--fps",
        type=_positive_float,
        default=None,
        help="video: resample every video to this frame rate (default: keep each one's)",
    )
    encode.add_argument("--on-error", choices=["skip", "stop"], default="skip")
    encode.add_argument(
        "--labels",
        default=None,
        metavar="folders|FILE.csv",
        help="class labels: 'folders' (a file's class is its first-level subfolder) or a CSV "
        "with a header row naming the columns path and class",
    )
    encode.add_argument(
        "--tokens",
        type=_positive_int,
        default=None,
        help="keep each sample's first K tokens (codecs whose tokens decode from any prefix)",
    )
    encode.add_argument("--device", **device)
    encode.set_defaults(run=command_encode)

    decode = commands.add_parser("decode", help="decode token shards back to media files")
    decode.add_argument("checkpoint")
    decode.add_argument("tokens", help="token directory written by `mediatok encode`")
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--batch-size", type=_positive_int, default=32)
    decode.add_argument(
        "--format",
        choices=DECODED_FORMATS,
        default=None,
        help="default: png, wav, mp4 (images, audio, video)",
    )
    decode.add_argument(
        "--chunk-tokens",
        type=_natural_int,
        default=2250,
        help="audio longer than this many tokens is decoded alone, in overlapping chunks",
    )
    decode.add_argument(
        "--force",
        action="store_true",
        help="decode tokens another checkpoint of the codec encoded (a retrained decoder)",
    )
    _decode_flags(decode)
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
        "--i3d-weights",
        default=None,
        metavar="PATH",
        help="video: FVD with the I3D network at PATH (a state dict or TorchScript file; none "
        "ships with mediatok)",
    )
    evaluate.add_argument(
        "--chunk-frames", type=_positive_int, default=64, help="video: frames per chunk"
    )
    evaluate.add_argument(
        "--dnsmos",
        action="store_true",
        help="audio: also DNSMOS of reconstructions and originals (pip install 'mediatok[dnsmos]')",
    )
    evaluate.add_argument(
        "--on-error",
        choices=["skip", "stop"],
        default="skip",
        help="a file that cannot be read, or whose metric is undefined (the PESQ of silence): "
        "left out of the means and listed in the report, or stop",
    )
    _decode_flags(evaluate)
    evaluate.add_argument("--device", **device)
    evaluate.set_defaults(run=command_eval)

    sampler = commands.add_parser("sample", help="sample media from a generator checkpoint")
    sampler.add_argument("checkpoint", help="generator checkpoint")
    sampler.add_argument("-n", "--num-samples", type=_positive_int, default=16)
    sampler.add_argument("-o", "--output", required=True)
    sampler.add_argument(
        "--class",
        dest="label",
        default=None,
        help="class of all samples: its name (as `encode --labels` recorded it) or its id",
    )
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
    sampler.add_argument("--seed", type=_natural_int, default=0, help="an integer >= 0")
    sampler.add_argument("--batch-size", type=_positive_int, default=64)
    sampler.add_argument(
        "--format",
        choices=DECODED_FORMATS,
        default=None,
        help="default: png, wav, mp4 (images, audio, video)",
    )
    sampler.add_argument(
        "--tokens",
        type=_positive_int,
        default=None,
        help="AR: stop each sample at K tokens (variable-length models; prefix-decodable tokens)",
    )
    _decode_flags(sampler, prefix="decode-")
    sampler.add_argument("--device", **device)
    sampler.set_defaults(run=command_sample)
    # `mediatok --quiet CMD` or `mediatok CMD --quiet`; SUPPRESS: a command's absent flag
    # leaves the global one as it is
    silent = "no progress bars (nor the training's progress lines); warnings and results stay"
    parser.add_argument("-q", "--quiet", action="store_true", help=silent)
    for command in commands.choices.values():
        command.add_argument(
            "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=silent
        )
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


@contextmanager
def _progress_lines(command: str) -> Iterator[None]:
    """Without a terminal on stderr (a log file, a scheduler's output), show the training's
    progress (the `INFO` records under `mediatok.training`: a line per `train.log_every` steps
    and per evaluation) as `mediatok CMD: step N: ...` lines on stderr. In a terminal the
    progress bar shows it instead; under `--quiet`, neither."""
    if sys.stderr.isatty() or is_quiet():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(lambda record: record.levelno == logging.INFO)  # warnings: one line above
    handler.setFormatter(logging.Formatter(f"{PROGRAM} {command}: %(message)s"))
    logger = logging.getLogger("mediatok.training")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run a command. A mistake in what the user gave (a config key, a value out of range, a
    missing or damaged file) prints its message on one line and exits with 2; a batch job that
    stopped before its end (a bad file with `--on-error stop`, SIGTERM) says so and how to
    continue, and exits with 1 (143 for SIGTERM). `MEDIATOK_TRACEBACK=1` raises the mistakes
    instead."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train RUN --resume key=value`: argparse stops filling a positional list at the first
    # option, so overrides after one come back as unknown arguments; they are overrides still.
    if args.command == "train" and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # Before torch loads OpenMP: its threads then sleep rather than spin when they wait, so a
    # CPU another process holds is not fought over (spinning, a training step ran 2x slower,
    # the demo's quantizers 1.5-2.5x, up to 10x under heavier load, beside other CPU-bound work
    # on two cores; waiting asleep, an idle machine loses 10-30 % on tiny kernels).
    # OMP_WAIT_POLICY=ACTIVE in the environment keeps the spinning.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from mediatok.pipelines import Stopped  # after parsing: `--help` imports no torch

    try:
        with _one_line_warnings(args.command), quiet(args.quiet):
            return args.run(args)
    except Stopped as stop:  # an outcome, not a mistake: its message says how to continue
        print(f"{PROGRAM} {args.command}: {stop}", file=sys.stderr)
        return stop.exit_status
    # ImportError: an optional package a command needs (pesq, pystoi, speechmos), whose message
    # names the install command and the flag that does without it
    except (ValueError, FileNotFoundError, ImportError) as error:
        if os.environ.get("MEDIATOK_TRACEBACK"):
            raise
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        print("(MEDIATOK_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
