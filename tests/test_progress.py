"""Progress: one tqdm style for every job a user waits on, drawn on a terminal only, and silent
under `--quiet` (before or after the command's name), where the training's progress lines go
too."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from mediatok.cli import main
from mediatok.codecs import build_codec
from mediatok.progress import is_quiet, progress, quiet
from tiny_configs import TITOK

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "images"


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def drawn(monkeypatch, stream: io.StringIO, **options) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress(range(3), desc="work", **options):
        pass
    return stream.getvalue()


def test_a_bar_is_drawn_on_a_terminal_only_and_never_when_quiet(monkeypatch):
    assert "work: 100%" in drawn(monkeypatch, Terminal())
    assert drawn(monkeypatch, io.StringIO()) == ""  # a log file, a notebook
    assert drawn(monkeypatch, Terminal(), enabled=False) == ""  # another rank
    assert not is_quiet()
    with quiet():
        assert is_quiet()
        assert drawn(monkeypatch, Terminal()) == ""
        with quiet(False):  # `quiet(args.quiet)` without the flag keeps an outer quiet
            assert is_quiet()
    assert not is_quiet()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_codec("titok", TITOK).save_pretrained(tmp_path_factory.mktemp("titok") / "c")


@pytest.mark.parametrize("flag", ["", "before", "after"])
def test_encode_decode_and_eval_draw_bars_unless_quiet(checkpoint, tmp_path, monkeypatch, flag):
    def run(command: str, *args: str) -> str:
        stream = Terminal()
        monkeypatch.setattr(sys, "stderr", stream)
        before = ["--quiet"] if flag == "before" else []
        after = ["--quiet"] if flag == "after" else []
        assert main([*before, command, *args, "--device", "cpu", *after]) == 0
        return stream.getvalue()

    tokens, decoded, report = tmp_path / "tokens", tmp_path / "decoded", tmp_path / "report"
    printed = {
        "encode": run("encode", str(checkpoint), str(PHOTOS), "-o", str(tokens)),
        "decode": run("decode", str(checkpoint), str(tokens), "-o", str(decoded)),
        "eval": run("eval", str(checkpoint), str(PHOTOS), "-o", str(report), "--no-fid"),
    }
    for command, text in printed.items():
        assert (f"{command}: 100%" in text) is (flag == ""), (command, text)


def test_quiet_training_writes_no_progress_lines(tmp_path, capsys):
    config = ROOT / "configs" / "image" / "titok-tiny.yaml"
    common = [
        "train",
        str(config),
        f"data.train_dir={PHOTOS}",
        "train.steps=2",
        "train.log_every=1",
        "train.eval_every=0",
        "train.tensorboard=false",
    ]
    assert main([*common, f"train.out_dir={tmp_path / 'loud'}"]) == 0
    assert "mediatok train: step 2" in capsys.readouterr().err  # no terminal: lines instead
    assert main([*common, f"train.out_dir={tmp_path / 'quiet'}", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "step" not in captured.err and "trained to step 2 of 2" in captured.out
