"""`mediatok encode|decode|eval` edge cases: reruns with another number of ranks or another input
folder, SIGTERM, keys that would leave the output folder, incremental decodes, damaged codes, a
second job into a directory being written, sources that changed since they were encoded."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test_cli
from mediatok.cli import main
from mediatok.codecs import load_codec
from mediatok.tokens import TokenDataset, TokenFileError, TokenWriter, TokenWriterBusy, read_shard
from mediatok.tokens.written import written_samples
from test_cli import ASSETS, encode_images
from test_tokens_damage import codes_location, rewrite_codes

checkpoint = test_cli.checkpoint  # the fixture: a tiny TiTok, saved


def as_rank(monkeypatch, rank: int, world: int) -> None:
    """Make the next `mediatok encode` run as torchrun rank `rank` of `world` would: no process
    group while encoding, and a barrier that returns at once."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: None)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: None)
    for name, value in (("WORLD_SIZE", world), ("RANK", rank), ("LOCAL_RANK", rank)):
        monkeypatch.setenv(name, str(value))


def photo_folder(root: Path, names: dict[str, str]) -> Path:
    """A folder with `names` (file name -> shipped image to copy)."""
    root.mkdir(parents=True)
    for name, asset in names.items():
        shutil.copy(ASSETS / asset, root / name)
    return root


def decoded_pixels(codec, dataset: TokenDataset, key: str) -> torch.Tensor:
    """`(3, H, W)` float pixels that `key`'s codes decode to, as `mediatok decode` writes them."""
    decoded = codec.decode(dataset[dataset.keys.index(key)]["codes"][None])[0]
    return ((decoded.clamp(-1, 1) + 1) * 127.5).round()


def file_pixels(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


def decode(checkpoint: Path, tokens: Path, out: Path) -> int:
    return main(["decode", str(checkpoint), str(tokens), "-o", str(out), "--device", "cpu"])


# ------------------------------------------------------------------------------------------
# 1. a rerun with another number of ranks


def test_single_process_rerun_after_two_ranks_encodes_nothing_twice(
    checkpoint, tmp_path, monkeypatch
):
    # b and c go to rank 1 of 2, h and i to rank 0
    names = {f"{name}.png": "chelsea.png" for name in "bchi"}
    photos, tokens = photo_folder(tmp_path / "photos", names), tmp_path / "tokens"
    for rank in (1, 0):
        as_rank(monkeypatch, rank, 2)
        assert encode_images(checkpoint, photos, tokens) == 0
    shards = sorted(path.name for path in tokens.glob("shard-*"))
    as_rank(monkeypatch, 0, 1)
    assert encode_images(checkpoint, photos, tokens) == 0
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == sorted(names)  # rank 1's files are not encoded again
    dataset.verify()
    assert sorted(path.name for path in tokens.glob("shard-*")) == shards


def test_single_process_finishes_what_an_interrupted_two_rank_run_left(
    checkpoint, tmp_path, monkeypatch, capsys
):
    # a and b go to rank 1 of 2, h and i to rank 0; rank 1 stops at b, rank 0 never ran
    names = {"a.png": "chelsea.png", "b.png": "rocket.jpg", "h.png": "chelsea.png"}
    photos, tokens = photo_folder(tmp_path / "photos", names), tmp_path / "tokens"
    shutil.copy(ASSETS / "camera.png", photos / "i.png")
    (photos / "b.png").write_bytes(b"not a png")
    as_rank(monkeypatch, 1, 2)
    stop = encode_images(checkpoint, photos, tokens, "--on-error", "stop", "--batch-size", "1")
    assert stop == 1 and re.search(r"stopped at .*b\.png", capsys.readouterr().err)
    part = json.loads((tokens / "manifest-r001.json").read_text())
    assert part["complete"] is False and part["shards"][0]["num_samples"] == 1  # a.png
    shutil.copy(ASSETS / "chelsea.png", photos / "b.png")  # fixed: one process finishes
    as_rank(monkeypatch, 0, 1)
    assert encode_images(checkpoint, photos, tokens) == 0
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.png", "b.png", "h.png", "i.png"]
    assert dataset.skipped == []  # rank 1 skipped b.png, the rerun encoded it
    dataset.verify()


# ------------------------------------------------------------------------------------------
# 2. another input folder into the same token directory


def test_encode_refuses_a_second_input_folder_and_resumes_the_first(checkpoint, tmp_path):
    first = photo_folder(tmp_path / "first", {"x.png": "chelsea.png"})
    second = photo_folder(tmp_path / "second", {"x.png": "rocket.jpg", "y.png": "camera.png"})
    tokens = tmp_path / "tokens"
    assert encode_images(checkpoint, first, tokens) == 0
    # second/x.png is not first/x.png: it must not be skipped as done
    with pytest.raises(ValueError, match=r"tokens of the files in .*first.*got .*second") as error:
        encode_images(checkpoint, second, tokens)
    assert str(tokens) in str(error.value)
    assert TokenDataset(tokens).keys == ["x.png"]
    assert TokenDataset(tokens).metadata["source_dir"] == str(first.resolve())
    # the same folder under another spelling resumes
    shutil.copy(ASSETS / "camera.png", first / "z.png")
    assert encode_images(checkpoint, tmp_path / "second" / ".." / "first", tokens) == 0
    assert sorted(TokenDataset(tokens).keys) == ["x.png", "z.png"]


# ------------------------------------------------------------------------------------------
# 3. keys that would decode outside -o


@pytest.mark.parametrize("key", ["../escape.png", "sub/../../escape.png", "ABSOLUTE", ""])
def test_decode_refuses_keys_outside_the_output_folder(checkpoint, tmp_path, key):
    if key == "ABSOLUTE":
        key = str(tmp_path / "escape.png")
    codec = load_codec(checkpoint)
    tokens, out = tmp_path / "tokens", tmp_path / "deep" / "decoded"
    with TokenWriter(tokens, codec.token_spec, codec=codec.name) as writer:
        writer.add(np.zeros(8, dtype=np.int64), key="fine.png")
        writer.add(np.ones(8, dtype=np.int64), key=key)
    with pytest.raises(TokenFileError, match="not a relative path inside the output") as error:
        decode(checkpoint, tokens, out)
    assert str(error.value).startswith(f"{tokens}: sample key {key!r}")
    assert not list(tmp_path.rglob("escape*")) and not out.exists()


# ------------------------------------------------------------------------------------------
# 4. decoding into the same folder again


def test_decoding_again_keeps_names_and_never_keeps_another_keys_file(checkpoint, tmp_path):
    codec = load_codec(checkpoint)
    photos = photo_folder(tmp_path / "photos", {"a.jpg": "rocket.jpg"})
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    assert encode_images(checkpoint, photos, tokens) == 0
    assert decode(checkpoint, tokens, out) == 0
    first = file_pixels(out / "a.png")
    shutil.copy(ASSETS / "chelsea.png", photos / "a.png")
    assert encode_images(checkpoint, photos, tokens) == 0  # resumes: a.png is added
    assert decode(checkpoint, tokens, out) == 0
    dataset = TokenDataset(tokens)
    # a.jpg keeps its file; a.png, new, must not take it (it would be skipped as decoded)
    assert torch.equal(file_pixels(out / "a.png"), first)
    assert (file_pixels(out / "a.png") - decoded_pixels(codec, dataset, "a.jpg")).abs().max() <= 1
    assert (
        file_pixels(out / "a.png.png") - decoded_pixels(codec, dataset, "a.png")
    ).abs().max() <= 1
    assert sorted(path.name for path in out.glob("*.png")) == ["a.png", "a.png.png"]
    # another token directory with the same key but other codes is decoded, not skipped
    other_photos = photo_folder(tmp_path / "other", {"a.jpg": "camera.png"})
    other = tmp_path / "other-tokens"
    assert encode_images(checkpoint, other_photos, other) == 0
    assert decode(checkpoint, other, out) == 0
    expected = decoded_pixels(codec, TokenDataset(other), "a.jpg")
    assert (file_pixels(out / "a.png") - expected).abs().max() <= 1
    (out / ".mediatok-decode.json").write_text('{"files": {"a.jpg": {"file": "../a.png"}}}')
    with pytest.raises(ValueError, match=r"mediatok-decode\.json: expected the index"):
        decode(checkpoint, other, out)  # a damaged index is not trusted to name files


# ------------------------------------------------------------------------------------------
# 5. SIGTERM keeps the samples encoded so far

CHILD = """
import os, sys, time
from pathlib import Path

import mediatok.pipelines.encode as pipeline
from mediatok.cli import main

checkpoint, photos, tokens, marker = sys.argv[1:]
load = pipeline.load_codec


def load_and_pause(*args, **kwargs):  # the 6th batch waits for the parent's SIGTERM
    codec = load(*args, **kwargs)
    encode, calls = codec.encode, []

    def encode_and_pause(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            Path(marker).touch()
            deadline = time.monotonic() + 60
            while not os.path.exists(marker + ".sent") and time.monotonic() < deadline:
                time.sleep(0.01)
        return encode(*args, **kwargs)

    codec.encode = encode_and_pause
    return codec


pipeline.load_codec = load_and_pause
args = ["encode", checkpoint, photos, "-o", tokens, "--device", "cpu"]
sys.exit(main([*args, "--batch-size", "1", "--shard-size", "4"]))
"""


def test_sigterm_keeps_the_samples_encoded_so_far_and_a_rerun_finishes(checkpoint, tmp_path):
    photos, tokens, marker = tmp_path / "photos", tmp_path / "tokens", tmp_path / "paused"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(10):
        pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{index:02d}.png")
    command = [sys.executable, "-c", CHILD, str(checkpoint), str(photos), str(tokens), str(marker)]
    child = subprocess.Popen(
        command, env=os.environ | {"OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), child.communicate(timeout=60)[1]
        child.send_signal(signal.SIGTERM)
        Path(f"{marker}.sent").touch()
        _, error = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, error
    assert "stopped by SIGTERM" in error
    assert not (tokens / "manifest.json").exists()
    part = json.loads((tokens / "manifest-r000.json").read_text())
    # one full shard of 4, then the 2 samples pending (the batch in flight finishes): not 4
    assert part["complete"] is False
    assert [shard["num_samples"] for shard in part["shards"]] == [4, 2]
    handler = signal.getsignal(signal.SIGTERM)
    assert encode_images(checkpoint, photos, tokens) == 0
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == [f"{index:02d}.png" for index in range(10)]
    dataset.verify()


# ------------------------------------------------------------------------------------------
# 6. damaged codes


def test_decode_names_the_shard_and_key_of_a_code_out_of_the_vocabulary(checkpoint, tmp_path):
    photos = photo_folder(tmp_path / "photos", {"a.png": "chelsea.png", "b.jpg": "rocket.jpg"})
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    assert encode_images(checkpoint, photos, tokens) == 0
    shard = tokens / "shard-r000-00000.safetensors"
    # b.jpg's 2nd code, under valid checksums (as a writer with a bug would leave it)
    rewrite_codes(shard, lambda codes: codes.__setitem__(8 + 1, 4000))
    with pytest.raises(TokenFileError) as error:
        decode(checkpoint, tokens, out)
    message = str(error.value)
    assert message.startswith(f"{shard}: code 4000 of sample 'b.jpg' is out of range")
    assert "expected [0, 64)" in message and ".verify()" in message


def test_decode_and_training_name_the_shard_of_a_flipped_bit(checkpoint, tmp_path):
    """One bit flipped in a shard's codes (still a valid code) used to decode into a wrong
    image without a word; the shard's checksum now stops `decode` and generator training."""
    photos = photo_folder(tmp_path / "photos", {"a.png": "chelsea.png", "b.jpg": "rocket.jpg"})
    tokens, out = tmp_path / "tokens", tmp_path / "decoded"
    assert encode_images(checkpoint, photos, tokens) == 0
    shard = tokens / "shard-r000-00000.safetensors"
    begin, _ = codes_location(shard)
    data = bytearray(shard.read_bytes())
    data[begin + 2 * 8 + 2] ^= 0x01  # b.jpg's 2nd code: codes are < 64, so still in range
    shard.write_bytes(bytes(data))
    problem = re.escape(f"{shard}: payload checksum mismatch: 'codes'")
    with pytest.raises(TokenFileError, match=problem):
        decode(checkpoint, tokens, out)
    assert not list(out.rglob("*.png"))  # nothing decoded from the damaged shard
    dataset = TokenDataset(tokens)  # what generator training reads
    with pytest.raises(TokenFileError, match=problem):
        dataset[dataset.keys.index("a.png")]


# ------------------------------------------------------------------------------------------
# 8. -o naming a file


def test_encode_and_decode_refuse_an_output_that_is_a_file(checkpoint, tmp_path):
    photos = photo_folder(tmp_path / "photos", {"a.png": "chelsea.png"})
    tokens, file = tmp_path / "tokens", tmp_path / "file"
    file.write_text("mine")
    with pytest.raises(ValueError, match=f"expected {file} to be a token directory.*existing file"):
        encode_images(checkpoint, photos, file)
    assert encode_images(checkpoint, photos, tokens) == 0
    with pytest.raises(ValueError, match=f"expected -o {file} to be a folder.*existing file"):
        decode(checkpoint, tokens, file)
    assert file.read_text() == "mine"


# ------------------------------------------------------------------------------------------
# 9. gFID options


def test_gfid_passes_the_batch_size_and_refuses_a_limit(tmp_path, monkeypatch):
    import mediatok.eval.fid

    calls = []
    monkeypatch.setattr(
        mediatok.eval.fid, "fid", lambda *args, **kwargs: calls.append((args, kwargs)) or 1.5
    )
    samples, reference, out = tmp_path / "samples", tmp_path / "reference", tmp_path / "report"
    args = ["eval", str(samples), "--reference", str(reference), "-o", str(out), "--device", "cpu"]
    assert main([*args, "--batch-size", "7"]) == 0
    assert calls[0][0] == (str(samples), str(reference)) and calls[0][1]["batch_size"] == 7
    assert json.loads((out / "metrics.json").read_text())["gfid"] == 1.5
    with pytest.raises(SystemExit, match=r"--limit applies to reconstructions.*got --limit 5"):
        main([*args, "--limit", "5"])
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------
# 10. a second job into a directory that a job is writing


def test_a_second_encode_into_a_directory_being_written_is_refused(
    checkpoint, tmp_path, monkeypatch, capsys
):
    """Two jobs of different folders into one -o used to both say 'encoded N of N' and leave
    the directory corrupt (size mismatches that a rerun refused)."""
    import mediatok.pipelines.encode as pipeline

    first = photo_folder(tmp_path / "first", {"x.png": "chelsea.png", "y.png": "coffee.png"})
    second = photo_folder(tmp_path / "second", {"z.png": "rocket.jpg"})
    tokens = tmp_path / "tokens"
    load, refused = pipeline.load_codec, []

    def load_and_start_a_second_job(*args, **kwargs):  # while the first encodes its batch
        codec = load(*args, **kwargs)
        encode = codec.encode

        def encode_while_another_job_starts(*args, **kwargs):
            if not refused:
                monkeypatch.setattr(pipeline, "load_codec", load)
                files = sorted(path.name for path in tokens.iterdir())
                with pytest.raises(TokenWriterBusy) as error:
                    encode_images(checkpoint, second, tokens)
                assert sorted(path.name for path in tokens.iterdir()) == files  # untouched
                refused.append(str(error.value))
            return encode(*args, **kwargs)

        codec.encode = encode_while_another_job_starts
        return codec

    monkeypatch.setattr(pipeline, "load_codec", load_and_start_a_second_job)
    assert encode_images(checkpoint, first, tokens, "--batch-size", "1") == 0
    assert refused[0].startswith(f"{tokens}: another writer is writing rank 0")
    assert f"pid {os.getpid()}" in refused[0]
    assert "encoded 2 of 2 images" in capsys.readouterr().out  # one job said ok: the first
    dataset = TokenDataset(tokens)
    assert dataset.keys == ["x.png", "y.png"]
    dataset.verify()


# ------------------------------------------------------------------------------------------
# 11. sources that changed since they were encoded

PHOTOS = ("chelsea.png", "camera.png", "coffee.png", "rocket.jpg")


@pytest.fixture
def telling_checkpoint(tmp_path: Path) -> Path:
    """A tiny TiTok whose codebook holds the latents of four shipped photos, so that each of
    them has codes of its own (an untrained one gives every image the same codes)."""
    from mediatok.codecs import build_codec
    from mediatok.data import read_center_crops
    from tiny_configs import TITOK

    torch.manual_seed(0)
    codec = build_codec("titok", TITOK).eval()
    images = read_center_crops([ASSETS / name for name in PHOTOS], 32)  # (4, 3, 32, 32)
    with torch.no_grad():
        latents = codec._encode_latents(images)  # (4, 8, 6)
        codec.quantizer.codebook.embed[:32] = latents.reshape(32, -1)
        assert codec.encode(images).codes.tolist() == torch.arange(32).reshape(4, 8).tolist()
    return codec.save_pretrained(tmp_path / "telling-checkpoint")


def test_a_source_replaced_after_encoding_is_encoded_again(telling_checkpoint, tmp_path, capsys):
    checkpoint = telling_checkpoint
    codec = load_codec(checkpoint)
    names = {"a.png": "chelsea.png", "b.png": "coffee.png", "h.png": "rocket.jpg"}
    photos, tokens, out = photo_folder(tmp_path / "photos", names), tmp_path / "t", tmp_path / "d"
    assert encode_images(checkpoint, photos, tokens, "--shard-size", "2") == 0
    assert decode(checkpoint, tokens, out) == 0
    shards = {path.name: path.read_bytes() for path in tokens.glob("shard-*")}
    before = TokenDataset(tokens)
    old_codes = before[before.keys.index("a.png")]["codes"]
    shutil.copy(ASSETS / "camera.png", photos / "a.png")  # the same name, another photo
    capsys.readouterr()
    assert encode_images(checkpoint, photos, tokens, "--shard-size", "2") == 0
    printed = capsys.readouterr().out
    assert (
        "encoded 3 of 3 images" in printed
        and "(1 re-encoded: changed since the last run)" in printed
    )
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.png", "b.png", "h.png"]  # one sample per key
    dataset.verify()
    # a.png alone was encoded again, into a new shard; the earlier shards are untouched
    now = {path.name: path.read_bytes() for path in tokens.glob("shard-*")}
    assert {name: now[name] for name in shards} == shards
    (added,) = set(now) - set(shards)
    assert read_shard(tokens / added).keys == ["a.png"]
    # its codes are the new photo's, as a fresh encode gives them
    fresh = tmp_path / "fresh-tokens"
    assert (
        encode_images(checkpoint, photo_folder(tmp_path / "f", {"a.png": "camera.png"}), fresh) == 0
    )
    codes = dataset[dataset.keys.index("a.png")]["codes"]
    assert torch.equal(codes, TokenDataset(fresh)[0]["codes"])
    assert codes.tolist() == list(range(8, 16)) and old_codes.tolist() == list(range(8))
    # and decode writes what the new codes decode to
    assert decode(checkpoint, tokens, out) == 0
    assert (file_pixels(out / "a.png") - decoded_pixels(codec, dataset, "a.png")).abs().max() <= 1
    # a third run has nothing to do
    capsys.readouterr()
    assert encode_images(checkpoint, photos, tokens, "--shard-size", "2") == 0
    assert "re-encoded" not in capsys.readouterr().out
    assert sorted(path.name for path in tokens.glob("shard-*")) == sorted(now)


def test_a_changed_source_is_encoded_again_by_the_rank_it_now_belongs_to(
    telling_checkpoint, tmp_path, monkeypatch, capsys
):
    checkpoint = telling_checkpoint
    # a.png goes to rank 1 of 2, h.png to rank 0; a first run of one process encoded both
    photos = photo_folder(tmp_path / "photos", {"a.png": "chelsea.png", "h.png": "rocket.jpg"})
    tokens = tmp_path / "tokens"
    as_rank(monkeypatch, 0, 1)
    assert encode_images(checkpoint, photos, tokens) == 0
    shutil.copy(ASSETS / "camera.png", photos / "a.png")
    capsys.readouterr()
    for rank in (1, 0):
        as_rank(monkeypatch, rank, 2)
        assert encode_images(checkpoint, photos, tokens) == 0
    assert "(1 re-encoded: changed since the last run)" in capsys.readouterr().out  # rank 0's
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.png", "h.png"]
    dataset.verify()
    assert written_samples(tokens)["a.png"].file == "shard-r001-00000.safetensors"
    as_rank(monkeypatch, 0, 1)
    fresh = tmp_path / "fresh-tokens"
    assert (
        encode_images(checkpoint, photo_folder(tmp_path / "f", {"a.png": "camera.png"}), fresh) == 0
    )
    expected = TokenDataset(fresh)[0]["codes"]
    assert torch.equal(dataset[dataset.keys.index("a.png")]["codes"], expected)
    assert expected.tolist() == list(range(8, 16))  # camera.png's, not chelsea.png's


def test_a_changed_source_that_cannot_be_read_keeps_its_earlier_tokens(
    checkpoint, tmp_path, capsys
):
    photos = photo_folder(tmp_path / "photos", {"a.png": "chelsea.png", "b.png": "coffee.png"})
    tokens = tmp_path / "tokens"
    assert encode_images(checkpoint, photos, tokens) == 0
    earlier = TokenDataset(tokens)[0]["codes"]
    (photos / "a.png").write_bytes(b"not a png any more")
    capsys.readouterr()
    assert encode_images(checkpoint, photos, tokens) == 0
    captured = capsys.readouterr()
    assert re.search(r"cannot read .*a\.png \(changed since it was encoded", captured.err)
    assert "kept the earlier tokens of a.png, changed, now: " in captured.out
    dataset = TokenDataset(tokens)
    assert dataset.keys == ["a.png", "b.png"] and dataset.skipped == []
    assert torch.equal(dataset[0]["codes"], earlier)
