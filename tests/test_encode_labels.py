"""`mediatok encode --labels folders|FILE.csv`: class labels in the shards, their names in the
manifest, a class-conditional generator trained on them, and `mediatok sample --class NAME`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import test_cli
from mediatok.cli import main
from mediatok.generation import read_generator_run
from mediatok.pipelines import sample
from mediatok.tokens import TokenDataset, read_shard
from test_cli import ASSETS, encode_images

checkpoint = test_cli.checkpoint  # the fixture: a tiny TiTok, saved


def media_folder(root: Path, names: dict[str, str]) -> Path:
    """A folder with `names` (path relative to it -> shipped image to copy)."""
    for name, asset in names.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ASSETS / asset, root / name)
    return root


IMAGENET_LAYOUT = {
    "dog/a.png": "chelsea.png",
    "dog/b.jpg": "rocket.jpg",
    "cat/c.png": "camera.png",
    "cat/deeper/d.png": "coffee.png",  # the class is the first folder, however deep the file
}


def test_folders_give_labels_in_the_shards_and_names_in_the_manifest(checkpoint, tmp_path):
    photos = media_folder(tmp_path / "photos", IMAGENET_LAYOUT)
    tokens = tmp_path / "tokens"
    assert encode_images(checkpoint, photos, tokens, "--labels", "folders") == 0
    dataset = TokenDataset(tokens)
    assert dataset.class_names == ["cat", "dog"]  # sorted: ids are their indices
    labels = {key: dataset[i]["label"] for i, key in enumerate(dataset.keys)}
    assert labels == {"cat/c.png": 0, "cat/deeper/d.png": 0, "dog/a.png": 1, "dog/b.jpg": 1}
    assert json.loads((tokens / "manifest.json").read_text())["class_names"] == ["cat", "dog"]
    shard = read_shard(next(tokens.glob("shard-*")))
    assert shard.metadata["class_names"] == ["cat", "dog"] and shard.labels is not None
    # a rerun with another set of classes would renumber them: refused, nothing written
    media_folder(photos, {"ant/e.png": "chelsea.png"})
    files = sorted(path.name for path in tokens.iterdir())
    with pytest.raises(
        ValueError, match=r"class_names \['cat', 'dog'\] vs \['ant', 'cat', 'dog'\]"
    ):
        encode_images(checkpoint, photos, tokens, "--labels", "folders")
    # ... and so is a rerun without labels
    with pytest.raises(ValueError, match=r"class_names \['cat', 'dog'\] vs None"):
        encode_images(checkpoint, photos, tokens)
    assert sorted(path.name for path in tokens.iterdir()) == files


def test_folders_refuse_files_outside_a_class_folder(checkpoint, tmp_path):
    photos = media_folder(tmp_path / "photos", {**IMAGENET_LAYOUT, "loose.png": "chelsea.png"})
    with pytest.raises(ValueError, match=r"in a class subfolder .* 1 directly in it: loose\.png"):
        encode_images(checkpoint, photos, tmp_path / "tokens", "--labels", "folders")
    assert not (tmp_path / "tokens").exists()


def test_a_csv_names_each_file_class(checkpoint, tmp_path, capsys):
    names = {"a.png": "chelsea.png", "b.jpg": "rocket.jpg", "sub/c.png": "camera.png"}
    photos = media_folder(tmp_path / "photos", names)
    photos_csv, tokens = tmp_path / "labels.csv", tmp_path / "tokens"
    # any column order, extra columns, a leading ./, a blank line, rows for other files
    photos_csv.write_text(
        "class,path,note\ndog,a.png,x\ncat,./sub/c.png,\n\nbird,not-here.png,\n", encoding="utf-8"
    )
    # b.jpg has no row: stop refuses before anything is written, skip leaves it out
    with pytest.raises(ValueError, match=r"labels\.csv: expected a row for every file .*b\.jpg"):
        encode_images(checkpoint, photos, tokens, "--labels", str(photos_csv), "--on-error", "stop")
    assert not tokens.exists()
    assert encode_images(checkpoint, photos, tokens, "--labels", str(photos_csv)) == 0
    assert "skipped b.jpg: no row for it in" in capsys.readouterr().out
    dataset = TokenDataset(tokens)
    assert dataset.class_names == ["bird", "cat", "dog"]  # every class a row names
    assert {key: dataset[i]["label"] for i, key in enumerate(dataset.keys)} == {
        "a.png": 2,
        "sub/c.png": 1,
    }
    # a file whose class changed is encoded again with its new label
    photos_csv.write_text("path,class\na.png,bird\nsub/c.png,cat\nb.jpg,dog\n", encoding="utf-8")
    assert encode_images(checkpoint, photos, tokens, "--labels", str(photos_csv)) == 0
    assert "(1 re-encoded: changed since the last run; 3 classes)" in capsys.readouterr().out
    dataset = TokenDataset(tokens)
    assert {key: dataset[i]["label"] for i, key in enumerate(dataset.keys)} == {
        "a.png": 0,
        "b.jpg": 2,
        "sub/c.png": 1,
    }
    assert dataset.skipped == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,dog\n", r"expected a header row naming the columns 'path' and 'class'.*a\.png"),
        ("", r"expected a header row .*got an empty file"),
        ("path,class\na.png,\n", r"labels\.csv, line 2: expected a path and a class"),
        ("path,class\na.png,dog\n./a.png,cat\n", r"line 3: \./a\.png is listed twice \(line 2\)"),
    ],
)
def test_a_bad_csv_is_refused_before_anything_is_written(checkpoint, tmp_path, text, message):
    photos = media_folder(tmp_path / "photos", {"a.png": "chelsea.png"})
    labels = tmp_path / "labels.csv"
    labels.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        encode_images(checkpoint, photos, tmp_path / "tokens", "--labels", str(labels))
    with pytest.raises(FileNotFoundError, match=r"--labels folders or a CSV file.*nothing\.csv"):
        encode_images(checkpoint, photos, tmp_path / "t", "--labels", str(tmp_path / "nothing.csv"))
    assert not (tmp_path / "tokens").exists()


def test_a_generator_trained_on_class_folders_samples_a_class_by_name(checkpoint, tmp_path):
    """The README's class-conditional route, end to end: encode --labels folders, train with
    CFG, sample --class NAME."""
    from test_cli_generation import train

    photos = media_folder(tmp_path / "photos", IMAGENET_LAYOUT)
    tokens = tmp_path / "tokens"
    assert encode_images(checkpoint, photos, tokens, "--labels", "folders") == 0
    generator = train(tmp_path, "ar", tokens, checkpoint, sample={"cfg_scale": 2.0})
    run = json.loads((generator / "config.json").read_text())["run"]
    assert run["class_names"] == ["cat", "dog"] and run["model"]["num_classes"] == 2
    assert read_generator_run(generator).model["num_classes"] == 2
    out = tmp_path / "samples"
    args = ["sample", str(generator), "-n", "2", "--device", "cpu", "--cfg", "2.0"]
    assert main([*args, "--class", "dog", "-o", str(out)]) == 0
    assert sorted(path.name for path in out.glob("class-*.png")) == [
        "class-0001-sample-00000.png",
        "class-0001-sample-00001.png",
    ]
    assert sample(generator, 2, label="cat").labels.tolist() == [0, 0]
    assert sample(generator, 2, label="1").labels.tolist() == [1, 1]  # an id still works
    assert torch.equal(sample(generator, 1, label=1).codes, sample(generator, 1, label="dog").codes)
    with pytest.raises(
        ValueError, match=r"expected a class name or id, one of cat, dog; got 'fox'"
    ):
        main([*args, "--class", "fox", "-o", str(tmp_path / "fox")])
    with pytest.raises(ValueError, match=r"expected a class in \[0, 2\) \(cat, dog\), got 2"):
        sample(generator, 1, label=2)
