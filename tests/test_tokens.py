"""Token files: spec, writer, reader, dataset, resume, multi-rank merge and batching."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mediatok.tokens import (
    TokenDataset,
    TokenFileError,
    TokenSpec,
    TokenWriter,
    TokenWriterBusy,
    merge_manifests,
    pack,
    pad_collate,
    read_shard,
)
from mediatok.tokens.written import written_keys, written_samples

SPEC = TokenSpec(vocab_sizes=[4096], layout="N")


def write_samples(directory: Path, samples, spec=SPEC, labels=None, **kwargs) -> None:
    """Write `samples` (list of arrays) with keys "k0", "k1", ... and close."""
    with TokenWriter(directory, spec, **kwargs) as writer:
        for index, codes in enumerate(samples):
            label = None if labels is None else labels[index]
            writer.add(codes, label=label, key=f"k{index}")


def random_samples(count: int, shape_of, vocab: int = 4096, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=shape_of(index)) for index in range(count)]


def at(path: Path, problem: str) -> str:
    """Regex for a `TokenFileError` message: the exact file path, then `problem` (a regex)."""
    return re.escape(f"{path}: ") + problem


# ------------------------------------------------------------------------------------------
# TokenSpec


def test_spec_validates_and_round_trips() -> None:
    spec = TokenSpec(vocab_sizes=[1024, 1024], layout="Q T", order="T Q", geometry={"hop": 320})
    assert spec.vocab_sizes == (1024, 1024) and spec.order == "T Q"
    assert TokenSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert hash(spec) == hash(TokenSpec([1024, 1024], "Q T", "T Q", {"hop": 320}))
    assert spec != TokenSpec([1024, 1024], "Q T", "T Q", {"hop": 240})
    assert dict(spec.geometry) == {"hop": 320}
    with pytest.raises(TypeError):
        spec.geometry["hop"] = 1  # read-only
    assert SPEC.order == "N" and SPEC.length_axis == 0 and spec.length_axis == 1
    assert TokenSpec([65536]).code_dtype == np.uint16
    assert TokenSpec([65537]).code_dtype == np.int32
    with pytest.raises(
        ValueError, match=r"one of 'N', 'T', 'H W', 'Q T', 'T H W', 'Q N', 'Q H W', got 'X Y'"
    ):
        TokenSpec([16], layout="X Y")
    with pytest.raises(ValueError, match="no Q axis, so expected one vocabulary size, got 2"):
        TokenSpec([16, 16], layout="N")
    with pytest.raises(ValueError, match=r"in \[1, 2147483647\], got \[0\]"):
        TokenSpec([0])
    with pytest.raises(ValueError, match="permutation"):
        TokenSpec([16], layout="H W", order="H T")
    with pytest.raises(ValueError, match="plain JSON"):
        TokenSpec([16], geometry={"size": object()})
    with pytest.raises(ValueError, match="unknown token spec keys"):
        TokenSpec.from_dict({"vocab_sizes": [4], "vocab": 4})


def test_spec_describes_what_keeps_codes_from_decoding() -> None:
    """One answer to "can this codec decode these tokens?": vocabulary, layout and geometry; the
    vocabulary and layout may agree while the media differ (hop 320 vs 600, two image sizes)."""
    audio = TokenSpec([4096], "T", geometry={"sample_rate": 24000, "hop_length": 320})
    assert audio.describe_mismatch(audio) is None
    slower = TokenSpec([4096], "T", geometry={"sample_rate": 24000, "hop_length": 600})
    assert audio.same_vocabulary(slower)  # what the generator's check used to stop at
    assert audio.describe_mismatch(slower) == (
        "expected geometry {'hop_length': 320}, got {'hop_length': 600}"
    )
    # Geometry is compared only when both sides record one (a spec built by hand, an old file).
    assert audio.describe_mismatch(TokenSpec([4096], "T")) is None
    assert TokenSpec([4096], "T").describe_mismatch(slower) is None
    # The order is how a generator reads the codes, not what they mean.
    levels = TokenSpec([16, 16], "Q T")
    assert levels.describe_mismatch(TokenSpec([16, 16], "Q T", order="T Q")) is None
    # A key one side lacks is a difference; every differing field is named, in one message.
    image = TokenSpec([64], "N", geometry={"image_size": 32, "num_tokens": 8})
    other = TokenSpec([16, 16], "Q N", geometry={"image_size": 32, "grid": 4})
    assert image.describe_mismatch(other) == (
        "expected vocabulary [64], got [16, 16]; expected layout 'N', got 'Q N'; "
        "expected geometry {'num_tokens': 8}, got {'grid': 4}"
    )
    with pytest.raises(TypeError, match="expected a TokenSpec to compare with, got dict"):
        image.describe_mismatch(image.to_dict())


# ------------------------------------------------------------------------------------------
# round trips


def test_acceptance_interface(tmp_path: Path) -> None:
    writer = TokenWriter(tmp_path, TokenSpec(vocab_sizes=[4096], layout="N"))
    samples = random_samples(5, lambda i: (16,))
    for codes in samples:
        writer.add(codes, label=None)
    writer.close()
    dataset = TokenDataset(tmp_path)
    assert len(dataset) == 5
    for index, codes in enumerate(samples):
        item = dataset[index]
        assert item["codes"].dtype == torch.int64 and "label" not in item
        assert torch.equal(item["codes"], torch.from_numpy(codes))
    assert dataset[-1]["key"] == "4"
    with pytest.raises(IndexError):
        dataset[5]


LAYOUT_CASES = {
    "N variable": (TokenSpec([4096]), lambda i: (3 + 5 * i,)),
    "T audio": (
        TokenSpec([4096], layout="T", geometry={"sample_rate": 24000, "hop_length": 320}),
        lambda i: (75 + 7 * i,),
    ),
    "H W": (TokenSpec([1024], layout="H W"), lambda i: (4, 6)),
    "Q T int32": (TokenSpec([70000, 512], layout="Q T", order="T Q"), lambda i: (2, 1 + i)),
    "T H W": (TokenSpec([64000], layout="T H W", geometry={"fps": 8}), lambda i: (1 + i % 3, 2, 3)),
    "Q N": (TokenSpec([16, 16, 16], layout="Q N"), lambda i: (3, 8)),
}


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_round_trip(tmp_path: Path, case: str) -> None:
    spec, shape_of = LAYOUT_CASES[case]
    rng = np.random.default_rng(1)
    samples = []
    for index in range(11):
        shape = shape_of(index)
        # Each level draws from its own vocabulary, including its largest code.
        high = np.array(spec.vocab_sizes).reshape((-1,) + (1,) * (len(shape) - 1))
        if spec.level_axis is None:
            high = spec.vocab_sizes[0]
        codes = rng.integers(0, high, size=shape)
        codes.reshape(-1)[0] = spec.vocab_sizes[0] - 1
        samples.append(codes.astype(np.int32))
    labels = list(range(100, 111))
    write_samples(tmp_path, samples, spec=spec, labels=labels, shard_size=4, codec="test-codec")

    shards = sorted(tmp_path.glob("shard-*.safetensors"))
    assert [path.name for path in shards] == [f"shard-r000-0000{i}.safetensors" for i in range(3)]
    shard = read_shard(shards[0], spec)
    assert shard.codes.dtype == spec.code_dtype and len(shard) == 4
    assert shard.metadata["codec"] == "test-codec" and shard.keys == ["k0", "k1", "k2", "k3"]
    np.testing.assert_array_equal(shard.sample(1), samples[1])

    dataset = TokenDataset(tmp_path, spec)
    assert len(dataset) == 11 and dataset.spec == spec
    np.testing.assert_array_equal(dataset.lengths, [codes.size for codes in samples])
    np.testing.assert_array_equal(dataset.labels, labels)
    for index, codes in enumerate(samples):
        item = dataset[index]
        assert tuple(item["codes"].shape) == codes.shape
        np.testing.assert_array_equal(item["codes"].numpy(), codes)
        assert item["label"] == labels[index] and item["key"] == f"k{index}"
    assert dataset.metadata["num_tokens"] == sum(codes.size for codes in samples)
    dataset.verify()


def test_add_batch_trims_lengths_and_takes_tensors(tmp_path: Path) -> None:
    spec = TokenSpec([100, 100], layout="Q T")
    batch = torch.randint(0, 100, (3, 2, 7))  # (B, Q, T)
    with TokenWriter(tmp_path, spec) as writer:
        writer.add_batch(batch, labels=torch.tensor([1, 2, 3]), lengths=torch.tensor([7, 2, 0]))
    dataset = TokenDataset(tmp_path)
    assert [tuple(dataset[i]["codes"].shape) for i in range(3)] == [(2, 7), (2, 2), (2, 0)]
    assert torch.equal(dataset[1]["codes"], batch[1, :, :2])
    assert dataset.keys == ["0", "1", "2"] and list(dataset.labels) == [1, 2, 3]


def test_media_lengths_round_trip_and_resume(tmp_path: Path) -> None:
    spec = TokenSpec([4096], layout="T", geometry={"sample_rate": 24000, "hop_length": 320})
    codes = np.arange(12, dtype=np.int64).reshape(2, 6)
    with TokenWriter(tmp_path, spec, shard_size=2) as writer:
        writer.add_batch(codes, keys=["a.wav", "b.wav"], media_lengths=[1900, 1600])
        writer.add(codes[0][:3], key="c.wav", media_length=700)
    dataset = TokenDataset(tmp_path, spec)
    assert [dataset[i]["media_length"] for i in range(3)] == [1900, 1600, 700]
    assert dataset.media_lengths.tolist() == [1900, 1600, 700]
    assert read_shard(next(tmp_path.glob("*.safetensors"))).media_lengths is not None
    resumed = TokenWriter(tmp_path, spec)  # resumes; mixing is refused
    with pytest.raises(ValueError, match="have media lengths; every sample must match"):
        resumed.add(codes[1], key="d.wav")
    resumed.close()
    with TokenWriter(tmp_path / "none", spec) as writer:
        writer.add(codes[0], key="a.wav")
    assert "media_length" not in TokenDataset(tmp_path / "none")[0]
    with pytest.raises(ValueError, match="media length >= 0"):
        TokenWriter(tmp_path / "bad", spec).add(codes[0], media_length=-1)
    with pytest.raises(ValueError, match=r"expected an integer media length, got 3\.5"):
        TokenWriter(tmp_path / "bad", spec).add(codes[0], media_length=3.5)


def test_add_rejects_bad_codes(tmp_path: Path) -> None:
    spec = TokenSpec([8, 4], layout="Q T")
    writer = TokenWriter(tmp_path, spec)
    with pytest.raises(ValueError, match="expected integer codes, got dtype float32"):
        writer.add(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="expected codes >= 0, got -1"):
        writer.add(np.array([[0, -1], [0, 0]]))
    with pytest.raises(ValueError, match=r"expected codes of level 1 in \[0, 4\), got 4"):
        writer.add(np.array([[7, 7], [0, 4]]))  # 7 fits level 0, 4 does not fit level 1
    with pytest.raises(ValueError, match=r"expected 2 levels on the Q axis"):
        writer.add(np.zeros((3, 5), np.int64))
    with pytest.raises(ValueError, match=r"expected codes with 2 axes \('Q T'\), got shape \(5,\)"):
        writer.add(np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="expected 2 keys, got 1"):
        writer.add_batch(np.zeros((2, 2, 3), np.int64), keys=["a"])
    writer.add(np.zeros((2, 3), np.int64), key="a")
    with pytest.raises(ValueError, match="'a' was already written"):
        writer.add(np.zeros((2, 3), np.int64), key="a")
    with pytest.raises(ValueError, match="have no labels"):
        writer.add(np.zeros((2, 3), np.int64), label=3, key="b")
    # A rejected batch adds nothing, not even its valid leading samples.
    bad = np.zeros((2, 2, 3), np.int64)
    bad[1, 0, 0] = 8
    with pytest.raises(ValueError, match=r"in \[0, 8\), got 8"):
        writer.add_batch(bad, keys=["c", "d"])
    writer.add_batch(np.zeros((2, 2, 3), np.int64), keys=["c", "d"])
    writer.skip("broken.wav", "could not decode")
    writer.close()
    dataset = TokenDataset(tmp_path)
    assert dataset.keys == ["a", "c", "d"]
    assert dataset.skipped == [{"key": "broken.wav", "error": "could not decode"}]


# ------------------------------------------------------------------------------------------
# resume


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    samples = random_samples(10, lambda i: (1 + i,))
    labels = list(range(10))
    write_samples(tmp_path / "whole", samples, labels=labels, shard_size=3)

    directory = tmp_path / "killed"
    killed = TokenWriter(directory, SPEC, shard_size=3)
    for index in range(8):  # two shards flushed, two samples pending when "killed"
        killed.add(samples[index], label=labels[index], key=f"k{index}")
    (directory / ".tmp-shard-r000-00002.safetensors-999").write_bytes(b"partial")
    del killed
    assert not (directory / "manifest.json").exists()

    writer = TokenWriter(directory, SPEC, shard_size=3)
    assert not list(directory.glob(".tmp-*"))
    assert writer.done_keys == {f"k{i}" for i in range(6)}
    with pytest.raises(ValueError, match="already written"):
        writer.add(samples[0], label=0, key="k0")
    for index in range(10):
        if f"k{index}" not in writer.done_keys:
            writer.add(samples[index], label=labels[index], key=f"k{index}")
    writer.close()

    whole, resumed = TokenDataset(tmp_path / "whole"), TokenDataset(directory)
    assert resumed.keys == whole.keys == [f"k{i}" for i in range(10)]
    np.testing.assert_array_equal(resumed.labels, whole.labels)
    for index in range(10):
        assert torch.equal(resumed[index]["codes"], whole[index]["codes"])
    assert sorted(p.name for p in directory.glob("shard-*")) == sorted(
        p.name for p in (tmp_path / "whole").glob("shard-*")
    )


def test_shard_renamed_but_not_in_manifest_is_adopted(tmp_path: Path) -> None:
    samples = random_samples(6, lambda i: (4,))
    writer = TokenWriter(tmp_path, SPEC, shard_size=2)
    for index, codes in enumerate(samples):
        writer.add(codes, key=f"k{index}")
    # Killed after the rename of the third shard, before its manifest write.
    part = tmp_path / "manifest-r000.json"
    manifest = json.loads(part.read_text())
    manifest["shards"] = manifest["shards"][:2]
    part.write_text(json.dumps(manifest))
    del writer  # killed: its lock goes with it

    with pytest.raises(TokenFileError, match=r"\['manifest-r000.json'\] were not closed"):
        merge_manifests(tmp_path)
    resumed = TokenWriter(tmp_path, SPEC, shard_size=2)
    assert resumed.done_keys == {f"k{i}" for i in range(6)}
    assert len(json.loads(part.read_text())["shards"]) == 3
    resumed.add(samples[0], key="k6")
    resumed.close()
    assert (tmp_path / "shard-r000-00003.safetensors").exists()
    assert TokenDataset(tmp_path).keys == [f"k{i}" for i in range(7)]


def test_reopen_with_another_setup_raises(tmp_path: Path) -> None:
    write_samples(tmp_path, random_samples(2, lambda i: (3,)), codec="vq-f16")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path)) + r".*codec 'vq-f16' vs 'titok'"):
        TokenWriter(tmp_path, SPEC, codec="titok")
    with pytest.raises(ValueError, match=r"\[4096\].*\[1024\]"):
        TokenWriter(tmp_path, TokenSpec([1024]), codec="vq-f16")


def test_failed_job_leaves_no_manifest_and_resumes(tmp_path: Path) -> None:
    samples = random_samples(5, lambda i: (3,))
    with pytest.raises(RuntimeError), TokenWriter(tmp_path, SPEC, shard_size=2) as writer:
        for index, codes in enumerate(samples):
            writer.add(codes, key=f"k{index}")
        raise RuntimeError("decoder crashed")
    assert not (tmp_path / "manifest.json").exists()  # unfinished: nothing claims completion
    with TokenWriter(tmp_path, SPEC, shard_size=2) as writer:
        assert writer.done_keys == {"k0", "k1", "k2", "k3"}  # k4 was pending: redone
        writer.add(samples[4], key="k4")
    assert TokenDataset(tmp_path).keys == [f"k{i}" for i in range(5)]


def test_empty_writer_and_copies(tmp_path: Path) -> None:
    TokenWriter(tmp_path / "empty", SPEC).close()
    empty = TokenDataset(tmp_path / "empty")
    assert len(empty) == 0 and empty.labels is None and empty.metadata["num_tokens"] == 0
    write_samples(tmp_path / "full", random_samples(3, lambda i: (2,)))
    dataset = TokenDataset(tmp_path / "full")
    dataset[0]
    assert dataset._open and not copy.copy(dataset)._open  # workers get no open maps
    assert torch.equal(copy.copy(dataset)[2]["codes"], dataset[2]["codes"])
    error = copy.copy(TokenFileError(tmp_path, "broken"))
    assert str(error) == f"{tmp_path}: broken" and error.problem == "broken"


# ------------------------------------------------------------------------------------------
# one writer per rank


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of a directory (the lock files aside) and its bytes."""
    return {
        path.name: path.read_bytes()
        for path in sorted(directory.iterdir())
        if not path.name.startswith(".lock")
    }


def test_a_second_writer_of_a_rank_is_refused_until_the_first_is_done(tmp_path: Path) -> None:
    """Two jobs into one directory used to both end 'ok' over a corrupt directory."""
    first = TokenWriter(tmp_path, SPEC, shard_size=1, source_dir="/data/a")
    first.add(np.arange(3), key="a")  # one shard and a part manifest on disk
    first.add(np.arange(4), key="b")
    before = snapshot(tmp_path)
    busy = at(tmp_path, rf"another writer is writing rank 0 .*\(pid {os.getpid()} on .+ since ")
    with pytest.raises(TokenWriterBusy, match=busy):
        TokenWriter(tmp_path, SPEC, shard_size=1, source_dir="/data/b")  # another folder's job
    with pytest.raises(TokenWriterBusy, match=busy):
        TokenWriter(tmp_path, SPEC, shard_size=1, source_dir="/data/a")  # the same job, twice
    assert snapshot(tmp_path) == before  # refused before it read, deleted or wrote a file
    first.close()
    with TokenWriter(tmp_path, SPEC, source_dir="/data/a") as second:  # released: resumes
        assert second.done_keys == {"a", "b"}
        second.add(np.arange(5), key="c")
    assert TokenDataset(tmp_path).keys == ["a", "b", "c"]
    # abort(), a failed `with` block and a refused opening release the lock too
    TokenWriter(tmp_path, SPEC, source_dir="/data/a").abort()
    with pytest.raises(RuntimeError), TokenWriter(tmp_path, SPEC, source_dir="/data/a"):
        raise RuntimeError("encoder crashed")
    with pytest.raises(ValueError, match="holds tokens of the files in /data/a"):
        TokenWriter(tmp_path, SPEC, source_dir="/data/b")
    TokenWriter(tmp_path, SPEC, source_dir="/data/a").close()


HOLDER = """
import sys, time
from pathlib import Path
import numpy as np
from mediatok.tokens import TokenSpec, TokenWriter

directory, marker = sys.argv[1:]
writer = TokenWriter(directory, TokenSpec([4096]), shard_size=1)
writer.add(np.arange(3), key="a")
writer.add(np.arange(4), key="b")
Path(marker).touch()
time.sleep(120)  # killed by the test long before
"""


def test_another_process_holding_a_rank_is_refused_and_its_kill_frees_it(tmp_path: Path) -> None:
    tokens, marker = tmp_path / "tokens", tmp_path / "holding"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tokens), str(marker)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), child.communicate(timeout=30)[1]
        with pytest.raises(TokenWriterBusy, match=rf"rank 0 .*\(pid {child.pid} on "):
            TokenWriter(tokens, SPEC)
        child.send_signal(signal.SIGKILL)  # kill -9: no close, no abort
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    with TokenWriter(tokens, SPEC) as writer:  # the OS dropped the lock with the process
        assert writer.done_keys == {"a", "b"}
    assert TokenDataset(tokens).keys == ["a", "b"]


# ------------------------------------------------------------------------------------------
# replacing the sample of a changed source


def test_a_replacing_sample_is_the_only_one_readers_see(tmp_path: Path) -> None:
    old, new = np.arange(3), np.arange(10, 16)
    with TokenWriter(tmp_path, SPEC, shard_size=2) as writer:
        for index in range(3):
            writer.add(old + index, key=f"k{index}", source_stats=(100 + index, 7))
    written = written_samples(tmp_path, SPEC)
    assert written["k1"] == ("shard-r000-00000.safetensors", (101, 7), None)
    with TokenWriter(tmp_path, SPEC, shard_size=2) as writer:
        with pytest.raises(ValueError, match=r"'k1' was already written.*pass replaces="):
            writer.add(new, key="k1")
        with pytest.raises(ValueError, match=r"'k1' is in shard-r000-00000.*shard-r000-00001"):
            writer.add(new, key="k1", replaces="shard-r000-00001.safetensors")
        writer.add(new, key="k1", source_stats=(200, 8), replaces=written["k1"].file)
    dataset = TokenDataset(tmp_path)
    assert dataset.keys == ["k0", "k2", "k1"]  # one sample per key, the replaced one gone
    assert dataset[2]["codes"].tolist() == new.tolist()
    assert dataset.lengths.tolist() == [3, 3, 6] and dataset.metadata["num_samples"] == 3
    dataset.verify()
    assert written_samples(tmp_path)["k1"] == ("shard-r000-00002.safetensors", (200, 8), None)
    # the manifest counts what the shards store; the replaced sample is still on disk
    assert json.loads((tmp_path / "manifest.json").read_text())["num_samples"] == 4
    # a rerun resumes over it: the key repeats in this rank's shards, replaced, not duplicated
    with TokenWriter(tmp_path, SPEC, shard_size=2) as writer:
        assert writer.done_keys == {"k0", "k1", "k2"}
        writer.add(new, key="k1", replaces="shard-r000-00002.safetensors")
    assert TokenDataset(tmp_path).keys == ["k0", "k2", "k1"]


def test_a_replacement_killed_before_its_manifest_is_adopted(tmp_path: Path) -> None:
    with TokenWriter(tmp_path, SPEC) as writer:
        writer.add_batch(np.zeros((2, 3), np.int64), keys=["a", "b"])
    writer = TokenWriter(tmp_path, SPEC, shard_size=1)
    writer.add(np.ones(3, np.int64), key="a", replaces="shard-r000-00000.safetensors")
    # killed between the shard's rename and its part manifest: the shard says what it replaces
    part = tmp_path / "manifest-r000.json"
    manifest = json.loads(part.read_text())
    manifest["shards"] = manifest["shards"][:1]
    manifest["complete"] = False
    part.write_text(json.dumps(manifest))
    del writer
    with pytest.raises(TokenFileError, match="unfinished job"):
        TokenDataset(tmp_path)  # the old manifest.json does not list the new shard
    TokenWriter(tmp_path, SPEC).close()  # the rerun adopts it
    dataset = TokenDataset(tmp_path)
    assert dataset.keys == ["b", "a"] and dataset[1]["codes"].tolist() == [1, 1, 1]
    dataset.verify()


def test_a_sample_of_another_rank_is_replaced_by_a_later_job(tmp_path: Path) -> None:
    earlier = TokenWriter(tmp_path, SPEC, rank=1, world_size=2)
    earlier.add(np.zeros(3, np.int64), key="a")
    earlier.add(np.zeros(3, np.int64), key="b")
    earlier.close()
    with TokenWriter(tmp_path, SPEC) as writer:  # one process, another job
        with pytest.raises(ValueError, match="holds no sample 'c' to replace"):
            writer.add(np.ones(3, np.int64), key="c", replaces="shard-r001-00000.safetensors")
        writer.add(np.ones(3, np.int64), key="a", replaces=written_samples(tmp_path)["a"].file)
    dataset = TokenDataset(tmp_path)
    assert sorted(dataset.keys) == ["a", "b"]
    assert dataset[dataset.keys.index("a")]["codes"].tolist() == [1, 1, 1]
    dataset.verify()


# ------------------------------------------------------------------------------------------
# several ranks


def test_two_ranks_and_merge(tmp_path: Path) -> None:
    samples = random_samples(9, lambda i: (2 + i,))
    writers = [TokenWriter(tmp_path, SPEC, shard_size=2, rank=r, world_size=2) for r in (0, 1)]
    for index, codes in enumerate(samples):
        writers[index % 2].add(codes, label=index, key=f"k{index}")
    writers[0].close()
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(TokenFileError, match=r"\['manifest-r001.json'\] were not closed"):
        merge_manifests(tmp_path)
    writers[1].close()
    manifest = merge_manifests(tmp_path)
    assert manifest["num_samples"] == 9
    assert manifest["num_tokens"] == sum(codes.size for codes in samples)

    dataset = TokenDataset(tmp_path, SPEC)
    assert sorted(dataset.keys) == sorted(f"k{i}" for i in range(9))
    for index in range(len(dataset)):
        item = dataset[index]
        assert int(item["key"][1:]) == item["label"]
        np.testing.assert_array_equal(item["codes"].numpy(), samples[item["label"]])
    dataset.verify()


def test_fewer_ranks_finish_a_directory_that_more_ranks_left_unfinished(tmp_path: Path) -> None:
    """Rank 1 of an earlier 2-rank job was killed (one shard listed, one renamed but not yet
    listed, one source skipped); one process, skipping every key written, finishes the rest."""
    samples = random_samples(6, lambda i: (3,))
    earlier = TokenWriter(tmp_path, SPEC, shard_size=1, rank=1, world_size=2)
    earlier.add(samples[0], key="k0")
    earlier.skip("k5", "could not decode")
    earlier.add(samples[1], key="k1")
    part = tmp_path / "manifest-r001.json"
    manifest = json.loads(part.read_text())
    manifest["shards"] = manifest["shards"][:1]  # killed before listing k1's shard
    part.write_text(json.dumps(manifest))
    written = written_keys(tmp_path, SPEC)
    assert written == {"k0", "k1"}
    with TokenWriter(tmp_path, SPEC) as writer:  # rank 0 of 1
        for index in range(2, 6):
            writer.add(samples[index], key=f"k{index}")
    dataset = TokenDataset(tmp_path)
    assert sorted(dataset.keys) == [f"k{i}" for i in range(6)]
    assert dataset.skipped == []  # k5 was encoded by the later job
    dataset.verify()
    # a rank of the last job still unclosed is refused as before
    TokenWriter(tmp_path, SPEC, rank=0, world_size=2).close()
    with pytest.raises(TokenFileError, match=r"\['manifest-r001.json'\] were not closed"):
        merge_manifests(tmp_path)


def test_one_directory_holds_the_files_of_one_source_folder(tmp_path: Path) -> None:
    samples = random_samples(2, lambda i: (3,))
    write_samples(tmp_path, samples[:1], source_dir="/data/a")
    assert TokenDataset(tmp_path).metadata["source_dir"] == "/data/a"
    with pytest.raises(ValueError, match=r"files in /data/a .*got /data/b"):
        TokenWriter(tmp_path, SPEC, source_dir="/data/b")
    with TokenWriter(tmp_path, SPEC, source_dir="/data/a") as writer:  # the same: resumes
        assert writer.done_keys == {"k0"}
        writer.add(samples[1], key="k1")
    assert TokenDataset(tmp_path).keys == ["k0", "k1"]
    with TokenWriter(tmp_path, SPEC, source_dir=Path("/data/a")):  # a Path is that folder too
        pass
    with pytest.raises(TypeError, match="source_dir to be a path or None, got int"):
        TokenWriter(tmp_path / "other", SPEC, source_dir=3)


def test_finished_files_get_the_umask_mode(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_samples(tmp_path, random_samples(2, lambda i: (3,)))
    finally:
        os.umask(umask)
    files = sorted(tmp_path.iterdir())
    assert [path.name for path in files] == [
        ".lock-r000",
        "manifest-r000.json",
        "manifest.json",
        "shard-r000-00000.safetensors",
    ]
    assert {oct(path.stat().st_mode & 0o777) for path in files} == {"0o644"}


def test_merge_refuses_disagreeing_parts(tmp_path: Path) -> None:
    TokenWriter(tmp_path, SPEC, config_hash="aaa", rank=0, world_size=2).close()
    part = tmp_path / "manifest-r001.json"
    part.write_text(
        (tmp_path / "manifest-r000.json")
        .read_text()
        .replace('"aaa"', '"bbb"')
        .replace('"rank": 0', '"rank": 1')
    )
    with pytest.raises(TokenFileError, match=at(part, r".*config_hash 'aaa' vs 'bbb'")):
        merge_manifests(tmp_path)


# ------------------------------------------------------------------------------------------
# batching for generators


def test_pad_collate_and_pack(tmp_path: Path) -> None:
    spec = TokenSpec([10], layout="H W")
    samples = [np.full((1, 2), 1), np.full((2, 2), 2), np.full((1, 3), 3)]
    write_samples(tmp_path, samples, spec=spec, labels=[5, 6, 7])
    dataset = TokenDataset(tmp_path)

    batch = pad_collate([dataset[0], dataset[1], dataset[2]], pad_id=-1)
    expected = torch.tensor([[1, 1, -1, -1], [2, 2, 2, 2], [3, 3, 3, -1]])
    assert torch.equal(batch["codes"], expected)
    assert batch["lengths"].tolist() == [2, 4, 3] and batch["labels"].tolist() == [5, 6, 7]

    blocks = list(pack(dataset, seq_len=4, separator_id=10))
    stream = [1, 1, 10, 2, 2, 2, 2, 10, 3, 3, 3, 10]
    assert all(block.shape == (4,) and block.dtype == torch.int64 for block in blocks)
    assert torch.cat(blocks).tolist() == stream
    assert torch.cat(list(pack(dataset, 5, 10))).tolist() == stream[:10]  # partial dropped
    assert torch.cat(list(pack(dataset, 3, 0, indices=[2]))).tolist() == [3, 3, 3]


def test_token_windows_negative_index_and_shape_mismatch(tmp_path: Path) -> None:
    from mediatok.training.tasks import TokenWindows

    spec = TokenSpec([10], layout="T")
    samples = [np.arange(n) % 10 for n in (0, 1, 6, 3)]
    write_samples(tmp_path / "t", samples, spec=spec, labels=[0, 1, 2, 3])
    windows = TokenWindows(TokenDataset(tmp_path / "t"), (3,), window=3, seed=5)
    # A negative index is the same item as its positive twin (same random window).
    for index in range(-4, 0):
        item, twin = windows[index], windows[index + 4]
        assert torch.equal(item["codes"], twin["codes"]) and item["length"] == twin["length"]
    assert windows[0]["length"] == 0 and windows[0]["codes"].tolist() == [0, 0, 0]
    assert windows[3]["length"] == 3 and windows[3]["codes"].tolist() == [0, 1, 2]

    # Windows cut the length axis only: another width is an error naming the sample.
    spec = TokenSpec([10], layout="H W")
    samples = [np.zeros((4, 4), dtype=np.int64), np.zeros((6, 3), dtype=np.int64)]
    write_samples(tmp_path / "hw", samples, spec=spec)
    windows = TokenWindows(TokenDataset(tmp_path / "hw"), (4, 4), window=4)
    assert windows[0]["codes"].shape == (4, 4)
    with pytest.raises(ValueError, match=r"'k1' has token shape \(6, 3\).*\(4, 4\)"):
        windows[1]


def test_media_rates_round_trip_per_sample(tmp_path):
    """A video's frame rate is stored per sample (videos of one folder differ), so that decoding
    writes each back at its source's rate; a bad rate is refused before anything is written."""
    spec = TokenSpec([16], layout="T H W")
    codes = torch.zeros(3, 2, 2, 2, dtype=torch.long)
    with TokenWriter(tmp_path / "t", spec) as writer:
        writer.add_batch(
            codes, keys=["a", "b", "c"], media_lengths=[5, 6, 7], media_rates=[24, 29.97, None]
        )
        with pytest.raises(ValueError, match=r"expected a finite media rate > 0, got -1"):
            writer.add(codes[0], key="d", media_length=5, media_rate=-1)
    dataset = TokenDataset(tmp_path / "t")
    assert [dataset[i].get("media_rate") for i in range(3)] == [24.0, 29.97, None]
    assert dataset[1]["media_length"] == 6 and "d" not in dataset.keys
