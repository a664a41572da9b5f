"""`mediatok encode|decode|eval|sample` with a tiny causal video tokenizer on generated clips:
frame counts and frame rates come back as they went in, long videos are chunked with the codes
of one pass, bad files are named and skipped, generators train on video tokens and sample MP4s."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mediatok.cli import main
from mediatok.codecs import build_codec, load_codec
from mediatok.data import read_video, resize_and_crop_video, to_float, video_info, write_video
from mediatok.tokens import TokenDataset
from tiny_configs import CAUSAL_VIDEO
from tiny_configs import GENERATOR as TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
FRAMES = {"still.mp4": 1, "a.mp4": 5, "b.webm": 9, "sub/long.mkv": 23}


def moving_pattern(frames: int, height: int = 24, width: int = 20) -> torch.Tensor:
    """A smooth pattern that drifts with time: `(3, T, H, W)` in [-1, 1]."""
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(-1, 1, height)[None, :, None]
    x = torch.linspace(-1, 1, width)[None, None, :]
    channels = [torch.sin(3 * y + 5 * t + x), torch.cos(2 * x - 4 * t + 0 * y), x * y + t - 0.5]
    return torch.stack(channels).clamp(-1, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    codec = build_codec("causal_video", {**CAUSAL_VIDEO, "fps": 8.0})
    return codec.save_pretrained(tmp_path_factory.mktemp("video") / "checkpoint")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four videos of 1 to 23 frames at 10 to 13 fps in three containers, and a bad file."""
    root = tmp_path_factory.mktemp("clips")
    for index, (name, frames) in enumerate(FRAMES.items()):
        (root / name).parent.mkdir(exist_ok=True)
        write_video(root / name, moving_pattern(frames), fps=10 + index)
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return root


def run(*args: str) -> int:
    return main([*args, "--device", "cpu"])


def test_encode_decode_keep_every_frame_count_and_rate(checkpoint, clips, tmp_path, capsys):
    tokens, decoded = tmp_path / "tokens", tmp_path / "decoded"
    assert run("encode", str(checkpoint), str(clips), "-o", str(tokens), "--batch-size", "2") == 0
    out = capsys.readouterr()
    assert "encoded 4 of 5 videos" in out.out and "broken.mp4" in out.err
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == sorted(FRAMES)
    assert dataset.spec.layout == "T H W" and dataset.spec.geometry["fps"] == 8.0
    for index, key in enumerate(dataset.keys):
        item = dataset[index]
        assert item["media_length"] == FRAMES[key]
        assert item["codes"].shape == (1 + -(-(FRAMES[key] - 1) // 4), 4, 4)
    assert run("decode", str(checkpoint), str(tokens), "-o", str(decoded)) == 0
    for index, (name, frames) in enumerate(FRAMES.items()):
        info = video_info((decoded / name).with_suffix(".mp4"))
        assert (info.frames, info.width, info.height) == (frames, 16, 16), name
        assert info.fps == pytest.approx(10 + index), name
    # A rerun of either command redoes nothing.
    assert run("encode", str(checkpoint), str(clips), "-o", str(tokens)) == 0
    assert run("decode", str(checkpoint), str(tokens), "-o", str(decoded)) == 0
    assert "decoded 0 videos" in capsys.readouterr().out


def test_a_long_video_is_chunked_with_the_codes_of_one_pass(checkpoint, clips, tmp_path):
    tokens = tmp_path / "tokens"
    assert run("encode", str(checkpoint), str(clips), "-o", str(tokens), "--chunk-frames", "8") == 0
    dataset = TokenDataset(tokens)
    stored = dataset[dataset.keys.index("sub/long.mkv")]["codes"]
    codec = load_codec(checkpoint)
    frames = resize_and_crop_video(read_video(clips / "sub" / "long.mkv")[0], 16)
    video = to_float(frames.transpose(0, 1)).transpose(0, 1)  # (3, T, 16, 16)
    assert torch.equal(stored, codec.encode(video[None]).codes[0])


def test_eval_scores_frames_and_names_what_it_left_out(checkpoint, clips, tmp_path):
    out = tmp_path / "report"
    assert run("eval", str(checkpoint), str(clips), "-o", str(out), "--no-fid") == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_videos"] == 4 and report["skipped"][0]["key"] == "broken.mp4"
    assert 0 < report["psnr"] < 100 and report["scored"]["temporal_consistency"] == 3
    assert "still.mp4" in report["undefined"]["temporal_consistency"]  # one frame: no motion
    assert report["fvd"] is None and "no I3D weights" in report["fvd_note"]
    assert (out / "reconstructions.png").is_file()
    stop = run(
        "eval", str(checkpoint), str(clips), "-o", str(out), "--no-fid", "--on-error", "stop"
    )
    assert stop == 1


def test_video_tokens_train_a_generator_that_samples_mp4s(checkpoint, clips, tmp_path):
    tokens = tmp_path / "tokens"
    assert run("encode", str(checkpoint), str(clips), "-o", str(tokens)) == 0
    config = tmp_path / "gen.yaml"
    run_dir = tmp_path / "run"
    train = {"steps": 2, "batch_size": 2, "num_workers": 0, "device": "cpu"}
    config.write_text(
        json.dumps(
            {
                "task": "generator",
                "generator": "ar",
                "model": TINY_MODEL,
                "data": {"tokens": str(tokens), "window": 3},  # 3 latent frames of 4 × 4 codes
                "sample": {"num_samples": 2},
                "codec": str(checkpoint),
                "train": {**train, "out_dir": str(run_dir), "tensorboard": False},
            }
        )
    )
    assert main(["train", str(config)]) == 0
    samples = tmp_path / "samples"
    assert run("sample", str(run_dir / "checkpoint"), "-n", "3", "-o", str(samples)) == 0
    videos = sorted(samples.glob("sample-*.mp4"))
    assert len(videos) == 3 and (samples / "strip.png").is_file()
    for video in videos:
        info = video_info(video)
        assert (info.width, info.height, info.fps) == (16, 16, 8.0)  # the codec's rate
        assert info.frames == 1 + 4 * 2  # 3 latent frames


def test_unsupported_format_for_video_is_refused(checkpoint, clips, tmp_path):
    tokens = tmp_path / "tokens"
    assert run("encode", str(checkpoint), str(clips), "-o", str(tokens)) == 0
    with pytest.raises(ValueError, match=re.escape("format of decoded videos to be one of")):
        run("decode", str(checkpoint), str(tokens), "-o", str(tmp_path / "d"), "--format", "wav")


def video_run(tmp: Path, clips: Path, name: str, **train) -> Path:
    """A 4-step run config of the tiny video codec on the clips and, every other step, the
    shipped photos as 1-frame videos; adversarial from the start."""
    config = tmp / f"{name}.yaml"
    loop = {"steps": 4, "batch_size": 2, "num_workers": 0, "device": "cpu", "log_every": 1}
    loop |= {"lr": 1e-3, "schedule": "constant", "tensorboard": False, "out_dir": str(tmp / name)}
    loop |= train
    config.write_text(
        json.dumps(
            {
                "task": "video_codec",
                "codec": "causal_video",
                "model": CAUSAL_VIDEO,
                "data": {
                    "train_dir": str(clips),
                    "frames": 5,
                    "image_dir": str(ROOT / "assets" / "images"),
                    "image_every": 2,
                },
                "loss": {
                    "adversarial_weight": 0.1,
                    "discriminator_channels": 4,
                    "discriminator_layers": 1,
                },
                "train": loop,
            }
        )
    )
    return config


def records(run_dir: Path) -> dict[int, dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines) if "train/loss" in record}


def test_video_codec_trains_on_clips_and_images_and_resumes_exactly(clips, tmp_path):
    whole = video_run(tmp_path, clips, "whole", eval_every=4)
    assert main(["train", str(whole)]) == 0
    parts = video_run(tmp_path, clips, "parts", steps=2)
    assert main(["train", str(parts)]) == 0
    assert (
        main(["train", str(tmp_path / "parts"), "--resume", "train.steps=4"]) == 0
    )  # README order
    expected, got = records(tmp_path / "whole"), records(tmp_path / "parts")
    assert [expected[step]["train/loss"] for step in (3, 4)] == [
        got[step]["train/loss"] for step in (3, 4)
    ]
    # Steps 0 and 2 (logged as 1 and 3) add an image batch: joint training.
    assert {step for step, record in expected.items() if "train/image_l1" in record} == {1, 3}
    assert "train/adversarial" in expected[1] and "train/discriminator_hinge" in expected[1]
    codec = load_codec(tmp_path / "whole" / "checkpoint")
    assert (
        codec.modality == "video" and (tmp_path / "whole" / "reconstructions-0000004.png").exists()
    )


def test_a_run_inflates_from_an_image_checkpoint(clips, tmp_path):
    """`init_from` loads the checkpoint with each temporal kernel's earlier taps zeroed."""
    from mediatok.training.run import codec_task, load_run_config

    torch.manual_seed(1)
    image_model = build_codec("causal_video", CAUSAL_VIDEO)
    image_checkpoint = image_model.save_pretrained(tmp_path / "image-model")
    config = load_run_config(video_run(tmp_path, clips, "x"), [f"init_from={image_checkpoint}"])
    model = codec_task(config)[1].build_model()
    temporal = [
        (name, weight)
        for name, weight in model.state_dict().items()
        if weight.ndim == 5 and weight.shape[2] > 1  # (out, in, kT > 1, kH, kW)
    ]
    assert temporal
    for name, weight in temporal:
        assert not weight[:, :, :-1].any(), name
        torch.testing.assert_close(weight[:, :, -1], image_model.state_dict()[name][:, :, -1])
