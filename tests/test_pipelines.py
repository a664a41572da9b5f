"""The modality table, the pipelines' options, the checkpoint reader and the device resolution:
each refuses bad input with a message that says what was expected and what came."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mediatok.checkpoint import read_checkpoint, save_checkpoint
from mediatok.codecs import build_codec
from mediatok.modalities import (
    AUDIO,
    IMAGE,
    MODALITIES,
    DecodeOptions,
    EncodeOptions,
    EvalOptions,
    modality_of,
)
from mediatok.pipelines import decode_folder, encode_folder, evaluate_codec
from mediatok.runtime import resolve_device, torchrun_rank
from mediatok.tokens import TokenSpec
from tiny_configs import TITOK as TINY_TITOK

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture
def titok():
    torch.manual_seed(0)
    return build_codec("titok", TINY_TITOK).eval()


def test_every_codec_finds_its_entry_and_an_unknown_modality_is_named(titok, monkeypatch):
    assert modality_of(titok) is IMAGE and set(MODALITIES) == {"image", "audio"}
    monkeypatch.setattr(type(titok), "modality", "video")
    with pytest.raises(ValueError, match=r"titok codes video, which has no entry .* audio, image"):
        modality_of(titok)
    with pytest.raises(TypeError, match="expected a codec, got Linear"):
        modality_of(torch.nn.Linear(2, 2))


def test_an_entry_names_the_geometry_a_spec_lacks():
    spec = TokenSpec([64], layout="T", geometry={"sample_rate": 24000})
    assert IMAGE.geometry(TokenSpec([8], geometry={"image_size": 32})) == {"image_size": 32}
    with pytest.raises(ValueError, match=r"^ckpt: expected audio tokens whose spec records "):
        AUDIO.geometry(spec, "ckpt")
    with pytest.raises(ValueError, match="hop_length in its geometry, got geometry"):
        AUDIO.geometry(spec)


def test_decoded_media_formats_belong_to_the_modality():
    assert IMAGE.suffix(None) == ".png" and AUDIO.suffix(None) == ".wav"
    assert AUDIO.suffix("flac") == ".flac"
    with pytest.raises(ValueError, match=r"format of decoded images to be one of 'png', got 'wav'"):
        IMAGE.suffix("wav")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: EncodeOptions(batch_size=0), "batch_size to be a positive integer, got 0"),
        (lambda: EncodeOptions(crop="random_resized"), "crop to be one of 'center', 'random'"),
        (lambda: EncodeOptions(chunk_seconds=float("inf")), "chunk_seconds finite and > 0"),
        (lambda: DecodeOptions(batch_size=-1), "batch_size to be a positive integer, got -1"),
        (lambda: DecodeOptions(chunk_tokens=-1), "chunk_tokens an integer >= 0, got -1"),
        (lambda: EvalOptions(limit=0), "limit to be a positive integer, got 0"),
        (lambda: EvalOptions(grid_pairs=0), "grid_pairs to be a positive integer, got 0"),
    ],
)
def test_options_refuse_bad_values(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_pipelines_refuse_what_does_not_fit_before_any_work(titok, tmp_path):
    checkpoint = titok.save_pretrained(tmp_path / "codec")
    tokens = tmp_path / "tokens"
    with pytest.raises(ValueError, match="on_error to be one of 'skip', 'stop', got 'ignore'"):
        encode_folder(checkpoint, ASSETS / "images", tokens, on_error="ignore", device="cpu")
    assert not tokens.exists()
    result = encode_folder(checkpoint, ASSETS / "images", tokens, device="cpu")
    assert (result.encoded, result.total, result.noun) == (6, 6, "images")
    out = tmp_path / "decoded"
    with pytest.raises(ValueError, match="format of decoded images to be one of 'png'"):
        decode_folder(checkpoint, tokens, out, options=DecodeOptions(format="flac"), device="cpu")
    assert decode_folder(checkpoint, tokens, out, device="cpu").written == 6
    with pytest.raises(ValueError, match=r"expected an audio codec for DNSMOS .* got modality"):
        evaluate_codec(checkpoint, ASSETS / "images", tmp_path / "r", fid=False, dnsmos=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'fidd'"):
        evaluate_codec(checkpoint, ASSETS / "images", tmp_path / "r", fidd=False)


def test_the_checkpoint_reader_names_the_file_and_what_it_holds(titok, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not a codec checkpoint \(no config\.json\)"):
        read_checkpoint(tmp_path / "missing", kind="codec")
    checkpoint = titok.save_pretrained(tmp_path / "codec")
    config = read_checkpoint(checkpoint, kind="codec")
    assert config.run["codec"] == "titok" and config.step is None
    with pytest.raises(ValueError, match=r"expected a generator checkpoint \(kind 'generator'\)"):
        read_checkpoint(checkpoint, kind="generator")
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(
        ValueError, match=r"config\.json: expected a checkpoint's config, got a dam"
    ):
        read_checkpoint(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({"codec": "titok", "config": {}}))
    with pytest.raises(ValueError, match=r"expected a checkpoint's config \('kind' and 'run'"):
        read_checkpoint(checkpoint)
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(tmp_path / "bad", titok, kind="codec", run={"x": object()})
    assert not (tmp_path / "bad").exists()


def test_devices_are_named_and_checked(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"expected a device among 'auto', 'cpu', 'cuda' .* 'gpu'"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="expected a CUDA device for device 'cuda:1', but torch"):
        resolve_device("cuda:1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="expected RANK beside WORLD_SIZE=2; launch with torch"):
        torchrun_rank()
    monkeypatch.setenv("RANK", "1")
    assert torchrun_rank() == (1, 2)
