"""The modality table, the pipelines' options, the checkpoint reader and the device resolution:
each refuses bad input with a message that says what was expected and what came."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from mediatok.checkpoint import read_checkpoint, save_checkpoint, weights_sha256
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
from tiny_configs import WAVTOKENIZER as TINY_WAVTOKENIZER

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture
def titok():
    torch.manual_seed(0)
    return build_codec("titok", TINY_TITOK).eval()


def test_every_codec_finds_its_entry_and_an_unknown_modality_is_named(titok, monkeypatch):
    assert modality_of(titok) is IMAGE and set(MODALITIES) == {"image", "audio", "video"}
    monkeypatch.setattr(type(titok), "modality", "lidar")
    with pytest.raises(
        ValueError, match=r"titok codes lidar, which has no entry .* audio, image, video"
    ):
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


def test_the_commands_offer_the_decoded_formats_of_the_modality_table():
    from mediatok.cli import DECODED_FORMATS
    from mediatok.modalities import MODALITIES

    table = [name for entry in MODALITIES.values() for name in entry.formats]
    assert sorted(DECODED_FORMATS) == sorted(table)
    defaults = {entry.noun: entry.formats[0] for entry in MODALITIES.values()}
    assert defaults == {"images": "png", "files": "wav", "videos": "mp4"}  # as --help says


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
    # A decode setting of sampling codecs, for codecs of every modality that take none.
    audio = build_codec("wavtokenizer", TINY_WAVTOKENIZER).save_pretrained(tmp_path / "audio")
    for codec, media in ((checkpoint, "images"), (audio, "speech-val")):
        with pytest.raises(ValueError, match=r"decode settings that \w+ takes \(none\), got steps"):
            evaluate_codec(codec, ASSETS / media, tmp_path / "r", codec_settings={"steps": 4})
    assert not (tmp_path / "r").exists()


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


def png_pixels(folder: Path) -> dict[str, torch.Tensor]:
    """Every PNG under `folder` as `(3, H, W)` uint8, by relative path."""
    from mediatok.data import read_image

    return {p.relative_to(folder).as_posix(): read_image(p) for p in sorted(folder.rglob("*.png"))}


def test_decoding_with_a_retrained_decoder_replaces_every_file(titok, tmp_path):
    """A folder decoded by checkpoint A and decoded again by B (a retrained decoder) used to
    keep A's files ("decoded 0 images (6 already there)"): the index keyed on the codes alone.
    Tokens that another checkpoint encoded used to be decoded with a warning only."""
    from mediatok.pipelines.decode import DECODE_INDEX

    first = titok.save_pretrained(tmp_path / "a")
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    encode_folder(first, ASSETS / "images", tokens, device="cpu")
    result = decode_folder(first, tokens, out, device="cpu")
    assert (result.written, result.total, result.redecoded) == (6, 6, 0)
    before = png_pixels(out)
    again = decode_folder(first, tokens, out, device="cpu")
    assert (again.written, again.redecoded) == (0, 0)
    assert again.summary() == f"decoded 0 images into {out} (6 already there)"

    with torch.no_grad():  # "retrained": every weight moved a little
        for parameter in titok.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    second = titok.save_pretrained(tmp_path / "b")
    with pytest.raises(ValueError, match=r"encoded by another checkpoint of titok .* \(--force\)"):
        decode_folder(second, tokens, out, device="cpu")
    assert png_pixels(out).keys() == before.keys()
    assert all(torch.equal(png_pixels(out)[name], before[name]) for name in before)

    result = decode_folder(second, tokens, out, device="cpu", force=True)
    assert (result.written, result.redecoded) == (6, 6)
    assert "6 decoded before by another checkpoint, replaced" in result.summary()
    after = png_pixels(out)
    assert after.keys() == before.keys()
    assert all(not torch.equal(after[name], before[name]) for name in before)
    index = json.loads((out / DECODE_INDEX).read_text())
    assert {entry["checkpoint"] for entry in index["files"].values()} == {weights_sha256(second)}
    assert decode_folder(second, tokens, out, device="cpu", force=True).written == 0
    # back to the encoder's own checkpoint: no --force needed, and B's files are replaced
    assert decode_folder(first, tokens, out, device="cpu").redecoded == 6
    assert all(torch.equal(png_pixels(out)[name], before[name]) for name in before)


def test_a_decode_index_without_checkpoints_decodes_again(titok, tmp_path):
    """An index that `mediatok decode` wrote before it recorded checkpoints (version 1) does
    not say who decoded its files: they are decoded again, not trusted."""
    from mediatok.pipelines.decode import DECODE_INDEX

    checkpoint = titok.save_pretrained(tmp_path / "codec")
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    encode_folder(checkpoint, ASSETS / "images", tokens, device="cpu")
    decode_folder(checkpoint, tokens, out, device="cpu")
    index = json.loads((out / DECODE_INDEX).read_text())
    for entry in index["files"].values():
        del entry["checkpoint"]
    (out / DECODE_INDEX).write_text(json.dumps({**index, "format_version": 1}))
    result = decode_folder(checkpoint, tokens, out, device="cpu")
    assert (result.written, result.redecoded) == (6, 6)
    (out / DECODE_INDEX).write_text(
        json.dumps({"files": {"a.png": {"file": "a.png", "codes": "x", "checkpoint": 3}}})
    )
    with pytest.raises(ValueError, match="codes digest and checkpoint\\), got a damaged file"):
        decode_folder(checkpoint, tokens, out, device="cpu")


def saved_generator(tmp_path: Path, codec, num_classes: int = 0) -> Path:
    """An untrained tiny AR generator over `codec`'s tokens, saved as training saves one."""
    from mediatok.generation import build_generator
    from tiny_configs import GENERATOR

    codec_path = codec.save_pretrained(tmp_path / "gen-codec")
    model = build_generator("ar", {**GENERATOR, "num_classes": num_classes}, codec.token_spec, (8,))
    run = {
        "generator": "ar",
        "model": {**GENERATOR, "num_classes": num_classes},
        "spec": codec.token_spec.to_dict(),
        "token_shape": [8],
        "codec": str(codec_path),
        "sample": {},
    }
    return save_checkpoint(tmp_path / "generator", model, kind="generator", run=run)


def test_a_negative_seed_is_refused(titok, tmp_path):
    # `--seed -1` used to sample as seed 2**64 - 1 (batch_seed took it modulo 2**64).
    from mediatok.pipelines import batch_seed, sample

    checkpoint = saved_generator(tmp_path, titok)
    assert sample(checkpoint, 2, seed=2**64 - 1).codes.shape == (2, 8)
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match=re.escape(f"integer in [0, 2**64), got {seed!r}")):
            sample(checkpoint, 2, seed=seed)
    with pytest.raises(ValueError, match=r"got -1"):
        batch_seed(-1, 0)


def test_written_samples_come_with_a_grid_one_row_per_class(titok, tmp_path):
    """`mediatok sample` wrote no grid of its own: a folder of 64 PNGs to open one by one."""
    from mediatok.data import read_image
    from mediatok.pipelines import Samples, write_samples

    codes = torch.randint(64, (5, 8))
    labels = torch.tensor([2, 0, 2, 1, 0])
    samples = Samples(codes, None, labels, titok)
    names = write_samples(samples, tmp_path / "labelled")
    grid = read_image(tmp_path / "labelled" / "grid.png")
    assert grid.shape == (3, 3 * 32, 8 * 32)  # classes 2, 0, 1 in order of appearance
    rows = {2: [0, 2], 0: [1, 4], 1: [3]}
    for row, indices in enumerate(rows.values()):
        for column, index in enumerate(indices):
            cell = grid[:, row * 32 : (row + 1) * 32, column * 32 : (column + 1) * 32]
            assert torch.equal(cell, read_image(tmp_path / "labelled" / f"{names[index]}.png"))
        assert not grid[:, row * 32 : (row + 1) * 32, len(indices) * 32 :].any()  # blank cells

    write_samples(Samples(torch.randint(64, (10, 8)), None, None, titok), tmp_path / "plain")
    assert read_image(tmp_path / "plain" / "grid.png").shape == (3, 2 * 32, 8 * 32)

    audio = build_codec("wavtokenizer", TINY_WAVTOKENIZER).eval()  # no preview: no grid.png
    write_samples(Samples(torch.randint(64, (2, 8)), None, None, audio), tmp_path / "audio")
    assert len(list((tmp_path / "audio").glob("*.wav"))) == 2
    assert not (tmp_path / "audio" / "grid.png").exists()


def test_image_evaluation_skips_or_stops_at_an_unreadable_image(titok, tmp_path):
    """An unreadable image stopped the evaluation with a bare read error; now it is listed and
    left out (the default, as in encode), or stops it naming the file."""
    import shutil

    from mediatok.pipelines import Stopped

    photos = tmp_path / "photos"
    shutil.copytree(ASSETS / "images", photos, ignore=shutil.ignore_patterns("*.md"))
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    whole = evaluate_codec(titok, ASSETS / "images", tmp_path / "whole", fid=False)
    report = evaluate_codec(titok, photos, tmp_path / "r", fid=False)
    assert report["num_images"] == whole["num_images"] == 6
    assert [entry["key"] for entry in report["skipped"]] == ["broken.png"]
    assert report["psnr"] == whole["psnr"] and report["ssim"] == whole["ssim"]
    assert report["scored"] == {"psnr": 6, "ssim": 6} and report["undefined"] == {}
    with pytest.raises(Stopped, match=r"stopped at .*broken\.png \(on_error='stop'"):
        evaluate_codec(titok, photos, tmp_path / "r2", fid=False, on_error="stop")
    assert not (tmp_path / "r2" / "metrics.json").exists()
    with pytest.raises(ValueError, match="on_error to be one of 'skip', 'stop', got 'raise'"):
        EvalOptions(on_error="raise")
