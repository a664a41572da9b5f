"""Error paths of the public API: each bad input raises the documented exception type with a
message naming what was expected, what came and, where a file is involved, the file.

Every test first shows the good input working (or the check firing before any work), so that a
check that stops raising, or starts raising for the wrong reason, fails here.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mediatok.api import evaluate_codec, load_generator
from mediatok.checkpoint import save_checkpoint
from mediatok.codecs import build_codec, load_codec
from mediatok.generation import ARConfig, SampleConfig, build_generator
from mediatok.tokens import TokenFileError, TokenSpec, TokenWriter
from mediatok.training import TrainConfig
from mediatok.training.run import train as train_generator
from mediatok.training.tasks import GeneratorDataConfig, GeneratorRunConfig, GeneratorTask
from tiny_configs import GENERATOR as TINY_AR
from tiny_configs import TITOK as TINY_TITOK
from tiny_configs import WAVTOKENIZER_16K

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SPEC = TokenSpec([64], layout="N")
SHAPE = (8,)
TINY_WAVTOKENIZER = {**WAVTOKENIZER_16K, "decoder_layers": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def write_tokens(directory: Path, spec: TokenSpec = SPEC, count: int = 4, **writer) -> Path:
    """`count` random samples of shape `SHAPE` under `spec`, keys "k0", "k1", ..., closed."""
    rng = np.random.default_rng(0)
    with TokenWriter(directory, spec, **writer) as tokens:
        for index in range(count):
            tokens.add(rng.integers(0, spec.vocab_sizes[0], size=SHAPE), key=f"k{index}")
    return directory


# ------------------------------------------------------------------------------------------
# 1. build_generator: an unknown registry name lists the known names


def test_build_generator_with_an_unknown_name_lists_the_known_names() -> None:
    assert build_generator("ar", TINY_AR, SPEC, SHAPE).spec == SPEC
    with pytest.raises(ValueError, match=r"^unknown generator 'gpt'; known: ar, masked$"):
        build_generator("gpt", TINY_AR, SPEC, SHAPE)
    with pytest.raises(ValueError, match=r"unknown generator 'AR'; known: ar, masked"):
        build_generator("AR", TINY_AR, SPEC, SHAPE)  # names are case-sensitive


def test_train_generator_with_an_unknown_name_lists_the_known_names(tmp_path: Path) -> None:
    config = GeneratorRunConfig(generator="gpt", data=GeneratorDataConfig(tokens=str(tmp_path)))
    with pytest.raises(ValueError, match=r"unknown generator 'gpt'; known: ar, masked"):
        train_generator(config)  # checked before the shards are even opened


# ------------------------------------------------------------------------------------------
# 2. generator training on shards of another TokenSpec


def run_config(tmp_path: Path, tokens: Path, spec: TokenSpec | None) -> GeneratorRunConfig:
    return GeneratorRunConfig(
        generator="ar",
        model=TINY_AR,
        data=GeneratorDataConfig(tokens=str(tokens)),
        spec=None if spec is None else spec.to_dict(),
        train=TrainConfig(
            steps=1,
            batch_size=2,
            num_workers=0,
            device="cpu",
            precision="fp32",
            tensorboard=False,
            out_dir=tmp_path / "run",
        ),
    )


def test_train_generator_refuses_shards_of_another_spec(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens")
    other = TokenSpec([128], layout="N")
    message = (
        f"{tokens}: expected token shards of the run's spec, vocab_sizes [128] layout 'N'; "
        "got vocab_sizes [64] layout 'N'; point data.tokens at the shards"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        train_generator(run_config(tmp_path, tokens, other))
    assert not (tmp_path / "run").exists()  # refused before any training


def test_train_generator_shows_a_difference_in_geometry_in_full(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens")
    other = TokenSpec([64], layout="N", geometry={"image_size": 32})
    # Same vocabulary and layout: only the full specs show where they differ.
    with pytest.raises(
        ValueError, match=r"'geometry': \{'image_size': 32\}.*; got .*'geometry': \{\}"
    ):
        train_generator(run_config(tmp_path, tokens, other))
    assert not (tmp_path / "run").exists()


def test_generator_task_refuses_shards_of_another_vocabulary(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens")

    def task(spec: TokenSpec) -> GeneratorTask:
        data = GeneratorDataConfig(tokens=str(tokens))
        return GeneratorTask("ar", TINY_AR, spec, SHAPE, data, SampleConfig())

    assert len(task(SPEC).dataset()) == 4
    manifest = re.escape(f"{tokens / 'manifest.json'}: ")
    with pytest.raises(
        TokenFileError,
        match=manifest + r"wrong vocabulary: expected vocab_sizes \[128\] layout 'N', "
        r"got vocab_sizes \[64\] layout 'N'",
    ):
        task(TokenSpec([128])).dataset()
    with pytest.raises(TokenFileError, match=manifest + r"wrong vocabulary: .* layout 'T', got"):
        task(TokenSpec([64], layout="T")).dataset()


# ------------------------------------------------------------------------------------------
# 3. load_generator on a checkpoint without its weights


def generator_checkpoint(directory: Path, ema: bool = False) -> Path:
    torch.manual_seed(0)
    model = build_generator("ar", TINY_AR, SPEC, SHAPE)
    task = {"generator": "ar", "model": TINY_AR, "spec": SPEC.to_dict(), "token_shape": [8]}
    state = model.state_dict() if ema else None
    return save_checkpoint(directory, model, kind="generator", run=task, ema=state)


def test_load_generator_without_weights_names_the_missing_file(tmp_path: Path) -> None:
    checkpoint = generator_checkpoint(tmp_path / "checkpoint")
    assert isinstance(load_generator(checkpoint).config, ARConfig)
    (checkpoint / "model.safetensors").unlink()
    message = (
        f"{checkpoint}: expected the generator's weights in model.safetensors beside "
        "config.json, got no such file (the directory holds config.json)"
    )
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}$"):
        load_generator(checkpoint)


def test_load_codec_without_weights_names_the_missing_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "codec"
    build_codec("titok", TINY_TITOK).save_pretrained(checkpoint)
    assert load_codec(checkpoint).name == "titok"
    (checkpoint / "model.safetensors").unlink()
    message = (
        f"{checkpoint}: expected the codec's weights in model.safetensors beside config.json, "
        "got no such file (the directory holds config.json)"
    )
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}$"):
        load_codec(checkpoint)


def test_load_generator_without_model_weights_lists_the_ema_weights(tmp_path: Path) -> None:
    checkpoint = generator_checkpoint(tmp_path / "checkpoint", ema=True)
    (checkpoint / "model.safetensors").unlink()
    assert isinstance(load_generator(checkpoint, ema=True).config, ARConfig)
    with pytest.raises(
        FileNotFoundError,
        match=r"model\.safetensors beside config\.json, got no such file \(the directory holds "
        r"config\.json, ema\.safetensors\)",
    ):
        load_generator(checkpoint, ema=False)


# ------------------------------------------------------------------------------------------
# 4. evaluate_codec with rFID on fewer than two images


@pytest.fixture
def titok_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return build_codec("titok", TINY_TITOK).save_pretrained(tmp_path / "checkpoint")


def test_evaluate_codec_refuses_rfid_on_one_image(titok_checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "one"
    images.mkdir()
    shutil.copy(ASSETS / "images" / "chelsea.png", images)
    out = tmp_path / "report"
    message = f"expected at least 2 images for rFID, got 1 from {images}; pass fid=False (--no-fid)"
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_codec(titok_checkpoint, images, out)
    assert not out.exists()  # refused before any work
    assert evaluate_codec(titok_checkpoint, images, out, fid=False)["num_images"] == 1


def test_evaluate_codec_refuses_rfid_when_the_limit_leaves_one_image(
    titok_checkpoint: Path, tmp_path: Path
) -> None:
    images = ASSETS / "images"
    message = f"expected at least 2 images for rFID, got 1 from {images} with limit=1"
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_codec(titok_checkpoint, images, tmp_path / "report", limit=1)


def test_evaluate_codec_refuses_an_empty_grid_before_scoring(
    titok_checkpoint: Path, tmp_path: Path
) -> None:
    # grid_pairs=0 crashed after scoring every image ("not enough values to unpack").
    with pytest.raises(ValueError, match="expected grid_pairs to be a positive integer, got 0"):
        evaluate_codec(titok_checkpoint, ASSETS / "images", tmp_path / "report", grid_pairs=0)
    assert not (tmp_path / "report").exists()


# ------------------------------------------------------------------------------------------
# 5. TokenWriter resuming into a directory written with another setup


def unfinished(directory: Path, spec: TokenSpec = SPEC, **writer) -> Path:
    """Three samples in shards of two, then a crash: one shard and a part manifest, no
    manifest.json (the state a killed job leaves for its rerun)."""
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError), TokenWriter(directory, spec, shard_size=2, **writer) as out:
        for index in range(3):
            out.add(rng.integers(0, spec.vocab_sizes[0], size=SHAPE), key=f"k{index}")
        raise RuntimeError("killed")
    assert not (directory / "manifest.json").exists()
    return directory


def test_resume_of_an_unfinished_directory_with_another_setup_raises(tmp_path: Path) -> None:
    directory = unfinished(tmp_path / "tokens", codec="titok", config_hash="aaa")
    assert TokenWriter(directory, SPEC, codec="titok", config_hash="aaa").done_keys == {
        "k0",
        "k1",
    }
    prefix = re.escape(
        f"{directory} holds tokens written with another setup (manifest-r000.json vs this writer): "
    )
    with pytest.raises(ValueError, match=prefix + r"codec 'titok' vs 'vqgan'; write to a new"):
        TokenWriter(directory, SPEC, codec="vqgan", config_hash="aaa")
    with pytest.raises(ValueError, match=prefix + r"config_hash 'aaa' vs 'bbb'"):
        TokenWriter(directory, SPEC, codec="titok", config_hash="bbb")
    with pytest.raises(ValueError, match=prefix + r"spec .*\[64\].* vs .*\[128\]"):
        TokenWriter(directory, TokenSpec([128]), codec="titok", config_hash="aaa")
    geometry = TokenSpec([64], geometry={"image_size": 32})
    with pytest.raises(ValueError, match=prefix + r"spec .*'geometry': \{\}.* vs .*'image_size'"):
        TokenWriter(directory, geometry, codec="titok", config_hash="aaa")


def test_resume_of_a_finished_directory_with_another_spec_raises(tmp_path: Path) -> None:
    directory = write_tokens(tmp_path / "tokens", codec="titok")
    with pytest.raises(
        ValueError,
        match=re.escape(f"{directory} holds tokens written with another setup (manifest.json vs")
        + r".*spec .*\[64\].* vs .*\[128\]",
    ):
        TokenWriter(directory, TokenSpec([128]), codec="titok")


def test_resume_adopting_an_orphan_shard_of_another_setup_raises(tmp_path: Path) -> None:
    # Killed after the rename of the first shard, before its part manifest was written.
    directory = unfinished(tmp_path / "tokens", codec="titok")
    (directory / "manifest-r000.json").unlink()
    shard = directory / "shard-r000-00000.safetensors"
    with pytest.raises(
        TokenFileError,
        match=re.escape(f"{shard}: written by another setup (this shard vs this writer): ")
        + r"codec 'titok' vs 'vqgan'; write to a new directory",
    ):
        TokenWriter(directory, SPEC, codec="vqgan")
    with pytest.raises(
        TokenFileError,
        match=re.escape(f"{shard}: wrong vocabulary: expected vocab_sizes [128] layout 'N', ")
        + re.escape("got vocab_sizes [64] layout 'N'"),
    ):
        TokenWriter(directory, TokenSpec([128]), codec="titok")
    assert TokenWriter(directory, SPEC, codec="titok").done_keys == {"k0", "k1"}  # adopted


# ------------------------------------------------------------------------------------------
# 6. AudioFolder with a bad segment_seconds


@pytest.fixture
def audio_root(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    root.mkdir()
    soundfile.write(root / "a.wav", np.zeros(1600, np.float32), 16000)
    return root


def test_audio_folder_accepts_a_good_segment(audio_root: Path) -> None:
    from mediatok.data import AudioFolder

    assert AudioFolder(audio_root, 16000, segment_seconds=0.25).segment_samples == 4000
    assert AudioFolder(audio_root, 16000, segment_seconds=1).segment_samples == 16000
    assert AudioFolder(audio_root, 16000, segment_seconds=None).segment_samples is None


@pytest.mark.parametrize(
    ("segment_seconds", "shown"),
    [(0, "0"), (0.0, "0.0"), (-1.0, "-1.0"), (math.nan, "nan"), (math.inf, "inf"), (1e-6, "1e-06")],
)
def test_audio_folder_refuses_a_segment_shorter_than_one_sample(
    audio_root: Path, segment_seconds: float, shown: str
) -> None:
    from mediatok.data import AudioFolder

    message = (
        "expected segment_seconds to be None or a duration of at least one sample, "
        f"got {shown} at 16000 Hz"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        AudioFolder(audio_root, 16000, segment_seconds=segment_seconds)


@pytest.mark.parametrize(
    ("segment_seconds", "shown"),
    [("1.0", "str '1.0'"), (True, "bool True"), ([1.0], "list [1.0]")],
)
def test_audio_folder_refuses_a_segment_that_is_not_a_number(
    audio_root: Path, segment_seconds: object, shown: str
) -> None:
    from mediatok.data import AudioFolder

    message = f"expected segment_seconds to be None or a number of seconds, got {shown}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        AudioFolder(audio_root, 16000, segment_seconds=segment_seconds)


# ------------------------------------------------------------------------------------------
# 7. WavTokenizer.encode_long / decode_long with bad chunk arguments


@pytest.fixture(scope="module")
def wavtokenizer():
    torch.manual_seed(0)
    return build_codec("wavtokenizer", TINY_WAVTOKENIZER).eval()


def test_long_encoding_and_decoding_accept_good_chunks(wavtokenizer) -> None:
    audio = torch.rand(1, 1, 64) * 2 - 1
    codes = wavtokenizer.encode_long(audio, chunk_seconds=32 / 16000).codes
    assert codes.shape == (1, 8) and torch.equal(codes, wavtokenizer.encode(audio).codes)
    assert wavtokenizer.encode_long(audio, chunk_seconds=1).codes.shape == (1, 8)  # int seconds
    assert wavtokenizer.decode_long(codes, chunk_tokens=4, overlap_tokens=0).shape == (1, 1, 64)
    assert wavtokenizer.decode_long(codes, chunk_tokens=0, overlap_tokens=None).shape == (1, 1, 64)


@pytest.mark.parametrize(
    ("chunk_seconds", "error", "message"),
    [
        ("1", TypeError, "expected chunk_seconds to be a number of seconds, got str '1'"),
        (None, TypeError, "expected chunk_seconds to be a number of seconds, got NoneType None"),
        (True, TypeError, "expected chunk_seconds to be a number of seconds, got bool True"),
        (0, ValueError, "expected chunk_seconds > 0, got 0"),
        (-1.5, ValueError, "expected chunk_seconds > 0, got -1.5"),
        (math.nan, ValueError, "expected chunk_seconds > 0, got nan"),
    ],
)
def test_encode_long_refuses_bad_chunk_seconds(wavtokenizer, chunk_seconds, error, message):
    with pytest.raises(error, match=f"^{re.escape('wavtokenizer.encode_long ' + message)}$"):
        wavtokenizer.encode_long(torch.zeros(1, 1, 64), chunk_seconds=chunk_seconds)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"chunk_tokens": "4"}, TypeError, "expected chunk_tokens to be an int >= 0, got str '4'"),
        (
            {"chunk_tokens": None},
            TypeError,
            "expected chunk_tokens to be an int >= 0, got NoneType None",
        ),
        (
            {"chunk_tokens": 2.5},
            TypeError,
            "expected chunk_tokens to be an int >= 0, got float 2.5",
        ),
        ({"chunk_tokens": -1}, ValueError, "expected chunk_tokens >= 0, got -1"),
        (
            {"overlap_tokens": "2"},
            TypeError,
            "expected overlap_tokens to be an int >= 0, got str '2'",
        ),
        (
            {"overlap_tokens": 1.5},
            TypeError,
            "expected overlap_tokens to be an int >= 0, got float 1.5",
        ),
        (
            {"overlap_tokens": False},
            TypeError,
            "expected overlap_tokens to be an int >= 0, got bool",
        ),
        ({"overlap_tokens": -2}, ValueError, "expected overlap_tokens >= 0, got -2"),
    ],
)
def test_decode_long_refuses_bad_chunk_arguments(wavtokenizer, arguments, error, message):
    codes = torch.zeros(1, 8, dtype=torch.long)
    with pytest.raises(error, match=f"^{re.escape('wavtokenizer.decode_long ' + message)}"):
        wavtokenizer.decode_long(codes, **arguments)
