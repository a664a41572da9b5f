"""Generators end to end through the CLI: train on token shards written by `mediatok encode` with an
image codec and an audio codec, sample back to PNG / WAV, reproducibly; gFID of a sample folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import soundfile
import torch

from mediatok.api import generator_run, load, sample
from mediatok.cli import main
from mediatok.codecs import build_codec
from mediatok.generation import ARTransformer, MaskedTransformer

ROOT = Path(__file__).resolve().parents[1]
TINY_TITOK = {
    "image_size": 32,
    "patch_size": 8,
    "size": "custom",
    "width": 32,
    "depth": 1,
    "heads": 4,
    "num_tokens": 8,
    "token_dim": 6,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64}},
}
TINY_WAVTOKENIZER = {
    "channels": 4,
    "latent_dim": 16,
    "encoder_attention_layers": 1,
    "decoder_dim": 16,
    "decoder_intermediate": 32,
    "decoder_layers": 1,
    "attention_heads": 2,
    "quantizer": {"kind": "vq", "options": {"codebook_size": 64}},
}
TINY_MODEL = {"dim": 32, "depth": 1, "heads": 4}


def encoded(tmp: Path, codec_name: str, options: dict, media: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    checkpoint = build_codec(codec_name, options).save_pretrained(tmp / "codec")
    tokens = tmp / "tokens"
    assert main(["encode", str(checkpoint), str(media), "-o", str(tokens), "--device", "cpu"]) == 0
    return checkpoint, tokens


def train(tmp: Path, generator: str, tokens: Path, codec: Path, sample=None, **data) -> Path:
    config = tmp / f"{generator}.yaml"
    config.write_text(
        json.dumps(
            {
                "task": "generator",
                "generator": generator,
                "model": TINY_MODEL,
                "data": {"tokens": str(tokens), **data},
                "sample": {"num_samples": 2, "steps": 4, **(sample or {})},
                "codec": str(codec),
                "train": {
                    "steps": 3,
                    "batch_size": 4,
                    "lr": 1e-3,
                    "num_workers": 0,
                    "eval_every": 3,
                    "out_dir": str(tmp / f"run-{generator}"),
                    "tensorboard": False,
                    "device": "cpu",
                },
            }
        )
    )
    assert main(["train", str(config)]) == 0
    return tmp / f"run-{generator}" / "checkpoint"


def digests(folder: Path, pattern: str) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob(pattern))
    }


@pytest.mark.parametrize("generator", ["ar", "masked"])
def test_image_tokens_train_and_sample_reproducibly(generator, tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    checkpoint = train(tmp_path, generator, tokens, codec)
    model = load(checkpoint)
    assert isinstance(model, ARTransformer if generator == "ar" else MaskedTransformer)
    run = generator_run(checkpoint)
    assert run["token_shape"] == [8] and run["spec"]["layout"] == "N"
    assert list((tmp_path / f"run-{generator}").glob("samples-0000003/*.png"))

    args = ["sample", str(checkpoint), "-n", "3", "--device", "cpu", "--seed", "5"]
    main([*args, "-o", str(tmp_path / "a")])
    main([*args, "-o", str(tmp_path / "b")])
    main([*args[:-1], "6", "-o", str(tmp_path / "c")])
    first = digests(tmp_path / "a", "*.png")
    assert len(first) == 3 and first == digests(tmp_path / "b", "*.png")
    assert first != digests(tmp_path / "c", "*.png")
    assert (tmp_path / "a" / "tokens" / "manifest.json").is_file()
    if generator == "masked":
        with pytest.raises(ValueError, match="compile: false for a masked generator"):
            sample(checkpoint, 2, compile=True)


def test_audio_tokens_train_on_windows_and_sample_wavs(tmp_path):
    codec, tokens = encoded(tmp_path, "wavtokenizer", TINY_WAVTOKENIZER, ROOT / "assets" / "speech")
    with pytest.raises(ValueError, match=r"set data\.window"):
        train(tmp_path, "ar", tokens, codec)
    checkpoint = train(tmp_path, "ar", tokens, codec, window=40)
    assert generator_run(checkpoint)["token_shape"] == [40]
    out = tmp_path / "wavs"
    main(["sample", str(checkpoint), "-n", "2", "--device", "cpu", "-o", str(out)])
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:
        info = soundfile.info(str(wav))
        assert info.samplerate == 24000 and 0 < info.frames <= 40 * 320


def test_sample_without_a_codec_says_how_to_name_one(tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    checkpoint = train(tmp_path, "ar", tokens, codec)
    config = json.loads((checkpoint / "config.json").read_text())
    config["task"]["codec"] = None
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert sample(checkpoint, 2).codec is None
    args = ["sample", str(checkpoint), "-n", "2", "--device", "cpu", "-o", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="--codec"):
        main(args)
    main([*args, "--codec", str(codec)])
    assert len(list((tmp_path / "o").glob("*.png"))) == 2


@pytest.mark.slow
def test_eval_gfid_of_a_sample_folder(tmp_path):
    out = tmp_path / "report"
    images = str(ROOT / "assets" / "images")
    assert main(["eval", images, "--reference", images, "-o", str(out), "--device", "cpu"]) == 0
    assert abs(json.loads((out / "metrics.json").read_text())["gfid"]) < 1e-3


def test_sample_rejects_bad_requests(tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    checkpoint = train(tmp_path, "ar", tokens, codec)
    with pytest.raises(ValueError, match="expected num_samples >= 1, got 0"):
        sample(checkpoint, 0)
    with pytest.raises(ValueError, match="expected batch_size to be a positive integer, got 0"):
        sample(checkpoint, 2, batch_size=0)
    with pytest.raises(ValueError, match="an unconditional generator takes no class, got 1"):
        sample(checkpoint, 2, label=1)
    with pytest.raises(ValueError, match="expected a generator checkpoint"):
        sample(codec, 2)
    with pytest.raises(ValueError, match="precision"):
        sample(checkpoint, 2, precision="fp16")
    assert sample(checkpoint, 2, precision="bf16", seed=1).codes.shape == (2, 8)
    other = {**TINY_TITOK, "quantizer": {"kind": "vq", "options": {"codebook_size": 128}}}
    other = build_codec("titok", other).save_pretrained(tmp_path / "other-codec")
    with pytest.raises(ValueError, match=r"expected a codec of the generator's tokens"):
        sample(checkpoint, 2, codec=other)  # would decode into plausible garbage
    with pytest.raises(ValueError, match="expected a codec checkpoint to decode with"):
        sample(checkpoint, 2, codec=checkpoint)


@pytest.mark.parametrize(
    ("generator", "sample", "message"),
    [
        ("ar", {"cfg_scale": 2.0}, "needs a class-conditional generator"),
        ("masked", {"cfg_scale": 2.0}, "needs a class-conditional generator"),
        ("masked", {"compile": True}, "compile: false for a masked generator"),
        ("masked", {"top_p": 0.9}, "top_p: null for a masked generator"),
    ],
)
def test_bad_sampling_settings_fail_before_training(generator, sample, message, tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    with pytest.raises(ValueError, match=message):
        train(tmp_path, generator, tokens, codec, sample=sample)  # unlabelled shards
    assert not (tmp_path / f"run-{generator}").exists()  # nothing trained
