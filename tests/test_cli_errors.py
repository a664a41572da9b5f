"""What a user's mistake on the command line gives: one line naming the flag or the install
command and exit status 2, never a traceback (`mediatok.cli.main` with MEDIATOK_TRACEBACK
unset); and the decode summary when another checkpoint decoded a folder before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mediatok.cli import main
from mediatok.codecs import build_codec
from tiny_configs import TITOK

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"


@pytest.fixture
def titok(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return build_codec("titok", TITOK).save_pretrained(tmp_path / "codec")


@pytest.fixture
def generator(tmp_path: Path, titok: Path) -> Path:
    from mediatok.checkpoint import save_checkpoint
    from mediatok.codecs import load_codec
    from mediatok.generation import build_generator
    from tiny_configs import GENERATOR

    spec = load_codec(titok).token_spec
    run = {
        "generator": "ar",
        "model": GENERATOR,
        "spec": spec.to_dict(),
        "token_shape": [8],
        "codec": str(titok),
        "sample": {},
    }
    model = build_generator("ar", GENERATOR, spec, (8,))
    return save_checkpoint(tmp_path / "generator", model, kind="generator", run=run)


def test_an_unknown_device_is_one_line_for_every_command(
    titok, generator, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("MEDIATOK_TRACEBACK")  # set for every test by conftest.py
    tokens, out = tmp_path / "tokens", str(tmp_path / "out")
    assert main(["encode", str(titok), str(ASSETS), "-o", str(tokens), "--device", "cpu"]) == 0
    capsys.readouterr()
    commands = [
        ["encode", str(titok), str(ASSETS), "-o", out],
        ["decode", str(titok), str(tokens), "-o", out],
        ["eval", str(titok), str(ASSETS), "-o", out, "--no-fid"],
        ["eval", str(ASSETS), "--reference", str(ASSETS), "-o", out],
        ["sample", str(generator), "-n", "2", "-o", out],
    ]
    for command in commands:
        assert main([*command, "--device", "foo"]) == 2, command
        err = capsys.readouterr().err
        assert err == (
            f"mediatok {command[0]}: error: expected a device among 'auto', 'cpu', 'cuda' or "
            "'cuda:N', got 'foo'\n(MEDIATOK_TRACEBACK=1 shows where it was raised)\n"
        ), command


def test_a_negative_seed_is_refused_on_the_command_line(generator, tmp_path, capsys):
    # `--seed -1` sampled as seed 2**64 - 1
    args = ["sample", str(generator), "-n", "2", "-o", str(tmp_path / "out"), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--seed", "-1"])
    assert exit_.value.code == 2
    assert "argument --seed: expected an integer >= 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--seed", "3"]) == 0
    assert (tmp_path / "out" / "grid.png").is_file()  # `mediatok sample` writes its own grid


def test_decode_with_another_checkpoint_needs_force_and_says_what_it_replaced(
    titok, tmp_path, capsys, monkeypatch
):
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    assert main(["encode", str(titok), str(ASSETS), "-o", str(tokens), "--device", "cpu"]) == 0
    decode = ["decode", str(titok), str(tokens), "-o", str(out), "--device", "cpu"]
    assert main(decode) == 0
    capsys.readouterr()
    torch.manual_seed(1)
    retrained = build_codec("titok", TITOK).save_pretrained(tmp_path / "retrained")
    monkeypatch.delenv("MEDIATOK_TRACEBACK")
    decode[1] = str(retrained)
    assert main(decode) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mediatok decode: error: {tokens} was encoded by another checkpoint")
    assert "pass force=True (--force)" in err
    assert main([*decode, "--force"]) == 0
    assert capsys.readouterr().out == (
        f"decoded 6 images into {out} (0 already there; 6 decoded before by another "
        "checkpoint, replaced)\n"
    )
