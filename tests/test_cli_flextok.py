"""FlexTok through the commands: `train` with the flow objective, `encode --tokens K` (any
prefix is a sample), `decode`/`eval` with the flow decoder's settings (`--steps --cfg --seed`),
the k-curve of `eval`, and an AR generator on FlexTok shards that stops at k tokens."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mediatok.cli import main
from mediatok.codecs import build_codec, load_codec
from mediatok.tokens import TokenDataset
from tiny_configs import FLEXTOK, TITOK
from tiny_configs import GENERATOR as TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "images"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return build_codec("flextok", FLEXTOK).save_pretrained(tmp_path_factory.mktemp("ft") / "ckpt")


def run(*args: str) -> int:
    return main([*args, "--device", "cpu"])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_the_flextok_task_trains_and_its_checkpoint_decodes_prefixes(tmp_path):
    config = tmp_path / "flextok.yaml"
    loop = {"steps": 2, "batch_size": 4, "num_workers": 0, "device": "cpu", "log_every": 1}
    loop |= {"eval_every": 2, "tensorboard": False, "out_dir": str(tmp_path / "run")}
    run_config = {
        "task": "flextok",
        "model": FLEXTOK,
        "data": {"train_dir": str(PHOTOS), "val_images": 2},
        "loss": {"eval_steps": 2, "eval_tokens": [1, 8]},
        "train": loop,
    }
    config.write_text(json.dumps(run_config))
    assert main(["train", str(config)]) == 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert "train/flow" in records[0] and "train/kept_tokens" in records[0]
    assert {"eval/psnr_k1", "eval/psnr_k8"} <= set(records[-1])
    assert (tmp_path / "run" / "prefixes-0000002.png").is_file()
    codec = load_codec(tmp_path / "run" / "checkpoint")
    assert codec.name == "flextok"
    wrong = {**run_config, "codec": "titok", "model": TITOK}
    wrong["train"] = {**loop, "out_dir": str(tmp_path / "titok-run")}
    config.write_text(json.dumps(wrong))
    with pytest.raises(ValueError, match="task: flextok trains a FlexTok-style codec"):
        main(["train", str(config)])


def test_encode_a_prefix_and_decode_it_with_the_flow_settings(checkpoint, tmp_path):
    tokens, decoded = tmp_path / "tokens", tmp_path / "decoded"
    assert run("encode", str(checkpoint), str(PHOTOS), "-o", str(tokens), "--tokens", "3") == 0
    dataset = TokenDataset(tokens)
    assert dataset.spec.geometry["prefix_decodable"] is True
    assert all(dataset[i]["codes"].shape == (3,) for i in range(len(dataset)))
    codec = load_codec(checkpoint)
    full = codec.encode(torch.zeros(1, 3, 16, 16)).codes
    assert full.shape == (1, 8)
    args = ["decode", str(checkpoint), str(tokens), "-o", str(decoded), "--steps", "2"]
    assert run(*args, "--seed", "1") == 0
    first = pixels(decoded / "chelsea.png")
    assert run(*args, "--seed", "1", "--cfg", "2.0") == 0  # same tokens, other settings: kept
    assert np.array_equal(pixels(decoded / "chelsea.png"), first)
    assert (
        run(
            "decode",
            str(checkpoint),
            str(tokens),
            "-o",
            str(tmp_path / "again"),
            "--steps",
            "2",
            "--seed",
            "1",
        )
        == 0
    )
    assert np.array_equal(pixels(tmp_path / "again" / "chelsea.png"), first)  # seeded


def test_prefixes_and_flow_settings_are_refused_for_other_codecs(tmp_path):
    torch.manual_seed(0)
    titok = build_codec("titok", TITOK).save_pretrained(tmp_path / "titok")
    with pytest.raises(ValueError, match="whose tokens decode from any prefix for num_tokens"):
        run("encode", str(titok), str(PHOTOS), "-o", str(tmp_path / "t"), "--tokens", "4")
    assert run("encode", str(titok), str(PHOTOS), "-o", str(tmp_path / "t")) == 0
    with pytest.raises(ValueError, match=r"expected decode settings that titok takes \(none\)"):
        run("decode", str(titok), str(tmp_path / "t"), "-o", str(tmp_path / "d"), "--steps", "4")


def test_eval_scores_every_prefix_length(checkpoint, tmp_path):
    out = tmp_path / "report"
    assert (
        run("eval", str(checkpoint), str(PHOTOS), "-o", str(out), "--no-fid", "--steps", "2") == 0
    )
    report = json.loads((out / "metrics.json").read_text())
    assert [point["k"] for point in report["k_curve"]] == [1, 2, 4, 8]
    assert all(np.isfinite(point["psnr"]) for point in report["k_curve"])
    assert report["k_curve"][-1]["psnr"] == report["psnr"]  # all 8 tokens: the reconstruction
    assert json.loads((out / "k_curve.json").read_text()) == report["k_curve"]
    with Image.open(out / "k_grid.png") as grid:
        assert grid.size == (16 * (1 + 4), 16 * 6)  # the original, then k = 1, 2, 4, 8; 6 rows
    assert (out / "k_curve.png").is_file()
    page = (out / "report.html").read_text()
    assert "<h2>Decoded from the first k tokens</h2>" in page
    assert "decoded from its first 1, 2, 4, 8 tokens" in page and "k = 8: " in page


def test_an_ar_generator_on_flextok_tokens_stops_at_k(checkpoint, tmp_path):
    tokens = tmp_path / "tokens"
    assert run("encode", str(checkpoint), str(PHOTOS), "-o", str(tokens)) == 0
    config = tmp_path / "gen.yaml"
    loop = {"steps": 2, "batch_size": 2, "num_workers": 0, "device": "cpu"}
    config.write_text(
        json.dumps(
            {
                "task": "generator",
                "generator": "ar",
                "model": TINY_MODEL,
                "data": {"tokens": str(tokens)},
                "codec": str(checkpoint),
                "train": {**loop, "tensorboard": False, "out_dir": str(tmp_path / "gen")},
            }
        )
    )
    assert main(["train", str(config)]) == 0
    samples = tmp_path / "samples"
    args = ["sample", str(tmp_path / "gen" / "checkpoint"), "-n", "2", "-o", str(samples)]
    assert run(*args, "--tokens", "3", "--decode-steps", "2") == 0
    stored = TokenDataset(samples / "tokens")
    assert [stored[i]["codes"].shape for i in range(2)] == [(3,), (3,)]
    assert len(list(samples.glob("sample-*.png"))) == 2
