"""`make demo`: the pipeline on the shipped photos and speech clips, in six parts.

1. quantize: every quantizer kind learns to code 8×8 RGB patches (192 numbers) of the sample
   photos at about 10 bits per patch, then codes the patches of a photo it never saw; the demo
   prints usage, perplexity and the held-out PSNR of each kind.
   Output: `demo-output/quantize/{metrics.json, reconstructions.png}`.
2. image: a small TiTok (`configs/image/demo-titok.yaml`) trains on random crops of the photos,
   then the same commands a user runs encode the photos to token shards, decode them and score
   the reconstructions.
   Output: `demo-output/image/{checkpoint/, tokens/, decoded/, metrics.json, reconstructions.png}`.
3. audio: a small 75 tokens/s WavTokenizer-style codec (`configs/audio/demo-wavtokenizer.yaml`)
   trains on the shipped speech clips; `mediatok encode|decode|eval` code the held-out clips.
   Output: `demo-output/audio/{checkpoint/, tokens/, decoded/, metrics.json, examples/}`.
4. generation: part 2's TiTok encodes random crops of the photos (one class per photo) into
   token shards, a tiny class-conditional AR transformer (`configs/gen/demo-ar.yaml`) trains
   on them, and `mediatok sample` draws two images of each class.
   Output: `demo-output/generation/{tokens/, checkpoint/, samples/, samples.png}`.
5. video: clips made by moving a camera across the shipped photos (pans with a slow zoom,
   written as MP4s: `camera_clips`); a tiny causal video tokenizer
   (`configs/video/demo-video.yaml`) trains on three moves across each photo and, jointly, on
   the photos as 1-frame videos; `mediatok encode|decode|eval` code a fourth, held-out move; a
   tiny AR generator trains on the tokens of clip windows and `mediatok sample` draws clips.
   Output: `demo-output/video/{clips/, checkpoint/, tokens/, decoded/, metrics.json,
   reconstructions.png, generation/}`.

6. flextok: a tiny FlexTok (`configs/image/demo-flextok.yaml`: 64 ordered tokens, a flow
   decoder) trains on the photos; `mediatok eval` decodes every photo from its first 1, 2, 4,
   ..., 64 tokens and writes the quality-versus-k curve and a grid (one column per k).
   Output: `demo-output/flextok/{checkpoint/, metrics.json, k_curve.json, k_curve.png,
   k_grid.png}`.

    python -m mediatok.demo [--part all|quantize|image|audio|generation|video|flextok]
        [--out demo-output]

Rerunning continues finished or interrupted training runs instead of starting over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

# Before torch loads OpenMP, as `mediatok.cli.main` does: waiting threads sleep instead of
# spinning, so the demo does not slow 1.5-10x beside other CPU-bound processes on a small
# machine. OMP_WAIT_POLICY=ACTIVE in the environment keeps the spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from mediatok.quantize import build_quantizer

PATCH = 8
DIM = 3 * PATCH * PATCH
HELD_OUT = "coffee.png"

# About 10 bits per patch for every kind, so the numbers compare like with like.
KINDS = {
    "vq": {"kind": "vq", "dim": DIM, "codebook_size": 1024, "kmeans_init": True},
    "rvq": {
        "kind": "rvq",
        "dim": DIM,
        "codebook_size": 32,
        "num_quantizers": 2,
        "kmeans_init": True,
    },
    "fsq": {"kind": "fsq", "dim": DIM, "levels": [8, 5, 5, 5]},
    "lfq": {"kind": "lfq", "dim": DIM, "codebook_size": 1024},
    "bsq": {"kind": "bsq", "dim": DIM, "codebook_size": 1024},
    "simvq": {"kind": "simvq", "dim": DIM, "codebook_size": 1024},
}


def default_assets() -> Path:
    return Path(__file__).resolve().parents[2] / "assets" / "images"


def load_photo(path: Path) -> torch.Tensor:
    """An image file as `(3, H, W)` floats in [-1, 1], cropped to whole patches."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
    except OSError as error:
        raise ValueError(f"{path}: cannot read it as an image ({error})") from error
    height, width = (array.shape[0] // PATCH) * PATCH, (array.shape[1] // PATCH) * PATCH
    pixels = torch.from_numpy(array[:height, :width]).permute(2, 0, 1)  # (3, H, W)
    return pixels / 127.5 - 1.0


def random_patches(photos: list[torch.Tensor], count: int, generator: torch.Generator):
    """`count` patches at random positions, flattened: `(count, 192)`."""
    out = torch.empty(count, DIM)
    picks = torch.randint(len(photos), (count,), generator=generator)
    for index, photo_index in enumerate(picks.tolist()):
        photo = photos[photo_index]
        top = int(torch.randint(photo.shape[1] - PATCH + 1, (1,), generator=generator))
        left = int(torch.randint(photo.shape[2] - PATCH + 1, (1,), generator=generator))
        out[index] = photo[:, top : top + PATCH, left : left + PATCH].reshape(-1)
    return out


def tile(photo: torch.Tensor) -> torch.Tensor:
    """`(3, H, W)` → non-overlapping patches `(H/8 · W/8, 192)`."""
    patches = F.unfold(photo[None], kernel_size=PATCH, stride=PATCH)  # (1, 192, L)
    return patches[0].t()


def untile(patches: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.fold(patches.t()[None], (height, width), kernel_size=PATCH, stride=PATCH)[0]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2)."""
    mse = float((a.clamp(-1, 1) - b).pow(2).mean())
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def train_one(name: str, options: dict, train: torch.Tensor, steps: int, batch: int, seed: int):
    torch.manual_seed(seed)
    options = dict(options)
    quantizer = build_quantizer(options.pop("kind"), **options)
    parameters = list(quantizer.parameters())
    optimizer = torch.optim.Adam(parameters, lr=2e-3) if parameters else None
    generator = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc=f"{name:>6}", leave=False, disable=None):
        patches = train[torch.randint(len(train), (batch,), generator=generator)]
        out = quantizer(patches)
        loss = F.mse_loss(out.quantized, patches) + sum(out.losses.values())
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return quantizer.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description="The pipeline on the shipped photos.")
    parser.add_argument(
        "--part",
        choices=["all", "quantize", "image", "audio", "generation", "video", "flextok"],
        default="all",
    )
    parser.add_argument("--assets", type=Path, default=default_assets())
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--steps", type=int, default=1000, help="quantize part: steps per kind")
    parser.add_argument("--batch", type=int, default=1024, help="quantize part: patches a step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--image-overrides", nargs="*", default=[], help="image part: key=value for its config"
    )
    parser.add_argument(
        "--audio-overrides", nargs="*", default=[], help="audio part: key=value for its config"
    )
    parser.add_argument(
        "--generation-overrides", nargs="*", default=[], help="generation part: key=value"
    )
    parser.add_argument(
        "--crops-per-photo", type=int, default=100, help="generation part: training samples"
    )
    parser.add_argument(
        "--video-overrides", nargs="*", default=[], help="video part: key=value for its config"
    )
    parser.add_argument(
        "--flextok-overrides", nargs="*", default=[], help="flextok part: key=value"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    if args.part in ("all", "quantize"):
        print("== part 1: the quantizer core ==")
        demo_quantizers(args)
    if args.part in ("all", "image"):
        print("\n== part 2: an image tokenizer, trained, encoding and decoding ==")
        demo_image(args)
    if args.part in ("all", "audio"):
        print("\n== part 3: an audio codec, trained, encoding and decoding speech ==")
        demo_audio(args)
    if args.part in ("all", "generation"):
        print("\n== part 4: a generator on the image tokens, sampled back to pixels ==")
        demo_generation(args)
    if args.part in ("all", "video"):
        print("\n== part 5: a video tokenizer on camera moves across the photos ==")
        demo_video(args)
    if args.part in ("all", "flextok"):
        print("\n== part 6: FlexTok, one photo decoded from 1 to 64 ordered tokens ==")
        demo_flextok(args)
    print(
        f"\ndemo finished in {time.perf_counter() - began:.0f} s; everything is under {args.out}/"
    )


def demo_image(args: argparse.Namespace) -> None:
    from mediatok.cli import main as cli
    from mediatok.config import load_config
    from mediatok.training.run import train
    from mediatok.training.tasks import ImageCodecRunConfig

    root = Path(__file__).resolve().parents[2]
    out = args.out / "image"
    overrides = [f"data.train_dir={args.assets}", f"train.out_dir={out}", *args.image_overrides]
    config = load_config(
        ImageCodecRunConfig, root / "configs" / "image" / "demo-titok.yaml", overrides
    )
    print(
        f"training {config.codec} ({config.model['num_tokens']} tokens of "
        f"{config.model['quantizer']['options']['codebook_size']} codes for "
        f"{config.model['image_size']}x{config.model['image_size']} crops) for "
        f"{config.train.steps} steps on {args.assets} ..."
    )
    train(config, resume="if_found")  # continue or skip a finished run
    checkpoint = str(out / "checkpoint")
    print(f"checkpoint: {checkpoint}")
    cli(["encode", checkpoint, str(args.assets), "-o", str(out / "tokens")])
    cli(["decode", checkpoint, str(out / "tokens"), "-o", str(out / "decoded")])
    # rFID needs far more than the six sample photos to mean anything: skipped here.
    cli(["eval", checkpoint, str(args.assets), "-o", str(out), "--no-fid"])
    print(
        f"wrote {out / 'metrics.json'} and {out / 'reconstructions.png'} (originals | reconstructions)"
    )


def demo_audio(args: argparse.Namespace) -> None:
    from mediatok.cli import main as cli
    from mediatok.config import load_config
    from mediatok.training.run import train
    from mediatok.training.tasks import AudioCodecRunConfig

    root = Path(__file__).resolve().parents[2]
    speech, held_out = root / "assets" / "speech", root / "assets" / "speech-val"
    out = args.out / "audio"
    overrides = [
        f"data.train_dir={speech}",
        f"data.val_dir={held_out}",
        f"train.out_dir={out}",
        *args.audio_overrides,
    ]
    config_path = root / "configs" / "audio" / "demo-wavtokenizer.yaml"
    config = load_config(AudioCodecRunConfig, config_path, overrides)
    rate = 24000 // config.model["hop_length"]
    print(
        f"training {config.codec} ({rate} tokens/s, one codebook of "
        f"{config.model['quantizer']['options']['codebook_size']} codes) for "
        f"{config.train.steps} steps on {config.data.segment_seconds:g} s crops of {speech} ..."
    )
    train(config, resume="if_found")  # continue or skip a finished run
    checkpoint = str(out / "checkpoint")
    print(f"checkpoint: {checkpoint}")
    cli(["encode", checkpoint, str(held_out), "-o", str(out / "tokens")])
    cli(["decode", checkpoint, str(out / "tokens"), "-o", str(out / "decoded")])
    cli(["eval", checkpoint, str(held_out), "-o", str(out)])
    print(
        f"wrote {out / 'metrics.json'}; listen to {out / 'decoded'} (or the originals beside "
        f"their reconstructions in {out / 'examples'})"
    )


def demo_generation(args: argparse.Namespace) -> None:
    from mediatok.api import load
    from mediatok.cli import main as cli
    from mediatok.config import load_config
    from mediatok.data import ImageFolder, list_images, read_image, resize_and_crop, write_image
    from mediatok.tokens import TokenDataset, TokenWriter
    from mediatok.training.run import train
    from mediatok.training.tasks import GeneratorRunConfig

    root = Path(__file__).resolve().parents[2]
    out = args.out / "generation"
    codec_path = args.out / "image" / "checkpoint"
    if not (codec_path / "config.json").is_file():
        raise SystemExit(f"part 4 needs part 2's tokenizer at {codec_path}: run --part image")
    codec = load(codec_path)
    size = codec.config.image_size
    tokens = out / "tokens"
    photos = list_images(args.assets)
    if not (tokens / "manifest.json").is_file():
        # Random-resized crops: a plain random crop of a square photo at this size is the whole
        # photo every time, and two of the six are square (one token sequence for the class).
        crops = ImageFolder(args.assets, size, crop="random_resized", seed=args.seed)
        with TokenWriter(tokens, codec.token_spec, codec=codec.name) as writer:
            for epoch in range(args.crops_per_photo):
                crops.set_epoch(epoch)
                batch = [crops[i] for i in range(len(crops))]
                images = torch.stack([item["image"] for item in batch])
                with torch.no_grad():
                    codes = codec.encode(images).codes
                keys = [f"{item['key']}#{epoch}" for item in batch]
                writer.add_batch(codes, labels=[item["index"] for item in batch], keys=keys)
    count = len(TokenDataset(tokens))
    print(f"{count} random {size}x{size} crops of {len(photos)} photos coded into {tokens}")
    overrides = [
        f"data.tokens={tokens}",
        f"codec={codec_path}",
        f"train.out_dir={out}",
        *args.generation_overrides,
    ]
    config = load_config(GeneratorRunConfig, root / "configs" / "gen" / "demo-ar.yaml", overrides)
    print(
        f"training a class-conditional {config.generator} generator for {config.train.steps} steps"
    )
    train(config, resume="if_found")  # continue or skip a finished run
    checkpoint = str(out / "checkpoint")
    samples = out / "samples"
    num = 2 * len(photos)
    cli(["sample", checkpoint, "-n", str(num), "--seed", str(args.seed), "-o", str(samples)])
    # One row per class: the photo's center crop, then its samples (files sort by class).
    rows = []
    files = sorted(samples.glob("class-*.png"))
    for label, photo in enumerate(photos):
        drawn = [read_image(path) for path in files if path.name.startswith(f"class-{label:04d}-")]
        reference = resize_and_crop(read_image(photo), size, "center")
        rows.append(torch.cat([reference, *drawn], dim=2))  # (3, S, S·(1 + samples))
    write_image(out / "samples.png", torch.cat(rows, dim=1))
    print(
        f"wrote {num} samples into {samples}; {out / 'samples.png'}: each photo, then its samples"
    )


def demo_flextok(args: argparse.Namespace) -> None:
    from mediatok.cli import main as cli
    from mediatok.config import load_config
    from mediatok.training.run import train
    from mediatok.training.tasks import FlexTokRunConfig

    root = Path(__file__).resolve().parents[2]
    out = args.out / "flextok"
    overrides = [f"data.train_dir={args.assets}", f"train.out_dir={out}", *args.flextok_overrides]
    config_path = root / "configs" / "image" / "demo-flextok.yaml"
    config = load_config(FlexTokRunConfig, config_path, overrides)
    size = config.model["image_size"]
    print(
        f"training {config.codec} ({config.model['num_registers']} ordered tokens of 64,000 "
        f"codes for {size}x{size} crops, a flow decoder) for {config.train.steps} steps ..."
    )
    train(config, resume="if_found")  # continue or skip a finished run
    checkpoint = str(out / "checkpoint")
    print(f"checkpoint: {checkpoint}")
    # rFID needs far more than six photos: skipped, as in part 2.
    cli(["eval", checkpoint, str(args.assets), "-o", str(out), "--no-fid", "--steps", "25"])
    curve = json.loads((out / "k_curve.json").read_text())
    print("  tokens k   PSNR dB   SSIM")
    for point in curve:
        print(f"  {point['k']:>8} {point['psnr']:>9.2f} {point['ssim']:>6.3f}")
    print(
        f"wrote {out / 'k_curve.png'} (PSNR against k) and {out / 'k_grid.png'} (each photo, "
        "then decoded from its first 1, 2, 4, ... tokens)"
    )


CLIP_FRAMES, CLIP_SIZE, CLIP_FPS = 25, 48, 8.0  # the demo's camera clips


def camera_clips(photo: torch.Tensor, clips: int, generator: torch.Generator) -> list[torch.Tensor]:
    """`clips` camera moves across `photo (3, H, W)` uint8: each pans in a straight line between
    two random points while it zooms from one random window size to another (55 to 85 % of the
    short side), `CLIP_FRAMES` frames of `CLIP_SIZE`² pixels; `(3, T, S, S)` uint8 each."""
    _, height, width = photo.shape
    short = min(height, width)
    image = photo[None].float()  # (1, 3, H, W)
    out = []
    for _ in range(clips):
        sides = (0.55 + 0.3 * torch.rand(2, generator=generator)) * short  # start, end window
        starts, ends = torch.rand(2, 2, generator=generator)  # (y, x) in [0, 1) of the slack
        frames = []
        for t in torch.linspace(0, 1, CLIP_FRAMES).tolist():
            side = int(sides[0] + t * (sides[1] - sides[0]))
            y, x = (starts + t * (ends - starts)).tolist()
            top, left = int(y * (height - side)), int(x * (width - side))
            window = image[:, :, top : top + side, left : left + side]
            frame = F.interpolate(window, size=CLIP_SIZE, mode="bilinear", antialias=True)
            frames.append(frame[0].round().clamp(0, 255).byte())  # (3, S, S)
        out.append(torch.stack(frames, dim=1))  # (3, T, S, S)
    return out


def demo_video(args: argparse.Namespace) -> None:
    from mediatok.api import load
    from mediatok.cli import main as cli
    from mediatok.config import load_config
    from mediatok.data import VideoFolder, list_images, read_image, write_video
    from mediatok.tokens import TokenDataset, TokenWriter
    from mediatok.training.run import train
    from mediatok.training.tasks import GeneratorRunConfig, VideoCodecRunConfig

    root = Path(__file__).resolve().parents[2]
    out = args.out / "video"
    train_clips, held_clips = out / "clips" / "train", out / "clips" / "held-out"
    photos = list_images(args.assets)
    generator = torch.Generator().manual_seed(args.seed)
    if not any(held_clips.glob("*.mp4")):
        for photo in photos:
            for index, clip in enumerate(camera_clips(read_image(photo), 4, generator)):
                folder = held_clips if index == 3 else train_clips  # a new move per photo
                write_video(folder / f"{photo.stem}-{index}.mp4", clip, CLIP_FPS)
    print(
        f"{4 * len(photos)} camera clips of {CLIP_FRAMES} frames ({CLIP_SIZE}x{CLIP_SIZE}, "
        f"{CLIP_FPS:g} fps) across the photos in {out / 'clips'}; one move per photo held out"
    )
    overrides = [
        f"data.train_dir={train_clips}",
        f"data.image_dir={args.assets}",
        f"data.val_dir={held_clips}",
        f"train.out_dir={out}",
        *args.video_overrides,
    ]
    config_path = root / "configs" / "video" / "demo-video.yaml"
    config = load_config(VideoCodecRunConfig, config_path, overrides)
    print(
        f"training {config.codec} ({config.data.frames}-frame clips of "
        f"{config.model['image_size']}x{config.model['image_size']}, and the photos as 1-frame "
        f"videos every {config.data.image_every} steps) for {config.train.steps} steps ..."
    )
    train(config, resume="if_found")  # continue or skip a finished run
    checkpoint = str(out / "checkpoint")
    print(f"checkpoint: {checkpoint}")
    cli(["encode", checkpoint, str(held_clips), "-o", str(out / "tokens")])
    cli(["decode", checkpoint, str(out / "tokens"), "-o", str(out / "decoded")])
    # Frame FID needs far more frames than a few clips to mean anything: skipped here.
    cli(["eval", checkpoint, str(held_clips), "-o", str(out), "--no-fid"])
    print(
        f"wrote {out / 'metrics.json'} and {out / 'reconstructions.png'} (strips: original above)"
    )

    # A generator on windows of the training clips, one class per photo.
    codec = load(checkpoint)
    generation = out / "generation"
    tokens = generation / "tokens"
    if not (tokens / "manifest.json").is_file():
        windows = VideoFolder(
            train_clips, codec.config.image_size, config.data.frames, crop="center", seed=args.seed
        )
        classes = sorted({key.rsplit("-", 1)[0] for key in windows.keys})
        with TokenWriter(tokens, codec.token_spec, codec=codec.name) as writer:
            for epoch in range(8):
                windows.set_epoch(epoch)
                batch = [windows[i] for i in range(len(windows))]
                with torch.no_grad():
                    codes = codec.encode(torch.stack([item["video"] for item in batch])).codes
                labels = [classes.index(item["key"].rsplit("-", 1)[0]) for item in batch]
                keys = [f"{item['key']}#{epoch}" for item in batch]
                writer.add_batch(codes, labels=labels, keys=keys)
    print(f"{len(TokenDataset(tokens))} clip windows coded into {tokens}")
    overrides = [
        f"data.tokens={tokens}",
        f"codec={checkpoint}",
        f"train.out_dir={generation}",
        # 192 tokens a clip: fewer, smaller steps than the image generator's, for the budget
        "train.steps=150",
        "train.batch_size=16",
        "train.save_every=150",
        "train.eval_every=0",
        "sample.num_samples=5",
    ]
    gen_config = load_config(
        GeneratorRunConfig, root / "configs" / "gen" / "demo-ar.yaml", overrides
    )
    train(gen_config, resume="if_found")
    samples = generation / "samples"
    cli(["sample", str(generation / "checkpoint"), "-n", "5", "-o", str(samples)])
    print(f"wrote 5 sampled clips into {samples} ({samples / 'strip.png'}: one row per clip)")


def demo_quantizers(args: argparse.Namespace) -> None:
    files = sorted(p for p in args.assets.glob("*") if p.suffix.lower() in {".png", ".jpg"})
    if not any(p.name == HELD_OUT for p in files):
        raise SystemExit(f"expected the sample photos (with {HELD_OUT}) in {args.assets}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    photos = [load_photo(p) for p in files if p.name != HELD_OUT]
    held_out = load_photo(args.assets / HELD_OUT)
    train = random_patches(photos, 60000, torch.Generator().manual_seed(args.seed))
    fresh = random_patches(photos, 20000, torch.Generator().manual_seed(args.seed + 1))
    print(
        f"{len(train)} random 8x8 patches of {len(photos)} photos in {args.assets}; "
        f"held out: {HELD_OUT} ({held_out.shape[2]}x{held_out.shape[1]})"
    )

    out_dir = args.out / "quantize"
    out_dir.mkdir(parents=True, exist_ok=True)
    val_patches = tile(held_out)
    rebuilt, results = [held_out], {}
    print(
        f"\n{'kind':>6} {'codes':>7} {'bits':>5} {'usage':>6} {'perplexity':>10} {'PSNR dB':>8} {'s':>5}"
    )
    for name, options in KINDS.items():
        began = time.perf_counter()
        quantizer = train_one(name, options, train, args.steps, args.batch, args.seed)
        with torch.no_grad():
            out = quantizer(val_patches)
            assert torch.equal(quantizer.decode(out.codes), out.quantized)
            spread = quantizer(fresh).metrics  # usage over many patches, not one photo
        image = untile(out.quantized, held_out.shape[1], held_out.shape[2])
        bits = sum(math.log2(size) for size in quantizer.codebook_sizes)
        codes = math.prod(quantizer.codebook_sizes)
        result = {
            "codebook_sizes": list(quantizer.codebook_sizes),
            "bits_per_patch": round(bits, 2),
            "usage": round(float(spread["usage"]), 4),
            "perplexity": round(float(spread["perplexity"]), 1),
            "psnr": round(psnr(image, held_out), 2),
            "seconds": round(time.perf_counter() - began, 1),
        }
        results[name] = result
        rebuilt.append(image)
        print(
            f"{name:>6} {codes:>7} {bits:>5.1f} {result['usage']:>6.1%} "
            f"{result['perplexity']:>10.1f} {result['psnr']:>8.2f} {result['seconds']:>5.1f}"
        )

    report = {
        "held_out": HELD_OUT,
        "patch": PATCH,
        "train_patches": len(train),
        "steps": args.steps,
        "kinds": results,
    }
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    row = torch.cat([(im.clamp(-1, 1) + 1) * 127.5 for im in rebuilt], dim=2)  # side by side
    Image.fromarray(row.round().byte().permute(1, 2, 0).numpy()).save(
        out_dir / "reconstructions.png"
    )
    print(
        f"\nusage and perplexity: over {len(fresh)} new patches of the training photos; "
        f"PSNR: {HELD_OUT} rebuilt from its {len(val_patches)} patch codes"
    )
    print(f"wrote {out_dir / 'metrics.json'}")
    print(f"wrote {out_dir / 'reconstructions.png'} (original, then {', '.join(KINDS)})")


if __name__ == "__main__":
    main()
