"""`mediatok encode|decode|eval` on shipped photos with a tiny codec, including a bad file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mediatok.cli import main
from mediatok.codecs import build_codec, load_codec
from mediatok.pipelines import Stopped
from mediatok.tokens import TokenDataset
from tiny_configs import TITOK as TINY_TITOK

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    codec = build_codec("titok", TINY_TITOK)
    return codec.save_pretrained(tmp_path / "checkpoint")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three photos (one in a sub-folder) and a file that only pretends to be a JPEG."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(ASSETS / "chelsea.png", root / "chelsea.png")
    shutil.copy(ASSETS / "rocket.jpg", root / "sub" / "rocket.jpg")
    Image.open(ASSETS / "camera.png").save(root / "camera.jpg", quality=90)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return root


def test_encode_skips_bad_files_and_resumes_without_duplicates(
    checkpoint, photos, tmp_path, capsys
):
    tokens = tmp_path / "tokens"
    args = ["encode", str(checkpoint), str(photos), "-o", str(tokens), "--device", "cpu"]
    assert main([*args, "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["camera.jpg", "chelsea.png", "sub/rocket.jpg"]
    assert [entry["key"] for entry in dataset.skipped] == ["broken.jpg"]
    assert dataset[0]["codes"].shape == (8,)
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert manifest["codec"] == "titok" and manifest["checkpoint_sha256"]

    before = sorted(p.name for p in tokens.glob("shard-*"))
    assert main(args) == 0  # a rerun: nothing new to encode, no duplicates
    again = TokenDataset(tokens)
    assert sorted(again.keys) == sorted(dataset.keys)
    assert sorted(p.name for p in tokens.glob("shard-*")) == before


def test_encode_stops_on_a_bad_file_when_asked(checkpoint, photos, tmp_path, capsys):
    args = ["encode", str(checkpoint), str(photos), "-o", str(tmp_path / "t"), "--device", "cpu"]
    assert main([*args, "--on-error", "stop", "--batch-size", "1"]) == Stopped.exit_status
    assert re.search(r"mediatok encode: stopped at .*broken\.jpg", capsys.readouterr().err)


def test_decode_writes_one_image_per_source_file(checkpoint, photos, tmp_path):
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    main(["encode", str(checkpoint), str(photos), "-o", str(tokens), "--device", "cpu"])
    assert main(["decode", str(checkpoint), str(tokens), "-o", str(out), "--device", "cpu"]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["camera.png", "chelsea.png", "sub/rocket.png"]
    with Image.open(out / "sub" / "rocket.png") as image:
        assert image.size == (32, 32) and image.mode == "RGB"


def run_eval(checkpoint: Path, photos: Path, out: Path, *extra: str) -> dict:
    (photos / "broken.jpg").unlink()
    args = ["eval", str(checkpoint), str(photos), "-o", str(out), "--device", "cpu", *extra]
    assert main(args) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_images"] == 3
    assert 0 < report["psnr"] < 100 and -1 <= report["ssim"] <= 1
    assert 0 < report["codebook_usage"] <= 1
    return report


@pytest.mark.slow  # the 2048-d matrix square root of FID takes ~15 s on two cores
def test_eval_computes_rfid(checkpoint, photos, tmp_path):
    report = run_eval(checkpoint, photos, tmp_path / "report")
    assert report["rfid"] is not None and report["rfid"] >= 0


def test_eval_writes_a_report_and_a_grid(checkpoint, photos, tmp_path):
    out = tmp_path / "report"
    report = run_eval(checkpoint, photos, out, "--no-fid")
    assert report["rfid"] is None
    with Image.open(out / "reconstructions.png") as grid:
        assert grid.size[1] == 32 and grid.size[0] == 32 * 2 * 4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": -1}, "expected limit to be a positive integer, got -1"),
        ({"limit": 0}, "expected limit to be a positive integer, got 0"),
        ({"batch_size": 0}, "expected batch_size to be a positive integer, got 0"),
    ],
)
def test_evaluate_codec_rejects_bad_sizes(checkpoint, photos, tmp_path, options, message):
    from mediatok.api import evaluate_codec, load

    with pytest.raises(ValueError, match=message):
        evaluate_codec(checkpoint, photos, tmp_path / "report", **options)
    with pytest.raises(ValueError, match=message):  # a loaded codec too
        evaluate_codec(load(checkpoint), photos, tmp_path / "report", **options)


TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "image" / "titok-tiny.yaml"


def losses(run: Path) -> dict[int, float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_a_mistake_in_what_the_user_gave_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDIATOK_TRACEBACK")  # set for every test by conftest.py
    assert main(["train", str(TINY_CONFIG), "train.lrr=1e-3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("mediatok train: error: override 'train.lrr=1e-3': unknown key")
    assert "did you mean 'lr'?" in error and "Traceback" not in error
    assert main(["decode", str(tmp_path / "missing"), str(tmp_path), "-o", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("mediatok decode: error: ")
    monkeypatch.setenv("MEDIATOK_TRACEBACK", "1")  # for a bug report: the whole traceback
    with pytest.raises(ValueError, match="unknown key"):
        main(["train", str(TINY_CONFIG), "train.lrr=1e-3"])


def test_train_two_steps_then_resume_gives_the_same_losses(tmp_path):
    """The real CLI on shipped photos: a run stopped after 2 steps and resumed to 4 matches one
    that never stopped (k-means init, EMA codebook, discriminator and LeCam state included)."""
    common = [f"data.train_dir={ASSETS}", "train.schedule=constant", "train.tensorboard=false"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["train", str(TINY_CONFIG), *common, f"train.out_dir={whole}"]) == 0
    assert (
        main(["train", str(TINY_CONFIG), *common, f"train.out_dir={parts}", "train.steps=2"]) == 0
    )
    with pytest.raises(ValueError, match="resume"):  # no silent overwrite of a run
        main(["train", str(TINY_CONFIG), *common, f"train.out_dir={parts}"])
    # The run resumes with its saved settings (train.steps=2): extending it is an override.
    resumed = ["train", str(TINY_CONFIG), f"train.out_dir={parts}", "train.steps=4", "--resume"]
    assert main(resumed) == 0
    expected, got = losses(whole), losses(parts)
    assert expected[3] == got[3] and expected[4] == got[4]
    codec = load_codec(parts / "checkpoint")
    assert codec.name == "titok" and codec.config.num_tokens == 8


def test_a_trained_checkpoint_loads_with_the_weights_it_trained(tmp_path):
    """What `mediatok train` writes, `mediatok.load` reads through the same checkpoint module:
    the loaded codec (EMA weights, or the last training weights) gives the trained model's
    outputs bit for bit."""
    import mediatok
    from mediatok.training.run import train_from_config

    overrides = [
        f"data.train_dir={ASSETS}",
        "train.tensorboard=false",
        "train.steps=2",
        "train.ema_decay=0.9",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    trainer = train_from_config(TINY_CONFIG, overrides)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    for ema, trained in ((True, trainer.ema.module), (False, trainer.model)):
        loaded = mediatok.load(tmp_path / "run" / "checkpoint", ema=ema)
        trained.eval()
        with torch.no_grad():
            expected, got = trained.encode(images), loaded.encode(images)
            assert torch.equal(got.codes, expected.codes)
            assert torch.equal(loaded.decode(got), trained.decode(expected))


@pytest.mark.slow  # inductor compiles for ~25 s on two cores
def test_compiled_training_matches_eager(tmp_path):
    common = [f"data.train_dir={ASSETS}", "train.tensorboard=false", "train.steps=2"]
    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    assert main(["train", str(TINY_CONFIG), *common, f"train.out_dir={eager}"]) == 0
    args = ["train", str(TINY_CONFIG), *common, f"train.out_dir={compiled}", "train.compile=true"]
    assert main(args) == 0
    for step, loss in losses(eager).items():
        assert losses(compiled)[step] == pytest.approx(loss, rel=1e-4)


def encode_images(checkpoint: Path, photos: Path, tokens: Path, *extra: str) -> int:
    args = ["encode", str(checkpoint), str(photos), "-o", str(tokens), "--device", "cpu"]
    return main([*args, *extra])


def test_decode_gives_sources_with_the_same_stem_their_own_files(checkpoint, tmp_path):
    """`x.png` and `x.jpg` (and the same in a sub-folder) must not decode over each other."""
    photos, tokens, out = tmp_path / "photos", tmp_path / "tokens", tmp_path / "decoded"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(ASSETS / "chelsea.png", photos / "x.png")
    shutil.copy(ASSETS / "rocket.jpg", photos / "x.jpg")
    shutil.copy(ASSETS / "rocket.jpg", photos / "sub" / "y.jpeg")
    shutil.copy(ASSETS / "chelsea.png", photos / "sub" / "y.webp")
    assert encode_images(checkpoint, photos, tokens) == 0
    args = ["decode", str(checkpoint), str(tokens), "-o", str(out), "--device", "cpu"]
    assert main(args) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["sub/y.jpeg.png", "sub/y.webp.png", "x.jpg.png", "x.png"]
    codec = load_codec(checkpoint)
    dataset = TokenDataset(tokens)
    for key, name in (("x.jpg", "x.jpg.png"), ("x.png", "x.png")):
        decoded = codec.decode(dataset[dataset.keys.index(key)]["codes"][None])[0]
        expected = ((decoded.clamp(-1, 1) + 1) * 127.5).round()
        with Image.open(out / name) as image:
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
        assert (pixels - expected).abs().max() <= 1, key  # batched vs alone: rounding only
    assert main(args) == 0  # a rerun finds all four and writes nothing


def test_encode_stopped_by_a_bad_file_keeps_its_work_but_claims_no_finished_directory(
    checkpoint, photos, tmp_path, capsys
):
    tokens = tmp_path / "tokens"
    # listing order: broken.jpg, camera.jpg, chelsea.png, sub/rocket.jpg; break the third
    (photos / "broken.jpg").unlink()
    shutil.copy(ASSETS / "chelsea.png", photos / "a.png")
    (photos / "chelsea.png").write_bytes(b"not a png")
    stop = encode_images(checkpoint, photos, tokens, "--on-error", "stop", "--batch-size", "1")
    assert stop == Stopped.exit_status
    assert re.search(r"stopped at .*chelsea\.png", capsys.readouterr().err)
    # the two images encoded before the stop are on disk, but no manifest.json says the
    # directory is complete: a reader must not take the first half of a folder for all of it
    assert not (tokens / "manifest.json").exists()
    part = json.loads((tokens / "manifest-r000.json").read_text())
    assert part["complete"] is False and sum(s["num_samples"] for s in part["shards"]) == 2
    with pytest.raises(ValueError, match=r"interrupted.*rerun `mediatok encode`") as error:
        TokenDataset(tokens)
    assert "merge_manifests" not in str(error.value)  # it would fail: the writer is not closed
    shutil.copy(ASSETS / "chelsea.png", photos / "chelsea.png")  # fixed: the rerun finishes
    assert encode_images(checkpoint, photos, tokens, "--on-error", "stop") == 0
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.png", "camera.jpg", "chelsea.png", "sub/rocket.jpg"]
    assert dataset.skipped == []


def encode_as_ranks(monkeypatch, checkpoint: Path, photos: Path, tokens: Path) -> None:
    """`mediatok encode` as two torchrun ranks run it, one after the other (rank 1 first, so
    that rank 0 merges after both, as after the barrier). A collective while encoding would hang
    real ranks that encode different numbers of batches: here it fails."""
    import torch.distributed as dist

    joined: list[bool] = []  # a process group exists

    def no_collective(*args, **kwargs):
        raise AssertionError("a collective while encoding: ranks with unequal work would hang")

    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: joined.append(True))
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 2)
    monkeypatch.setattr(dist, "all_reduce", no_collective)
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (1, 0):
        joined.clear()
        monkeypatch.setattr(dist, "get_rank", lambda *args, rank=rank, **kwargs: rank)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        assert encode_images(checkpoint, photos, tokens, "--batch-size", "4") == 0


def test_ranks_resuming_after_new_files_arrive_encode_only_the_new_ones(
    checkpoint, tmp_path, monkeypatch
):
    photos, tokens = tmp_path / "photos", tmp_path / "tokens"
    photos.mkdir()
    for name in ("b", "c", "e", "h"):
        shutil.copy(ASSETS / "chelsea.png", photos / f"{name}.png")
    encode_as_ranks(monkeypatch, checkpoint, photos, tokens)
    shards = {path.name: path.stat().st_mtime_ns for path in tokens.glob("shard-*")}
    assert sorted(shards) == ["shard-r000-00000.safetensors", "shard-r001-00000.safetensors"]
    shutil.copy(ASSETS / "rocket.jpg", photos / "a.jpg")  # sorts first: shifts every rank's share
    encode_as_ranks(monkeypatch, checkpoint, photos, tokens)
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.jpg", "b.png", "c.png", "e.png", "h.png"]
    dataset.verify()
    new = {path.name: path.stat().st_mtime_ns for path in tokens.glob("shard-*")}
    assert {name: new[name] for name in shards} == shards and len(new) == len(shards) + 1


@pytest.mark.parametrize(
    "option",
    [
        ["encode", "--batch-size", "0"],
        ["encode", "--shard-size", "0"],
        ["encode", "--chunk-seconds", "0"],
        ["decode", "--batch-size", "0"],
        ["decode", "--chunk-tokens", "-1"],
    ],
)
def test_encode_and_decode_refuse_bad_sizes_before_starting(tmp_path, capsys, option):
    command, *rest = option
    with pytest.raises(SystemExit):
        main([command, "ckpt", str(tmp_path), "-o", str(tmp_path / "out"), *rest])
    assert f"{rest[0]}: expected" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
