"""`mediatok train|encode|decode|eval|sample`: the command line. The only module that knows every layer.

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

Encoding is safe to kill and rerun: finished shards are kept and their files are not encoded
again (Ctrl-C or SIGTERM also keep the samples of the current shard encoded so far). Under
`torchrun`, each rank encodes its share of the files (chosen by a hash of each file's path, so
files added before a rerun move no others) and writes its own shards; rank 0 merges the
manifests at the end. A rerun may use another number of ranks. A token directory holds the
files of one input folder.

Decoding into a folder again decodes only what is new or changed: `.mediatok-decode.json` there
records which key each file was decoded from, so a file keeps its name across reruns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

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
    """(rank, world size) under torchrun, from its environment; no process group yet.

    The codec must encode without one: the quantizers sum their usage statistics over the
    process group in every forward, a collective that deadlocks as soon as two ranks encode a
    different number of batches (or audio chunks). `_wait_for_every_rank` joins the ranks at
    the end.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if "RANK" not in os.environ:
        raise SystemExit(
            f"{PROGRAM}: WORLD_SIZE is {world} but RANK is not set; launch with torchrun"
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return int(os.environ["RANK"]), world


def _wait_for_every_rank() -> None:
    """A barrier over the torchrun ranks, on a process group made for it (gloo: nothing to
    move but the barrier), that waits as long as the slowest rank takes to finish encoding."""
    from datetime import timedelta

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(days=7))
    dist.barrier()


def command_encode(args: argparse.Namespace) -> int:
    from mediatok.api import checkpoint_sha256, load
    from mediatok.config import config_hash
    from mediatok.data import list_audio, list_images
    from mediatok.tokens import TokenWriter, merge_manifests
    from mediatok.tokens.writer import written_keys

    rank, world = _distributed()
    device = _device(args.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    codec = load(args.checkpoint, device=device)
    if codec.modality not in ("image", "audio"):
        raise SystemExit(f"{PROGRAM} encode: no {codec.modality} encoding path yet")
    root = Path(args.input)
    lister = list_images if codec.modality == "image" else list_audio
    files = lister(root)
    writer = TokenWriter(
        args.output,
        codec.token_spec,
        codec=codec.name,
        config_hash=config_hash(codec.config),
        checkpoint_sha256=checkpoint_sha256(args.checkpoint),
        shard_size=args.shard_size,
        rank=rank,
        world_size=world,
        source_dir=str(root.resolve()),  # keys are paths in it: refuse another folder's
    )
    keys = [path.relative_to(root).as_posix() for path in files]
    # A file's rank follows from its key alone, so files added before a rerun leave the others
    # where they were; and no rank redoes what any rank of any earlier run wrote (a run with
    # another world size, a single process after torchrun: `writer.done_keys` is this rank's).
    done = written_keys(args.output, codec.token_spec)
    mine = [_rank_of(key, world) == rank for key in keys]
    todo = [
        path
        for path, key, is_mine in zip(files, keys, mine, strict=True)
        if is_mine and key not in done
    ]
    finished = sum(key in done for key, is_mine in zip(keys, mine, strict=True) if is_mine)

    def fail(path: Path, message: str) -> None:
        key = path.relative_to(root).as_posix()
        writer.skip(key, message)
        print(f"{PROGRAM} encode: cannot read {path}: {message}", file=sys.stderr)
        if args.on_error == "stop":
            raise SystemExit(
                f"{PROGRAM} encode: stopped at {path} (--on-error stop); finished "
                f"shards are kept, rerun to continue"
            )

    unit = "img" if codec.modality == "image" else "file"
    progress = tqdm(
        total=finished + len(todo), initial=finished, desc="encode", unit=unit,
        disable=rank != 0 or None,
    )  # fmt: skip
    encode_batches = _encode_images if codec.modality == "image" else _encode_audio
    try:
        with _sigterm_stops_between_batches() as check_stop:
            try:
                encode_batches(codec, todo, root, writer, fail, progress, device, args, check_stop)
            except BaseException:
                # --on-error stop, Ctrl-C, SIGTERM, an error: keep what was encoded, but claim
                # no finished directory (no manifest.json for a reader to take for the whole
                # folder)
                writer.abort()
                raise
            else:
                writer.close()
            finally:
                progress.close()
    except _Terminated:
        print(
            f"{PROGRAM} encode: stopped by SIGTERM; the {len(writer.done_keys)} samples this "
            f"rank finished are kept in {args.output}: rerun the same command to continue",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    if world > 1:
        _wait_for_every_rank()
        if rank == 0:
            merge_manifests(args.output)
    if rank == 0:  # every rank's work, as merged
        manifest = json.loads((Path(args.output) / "manifest.json").read_text(encoding="utf-8"))
        skipped = manifest["skipped"]
        current = set(keys)
        encoded = len(files) - sum(entry["key"] in current for entry in skipped)
        noun = "images" if codec.modality == "image" else "files"
        print(f"encoded {encoded} of {len(files)} {noun} into {args.output}")
        for entry in skipped:
            print(f"  skipped {entry['key']}: {entry['error']}")
    return 0


class _Terminated(BaseException):
    """SIGTERM arrived while encoding (raised between two batches, like a KeyboardInterrupt
    that waits for the batch in flight)."""


@contextmanager
def _sigterm_stops_between_batches() -> Iterator[Callable[[], None]]:
    """While encoding, SIGTERM (kill, timeout, SLURM preemption, torchrun's teardown) stops the
    job as Ctrl-C does, so that the writer keeps the samples encoded so far, not only the
    finished shards. Yields a check, called after each batch, that raises `_Terminated` once a
    SIGTERM came. The handler only sets a flag, so no exception lands in the middle of a shard
    write; the previous handler is restored on exit. Outside the main thread (where no handler
    can be installed), or where SIGTERM is ignored, the check never raises."""
    received: list[int] = []

    def check() -> None:
        if received:
            raise _Terminated

    main = threading.current_thread() is threading.main_thread()
    if not main or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield check
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield check
    finally:
        # None: a handler installed from C, which Python cannot reinstall; the default then
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _rank_of(key: str, world: int) -> int:
    """The rank that encodes source `key`: a hash of the key, the same in every run."""
    return zlib.crc32(key.encode("utf-8", "surrogateescape")) % world


def _encode_images(codec, todo, root, writer, fail, progress, device, args, check_stop) -> None:
    """Encode image files in batches (JPEGs decoded on the GPU when there is one)."""
    from mediatok.data import decode_batch

    for start in range(0, len(todo), args.batch_size):
        batch = todo[start : start + args.batch_size]
        images, paths, failures = decode_batch(
            batch, device, codec.config.image_size, crop=args.crop
        )
        for path, message in failures:
            fail(Path(path), message)
        if len(paths):
            keys = [Path(p).relative_to(root).as_posix() for p in paths]
            writer.add_batch(codec.encode(images).codes.cpu(), keys=keys)
        progress.update(len(batch))
        check_stop()


def _encode_audio(codec, todo, root, writer, fail, progress, device, args, check_stop) -> None:
    """Encode audio files: short ones in padded batches of similar length, long ones alone in
    chunks (`--chunk-seconds`). Files are read (mono, resampled to the codec's rate) on a few
    threads while the model runs; each one's sample count is stored so decoding restores its
    duration."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from mediatok.data import AudioReadError, read_audio

    rate = codec.config.sample_rate
    todo = sorted(todo, key=_audio_frames)  # similar lengths share a batch: less padding

    def read(path: Path):
        try:
            return read_audio(path, rate, mono=True)[0]
        except AudioReadError as error:
            return error

    chunk_samples = round(args.chunk_seconds * rate)
    batches = [todo[i : i + args.batch_size] for i in range(0, len(todo), args.batch_size)]
    pool = ThreadPoolExecutor(max_workers=_READ_THREADS)
    # Keep _READ_THREADS batches read ahead of the model, no more: `pool.map` would read (and
    # hold in memory) the whole folder at once.
    reads: deque = deque()
    try:
        for number, batch in enumerate(batches):
            while len(reads) <= _READ_THREADS and number + len(reads) < len(batches):
                ahead = batches[number + len(reads)]
                reads.append(pool.submit(lambda paths: [read(path) for path in paths], ahead))
            clips = reads.popleft().result()
            short: list[tuple[Path, torch.Tensor]] = []
            for path, clip in zip(batch, clips, strict=True):
                if isinstance(clip, AudioReadError):
                    fail(path, clip.problem)
                elif clip.shape[-1] > chunk_samples:
                    tokens = codec.encode_long(clip[None].to(device), args.chunk_seconds)
                    key = path.relative_to(root).as_posix()
                    writer.add_batch(tokens.codes.cpu(), keys=[key], media_lengths=[clip.shape[-1]])
                else:
                    short.append((path, clip))
            if short:
                lengths = torch.tensor([clip.shape[-1] for _, clip in short])
                audio = torch.zeros(len(short), 1, int(lengths.max()))  # (B, 1, S), right-padded
                for row, (_, clip) in enumerate(short):
                    audio[row, :, : clip.shape[-1]] = clip
                tokens = codec.encode(audio.to(device), lengths=lengths.to(device))
                writer.add_batch(
                    tokens.codes.cpu(),
                    keys=[path.relative_to(root).as_posix() for path, _ in short],
                    lengths=tokens.lengths.cpu(),
                    media_lengths=lengths,
                )
            progress.update(len(batch))
            check_stop()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stop waits for no more reading


_READ_THREADS = 4  # audio files are read on this many threads while the model runs


def _audio_frames(path: Path) -> int:
    """A file's frame count from its header (0 when unreadable: the read reports why)."""
    import soundfile

    try:
        return soundfile.info(str(path)).frames
    except Exception:
        return 0


def command_decode(args: argparse.Namespace) -> int:
    from mediatok.api import load
    from mediatok.tokens import TokenDataset
    from mediatok.tokens.shards import atomic_write_json

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"expected -o {out} to be a folder (or a path to create one), got an existing file"
        )
    device = _device(args.device)
    codec = load(args.checkpoint, device=device)
    dataset = TokenDataset(args.tokens)
    _check_decodes(codec, dataset, args.checkpoint)
    if codec.modality == "image":
        suffix = ".png"
    elif codec.modality == "audio":
        suffix = f".{args.format}"
    else:
        raise SystemExit(f"{PROGRAM} decode: no {codec.modality} decoding path yet")
    index_path = out / DECODE_INDEX
    decoded = _read_decode_index(index_path)  # key -> {"file", "codes"} of earlier runs
    recorded = {key: entry["file"] for key, entry in decoded.items()}
    names = _targets(dataset.directory, out, dataset.keys, suffix, recorded)

    def is_current(i: int) -> bool:  # decoded before into its file, from the same codes
        entry = decoded.get(dataset.keys[i])
        return (
            entry is not None
            and entry["file"] == names[i]
            and (out / names[i]).is_file()
            and entry["codes"] == _codes_digest(dataset, i)
        )

    indices = [i for i in range(len(dataset)) if not is_current(i)]
    if codec.modality == "audio":  # similar lengths share a batch: less padding
        indices.sort(key=lambda i: int(dataset.lengths[i]))
    written, saved = 0, time.monotonic()
    try:
        for start in tqdm(range(0, len(indices), args.batch_size), desc="decode", disable=None):
            batch = indices[start : start + args.batch_size]
            dataset.check_codes(batch)  # a damaged shard: its name, not the quantizer's error
            items = [dataset[i] | {"target": out / names[i]} for i in batch]
            if codec.modality == "image":
                codes = torch.stack([item["codes"] for item in items]).to(device)
                for item, image in zip(items, codec.decode(codes).clamp(-1, 1).cpu(), strict=True):
                    _write_decoded(item["target"], image, None)
            else:
                _decode_audio(codec, items, device, args)
            for i in batch:
                decoded[dataset.keys[i]] = {"file": names[i], "codes": _codes_digest(dataset, i)}
            written += len(items)
            if time.monotonic() - saved > _DECODE_INDEX_SECONDS:
                atomic_write_json(index_path, {"format_version": 1, "files": decoded})
                saved = time.monotonic()
    finally:  # also when stopped: the files written so far are not decoded again
        if written:
            atomic_write_json(index_path, {"format_version": 1, "files": decoded})
    noun = "images" if codec.modality == "image" else "files"
    print(f"decoded {written} {noun} into {out} ({len(dataset) - written} already there)")
    return 0


DECODE_INDEX = ".mediatok-decode.json"  # in a decode's output folder: key -> file, codes digest
_DECODE_INDEX_SECONDS = 10.0  # at most this much decoding is redone after a kill


def _read_decode_index(path: Path) -> dict[str, dict[str, str]]:
    """The files that earlier decodes into this folder wrote: key -> `{"file": path relative to
    the folder, "codes": _codes_digest}`; empty when there is no index yet."""
    if not path.is_file():
        return {}
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        files = None
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("codes"), str)
        and isinstance(entry.get("file"), str)
        and _is_relative_inside(entry["file"])
        for entry in files.values()
    ):
        raise ValueError(
            f"{path}: expected the index that `{PROGRAM} decode` keeps (each key's file and "
            "codes digest), got a damaged file; delete it (every file is then decoded again)"
        )
    return files


def _codes_digest(dataset, index: int) -> str:
    """A digest of what sample `index` decodes from: its codes, their shape, its media length."""
    codes = dataset.sample_codes(index).astype("<i8")
    media_length = None if dataset.media_lengths is None else int(dataset.media_lengths[index])
    digest = hashlib.sha256(json.dumps([list(codes.shape), media_length]).encode())
    digest.update(codes.tobytes())
    return digest.hexdigest()[:32]


def _is_relative_inside(name: str) -> bool:
    """Whether `name` is a relative path that stays inside the folder it is joined to."""
    path = PurePosixPath(name)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts


def _check_decodes(codec, dataset, checkpoint) -> None:
    """Refuse tokens that `codec` does not decode: another vocabulary, layout or geometry
    (`TokenSpec.describe_mismatch`; the vocabulary may agree, at 75 and 40 tokens per second or
    two image sizes, while the media would come out at the wrong speed or size), or another
    codec than the one that wrote them (which a spec does not record). Another checkpoint of the
    same codec gets a warning (a retrained decoder is fine)."""
    from mediatok.api import checkpoint_sha256
    from mediatok.codecs import Codec

    if not isinstance(codec, Codec):
        raise ValueError(
            f"{checkpoint}: expected a codec checkpoint to decode with, got a generator"
        )
    written_by = dataset.metadata["codec"]
    problems = []
    if written_by is not None and written_by != codec.name:
        problems.append(f"expected tokens of {codec.name}, got tokens of {written_by}")
    mismatch = codec.token_spec.describe_mismatch(dataset.spec)
    if mismatch is not None:
        problems.append(mismatch)
    if problems:
        raise ValueError(
            f"{checkpoint} cannot decode the tokens in {dataset.directory}: "
            f"{'; '.join(problems)}; decode with the checkpoint that encoded them"
        )
    if dataset.metadata["checkpoint_sha256"] not in (None, checkpoint_sha256(checkpoint)):
        print(
            f"{PROGRAM} decode: warning: {dataset.directory} was encoded with another checkpoint "
            f"than {checkpoint}",
            file=sys.stderr,
        )


def _decode_audio(codec, items, device, args) -> None:
    """Decode a batch of audio token sequences; each file gets its source's exact duration
    when the shards recorded it (else tokens × hop samples)."""
    hop, rate = codec.config.hop_length, codec.config.sample_rate
    long = [item for item in items if len(item["codes"]) > args.chunk_tokens]
    short = [item for item in items if len(item["codes"]) <= args.chunk_tokens]
    for item in long:
        audio = codec.decode_long(item["codes"][None].to(device), args.chunk_tokens)[0]
        _write_decoded(item["target"], audio.cpu(), rate, item.get("media_length"))
    if short:
        lengths = torch.tensor([len(item["codes"]) for item in short])
        codes = torch.zeros(len(short), int(lengths.max()), dtype=torch.int64)  # (B, T)
        for row, item in enumerate(short):
            codes[row, : lengths[row]] = item["codes"]
        audio = codec.decode(codes.to(device), lengths=lengths.to(device)).cpu()
        for row, item in enumerate(short):
            clip = audio[row, :, : lengths[row] * hop]
            _write_decoded(item["target"], clip, rate, item.get("media_length"))


def _write_decoded(target: Path, media, rate, length=None) -> None:
    from mediatok.data import write_audio, write_image

    if rate is None:
        write_image(target, media)
        return
    if length is not None:  # the source's duration: trim the hop padding, or pad a hair
        media = media[..., :length]
        if media.shape[-1] < length:
            media = torch.nn.functional.pad(media, (0, length - media.shape[-1]))
    write_audio(target, media.float().clamp(-1, 1), rate)


def _targets(
    tokens: Path, out: Path, keys: list[str], suffix: str, recorded: dict[str, str]
) -> list[str]:
    """Where the media decoded from each source key goes, relative to `out`: the same relative
    path with the new suffix (`sub/a.jpg` -> `sub/a.png`). Sources that would share a file
    (`a.jpg` and `a.png`, `a.wav` and `a.flac`) keep their whole name and gain the suffix
    (`a.jpg.png`), except one that already has it (`a.png` stays), so that no decoded file
    overwrites another. A key that an earlier decode wrote (`recorded`: key -> file) keeps its
    file, and no other key gets that file, so that names do not change when keys are added.

    Raises:
        TokenFileError: a key that is empty, absolute or has a `..` (it would be written outside
            `out`), naming the token directory and the key.
    """
    from mediatok.tokens import TokenFileError

    for key in keys:
        if not _is_relative_inside(key):
            raise TokenFileError(
                tokens,
                f"sample key {key!r} is not a relative path inside the output folder (it is "
                f"empty, absolute or has '..'): decoding writes each sample to {out}/KEY and "
                "refuses to write elsewhere",
            )
    owner = {file: key for key, file in recorded.items()}  # files that earlier decodes wrote
    plain = [PurePosixPath(key).with_suffix(suffix).as_posix() for key in keys]
    counts = Counter(plain)
    targets = []
    for key, path in zip(keys, plain, strict=True):
        earlier = recorded.get(key)
        if earlier is not None and PurePosixPath(earlier).suffix == suffix:
            targets.append(earlier)
            continue
        candidates = [f"{key}{suffix}"]
        if counts[path] == 1 or PurePosixPath(key).suffix == suffix:
            candidates.insert(0, path)
        free = [name for name in candidates if owner.get(name, key) == key]
        targets.append(free[0] if free else candidates[0])
    if len(set(targets)) != len(targets) or any(
        owner.get(name, key) != key for key, name in zip(keys, targets, strict=True)
    ):
        counts = Counter(targets)
        clashes = [
            key
            for key, name in zip(keys, targets, strict=True)
            if counts[name] > 1 or owner.get(name, key) != key
        ]
        raise SystemExit(
            f"{PROGRAM} decode: sources {clashes[:4]} would decode to the same file in {out} as "
            "another source; rename one of them and encode again, or decode to another folder"
        )
    return targets


def command_eval(args: argparse.Namespace) -> int:
    from mediatok.api import evaluate_codec

    if args.reference is not None:  # gFID of a folder of samples
        from mediatok.eval.fid import fid

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
        score = fid(
            args.checkpoint,
            args.reference,
            batch_size=args.batch_size,
            device=_device(args.device),
        )
        report = {"samples": args.checkpoint, "reference": args.reference, "gfid": score}
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return 0
    if args.input is None:
        raise SystemExit(
            f"{PROGRAM} eval: expected CKPT MEDIA_DIR (reconstruction) or SAMPLES_DIR "
            f"--reference REFERENCE_DIR (gFID)"
        )
    report = evaluate_codec(
        args.checkpoint,
        args.input,
        args.output,
        device=_device(args.device),
        batch_size=args.batch_size,
        limit=args.limit,
        fid=not args.no_fid,
        speech_metrics=not args.no_speech_metrics,
        dnsmos=args.dnsmos,
    )
    print(json.dumps(report, indent=1))
    return 0


def command_sample(args: argparse.Namespace) -> int:
    from mediatok.api import generator_run, sample
    from mediatok.tokens import TokenWriter
    from mediatok.training.generator_task import write_decoded

    options = {
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
    if args.codec is None and generator_run(args.checkpoint).get("codec") is None:
        raise SystemExit(
            f"{PROGRAM} sample: {args.checkpoint} records no codec to decode with; pass --codec CKPT"
        )
    device = _device(args.device)
    samples = sample(
        args.checkpoint,
        args.num_samples,
        label=args.label,
        codec=args.codec,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        **options,
    )
    out = Path(args.output)
    names = [f"sample-{i:05d}" for i in range(args.num_samples)]
    if samples.labels is not None:
        names = [
            f"class-{int(c):04d}-{name}" for c, name in zip(samples.labels, names, strict=True)
        ]
    _check_earlier_samples(out, samples, names)
    for start in range(0, args.num_samples, args.batch_size):
        rows = slice(start, start + args.batch_size)
        write_decoded(
            samples.codec,
            samples.codes[rows],
            out,
            names[rows],
            None if samples.lengths is None else samples.lengths[rows],
            audio_format=args.format,
        )
    with TokenWriter(out / "tokens", samples.codec.token_spec, codec=samples.codec.name) as writer:
        new = [i for i, name in enumerate(names) if name not in writer.done_keys]  # a rerun
        if new:
            rows = torch.tensor(new)
            writer.add_batch(
                samples.codes[rows],
                labels=None if samples.labels is None else samples.labels[rows],
                keys=[names[i] for i in new],
                lengths=None if samples.lengths is None else samples.lengths[rows],
            )
    print(f"wrote {args.num_samples} samples and their tokens ({out / 'tokens'}) into {out}")
    return 0


def _check_earlier_samples(out: Path, samples, names: list[str]) -> None:
    """Refuse to write into a folder whose `tokens/` holds other samples under these names.

    A rerun skips the tokens already written (so that a killed run finishes) but rewrites the
    media files, which is right only when the earlier run drew the same samples (same seed,
    count, batch size and settings); otherwise the folder would pair new media with old tokens.
    """
    from mediatok.tokens import TokenDataset, TokenWriter

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
            raise SystemExit(
                f"{PROGRAM} sample: {out} already holds other samples under the same names "
                f"({key} in {directory} differs from this run's: another seed, count, batch "
                "size or setting?); choose another -o or remove the folder"
            )


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

    train = commands.add_parser("train", help="train a tokenizer from a YAML config")
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
    encode.add_argument("--device", default="auto")
    encode.set_defaults(run=command_encode)

    decode = commands.add_parser("decode", help="decode token shards back to media files")
    decode.add_argument("checkpoint")
    decode.add_argument("tokens", help="token directory written by `mediatok encode`")
    decode.add_argument("-o", "--output", required=True)
    decode.add_argument("--batch-size", type=_positive_int, default=32)
    decode.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio files")
    decode.add_argument(
        "--chunk-tokens",
        type=_natural_int,
        default=2250,
        help="audio longer than this many tokens is decoded alone, in overlapping chunks",
    )
    decode.add_argument("--device", default="auto")
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
    evaluate.add_argument("--limit", type=int, default=None, help="at most this many images")
    evaluate.add_argument("--no-fid", action="store_true", help="images: skip rFID")
    evaluate.add_argument(
        "--no-speech-metrics", action="store_true", help="audio: skip PESQ and STOI"
    )
    evaluate.add_argument(
        "--dnsmos",
        action="store_true",
        help="audio: also DNSMOS of reconstructions and originals (pip install 'mediatok[dnsmos]')",
    )
    evaluate.add_argument("--device", default="auto")
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
    sampler.add_argument("--format", choices=["wav", "flac"], default="wav", help="audio")
    sampler.add_argument("--device", default="auto")
    sampler.set_defaults(run=command_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command. A mistake in what the user gave (a config key, a value out of range, a
    missing or damaged file: the library's `ValueError`s say what was expected and what came)
    prints its message on one line and exits with 2; `MEDIATOK_TRACEBACK=1` shows the
    traceback instead."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # ConfigError, TokenFileError, ... too
        if os.environ.get("MEDIATOK_TRACEBACK"):
            raise
        print(f"{PROGRAM} {args.command}: error: {error}", file=sys.stderr)
        print("(MEDIATOK_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
