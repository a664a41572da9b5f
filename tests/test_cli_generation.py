"""Generators end to end through the CLI: train on token shards written by `mediatok encode` with an
image codec and an audio codec, sample back to PNG / WAV, reproducibly; gFID of a sample folder."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import soundfile
import torch

import mediatok
from mediatok.api import load, sample
from mediatok.cli import main
from mediatok.codecs import build_codec
from mediatok.generation import ARTransformer, MaskedTransformer, read_generator_run
from tiny_configs import GENERATOR as TINY_MODEL
from tiny_configs import TITOK as TINY_TITOK
from tiny_configs import WAVTOKENIZER as TINY_WAVTOKENIZER

ROOT = Path(__file__).resolve().parents[1]


def encoded(tmp: Path, codec_name: str, options: dict, media: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    checkpoint = build_codec(codec_name, options).save_pretrained(tmp / "codec")
    tokens = tmp / "tokens"
    assert main(["encode", str(checkpoint), str(media), "-o", str(tokens), "--device", "cpu"]) == 0
    return checkpoint, tokens


def train(tmp: Path, generator: str, tokens: Path, codec: Path, sample=None, **data) -> Path:
    config = tmp / f"{generator}.yaml"
    steps = {"steps": 4} if generator == "masked" else {}  # AR generators take no steps
    config.write_text(
        json.dumps(
            {
                "task": "generator",
                "generator": generator,
                "model": TINY_MODEL,
                "data": {"tokens": str(tokens), **data},
                "sample": {"num_samples": 2, **steps, **(sample or {})},
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
    run = read_generator_run(checkpoint)
    assert run.token_shape == (8,) and run.spec.layout == "N"
    # Every image has TiTok's 8 tokens: the AR model must never end one early, and its
    # checkpoint says so (a masked generator always fills every position).
    if generator == "ar":
        assert run.model["variable_length"] is False and not model.variable_length
    assert list((tmp_path / f"run-{generator}").glob("samples-0000003/*.png"))

    args = ["sample", str(checkpoint), "-n", "3", "--device", "cpu", "--seed", "5"]
    main([*args, "-o", str(tmp_path / "a")])
    main([*args, "-o", str(tmp_path / "b")])
    main([*args[:-1], "6", "-o", str(tmp_path / "c")])
    first = digests(tmp_path / "a", "sample-*.png")
    assert len(first) == 3 and first == digests(tmp_path / "b", "sample-*.png")
    assert first != digests(tmp_path / "c", "sample-*.png")
    assert (tmp_path / "a" / "grid.png").is_file()  # beside them, its own grid
    assert (tmp_path / "a" / "tokens" / "manifest.json").is_file()
    if generator == "masked":
        with pytest.raises(ValueError, match="compile: false for a masked generator"):
            sample(checkpoint, 2, compile=True)


def test_audio_tokens_train_on_windows_and_sample_wavs(tmp_path):
    codec, tokens = encoded(tmp_path, "wavtokenizer", TINY_WAVTOKENIZER, ROOT / "assets" / "speech")
    with pytest.raises(ValueError, match=r"set data\.window"):
        train(tmp_path, "ar", tokens, codec)
    checkpoint = train(tmp_path, "ar", tokens, codec, window=40)
    run = read_generator_run(checkpoint)
    # Every clip (3.4 s or more) is longer than a window: the model trains on full windows
    # only, never learns to end, and samples whole windows.
    assert run.token_shape == (40,) and run.model["variable_length"] is False
    out = tmp_path / "wavs"
    main(["sample", str(checkpoint), "-n", "2", "--device", "cpu", "-o", str(out)])
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    for wav in wavs:
        info = soundfile.info(str(wav))
        assert info.samplerate == 24000 and info.frames == 40 * 320


def test_sample_without_a_codec_says_how_to_name_one(tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    checkpoint = train(tmp_path, "ar", tokens, codec)
    config = json.loads((checkpoint / "config.json").read_text())
    config["run"]["codec"] = None
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert sample(checkpoint, 2).codec is None
    args = ["sample", str(checkpoint), "-n", "2", "--device", "cpu", "-o", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=r"records no codec to decode with; pass .* --codec CKPT"):
        main(args)
    main([*args, "--codec", str(codec)])
    assert len(list((tmp_path / "o").glob("sample-*.png"))) == 2


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
    with pytest.raises(ValueError, match=r"cannot decode the generator's tokens: expected vocab"):
        sample(checkpoint, 2, codec=other)  # would decode into plausible garbage
    # The same vocabulary and layout, another image size: the check used to stop at the
    # vocabulary, and the samples decoded into images of the wrong size.
    assert read_generator_run(checkpoint).spec.geometry["image_size"] == 32
    larger = build_codec("titok", {**TINY_TITOK, "image_size": 64})
    larger = larger.save_pretrained(tmp_path / "codec-64")
    with pytest.raises(ValueError, match=r"expected geometry \{'image_size': 64\}, got \{'image_"):
        sample(checkpoint, 2, codec=larger)
    with pytest.raises(ValueError, match="expected a codec checkpoint to decode with"):
        sample(checkpoint, 2, codec=checkpoint)


@pytest.mark.parametrize(
    ("generator", "sample", "message"),
    [
        ("ar", {"cfg_scale": 2.0}, r"sample: expected labels \(of a class-conditional model\)"),
        ("masked", {"cfg_scale": 2.0}, r"sample: expected labels \(of a class-conditional mod"),
        ("masked", {"compile": True}, "compile: false for a masked generator"),
        ("masked", {"top_p": 0.9}, "top_p: null for a masked generator"),
        # an AR generator used to ignore them without a word
        ("ar", {"steps": 3}, "sample: expected no steps for an 'ar' generator"),
    ],
)
def test_bad_sampling_settings_fail_before_training(generator, sample, message, tmp_path):
    codec, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    with pytest.raises(ValueError, match=message):
        train(tmp_path, generator, tokens, codec, sample=sample)  # unlabelled shards
    assert not (tmp_path / f"run-{generator}").exists()  # nothing trained


def saved_generator(tmp: Path, generator: str = "ar", num_classes: int = 0) -> Path:
    """An untrained tiny generator checkpoint over a tiny TiTok's tokens, saved as `mediatok
    train` saves one (no training: these tests check the sampling path, not what it learned)."""
    from mediatok.checkpoint import save_checkpoint
    from mediatok.generation import build_generator

    torch.manual_seed(0)
    codec = build_codec("titok", TINY_TITOK)
    codec_path = codec.save_pretrained(tmp / "codec")
    config = {**TINY_MODEL, "num_classes": num_classes}
    model = build_generator(generator, config, codec.token_spec, (8,))
    task = {
        "generator": generator,
        "model": config,
        "spec": codec.token_spec.to_dict(),
        "token_shape": [8],
        "codec": str(codec_path),
        "sample": {"steps": 4} if generator == "masked" else {},
    }
    return save_checkpoint(tmp / f"gen-{generator}", model, kind="generator", run=task)


def test_a_generator_refuses_a_codec_of_another_frame_rate():
    """Audio at 40 and 75 tokens per second (hop 600 and 320) shares the vocabulary and layout;
    a generator trained on one's tokens, decoded by the other, would sample speech of the wrong
    speed. `check_decodes` serves `sample` and the samples drawn at each evaluation."""
    from mediatok.pipelines import check_decodes

    fast = build_codec("wavtokenizer", {**TINY_WAVTOKENIZER, "hop_length": 320})
    slow = build_codec("wavtokenizer", {**TINY_WAVTOKENIZER, "hop_length": 600})
    assert check_decodes(fast, fast.token_spec, "gen", "the generator's tokens") is fast
    with pytest.raises(
        ValueError,
        match=r"^gen cannot decode the generator's tokens: "
        r"expected geometry \{'hop_length': 600\}, got \{'hop_length': 320\}; decode with",
    ):
        check_decodes(slow, fast.token_spec, "gen", "the generator's tokens")


def test_a_generator_checkpoint_without_geometry_still_samples_and_decodes(tmp_path):
    """A checkpoint whose recorded spec has no geometry is checked on vocabulary and layout."""
    checkpoint = saved_generator(tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    del config["run"]["spec"]["geometry"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    samples = mediatok.sample(checkpoint, 2)  # the README's spelling
    assert samples.codec is not None and samples.codes.shape == (2, 8)
    assert samples.codec.decode(samples.tokens).shape[0] == 2


def test_decode_with_a_generator_checkpoint_says_so(tmp_path):
    # `mediatok decode GENERATOR TOKENS` used to stop with an AttributeError on `token_spec`.
    from mediatok.tokens import TokenWriter

    checkpoint = saved_generator(tmp_path)
    codec = load(tmp_path / "codec")
    with TokenWriter(tmp_path / "tokens", codec.token_spec, codec=codec.name) as writer:
        writer.add_batch(torch.randint(64, (2, 8)), keys=["a", "b"])
    args = ["decode", str(checkpoint), str(tmp_path / "tokens"), "-o", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="expected a codec checkpoint to decode with, got a gen"):
        main(args)


def test_an_ar_checkpoint_that_does_not_say_variable_length_is_fixed_length(tmp_path):
    """`model.variable_length` is False unless the run said (or the shards decided) otherwise:
    a 1-D model then samples all its tokens."""
    checkpoint = saved_generator(tmp_path)
    assert "variable_length" not in read_generator_run(checkpoint).model
    model = load(checkpoint)
    assert model.config.variable_length is False and not model.variable_length
    samples = sample(checkpoint, 2, seed=0)
    assert samples.codes.shape == (2, 8) and samples.lengths.tolist() == [8, 8]


@pytest.mark.parametrize("generator", ["ar", "masked"])
def test_neighbouring_seeds_share_no_batch(generator, tmp_path):
    # Batch b used to draw from seed + b: seed 1's first batch was seed 0's second.
    checkpoint = saved_generator(tmp_path, generator)
    first = sample(checkpoint, 4, batch_size=2, seed=0).codes
    second = sample(checkpoint, 4, batch_size=2, seed=1).codes
    assert torch.equal(sample(checkpoint, 4, batch_size=2, seed=0).codes, first)
    assert not torch.equal(first[2:], second[:2])


def test_sample_into_a_folder_of_other_samples_refuses(tmp_path):
    # A rerun skipped the tokens already written but rewrote the PNGs: with another seed the
    # folder ended up with the new images beside the old run's tokens.
    checkpoint = saved_generator(tmp_path, "ar", num_classes=3)
    out = tmp_path / "out"
    args = ["sample", str(checkpoint), "-n", "3", "--batch-size", "2", "--device", "cpu"]
    assert main([*args, "--seed", "5", "-o", str(out)]) == 0
    before = digests(out, "*.png")
    assert main([*args, "--seed", "5", "-o", str(out)]) == 0  # the same samples: a rerun is fine
    assert digests(out, "*.png") == before
    with pytest.raises(ValueError, match="already holds other samples"):
        main([*args, "--seed", "6", "-o", str(out)])
    assert digests(out, "*.png") == before  # nothing overwritten
    from mediatok.tokens import TokenDataset

    stored = TokenDataset(out / "tokens")
    expected = sample(checkpoint, 3, batch_size=2, seed=5)
    for index, key in enumerate(stored.keys):
        row = int(key.rsplit("-", 1)[1])
        assert torch.equal(stored[index]["codes"], expected.codes[row])


def unlabelled_run(
    tmp: Path, generator: str, model: dict, eval_every: int, sample: dict | None = None
) -> tuple[Path, Path]:
    """A one-step generator run config over four unlabelled 6-token samples of 16 codes: the
    YAML's path and the run's out_dir."""
    from mediatok.tokens import TokenSpec, TokenWriter

    with TokenWriter(tmp / "tokens", TokenSpec([16])) as writer:
        writer.add_batch(torch.randint(16, (4, 6)), keys=[f"k{i}" for i in range(4)])
    config, out = tmp / "run.yaml", tmp / "run"
    train = {"steps": 1, "batch_size": 2, "num_workers": 0, "out_dir": str(out), "device": "cpu"}
    run = {
        "task": "generator",
        "generator": generator,
        "model": {**TINY_MODEL, **model},
        "data": {"tokens": str(tmp / "tokens")},
        **({} if sample is None else {"sample": sample}),
        "train": {**train, "eval_every": eval_every, "tensorboard": False},
    }
    config.write_text(json.dumps(run))
    return config, out


@pytest.mark.parametrize("generator", ["ar", "masked"])
def test_classes_without_labelled_shards_fail_before_training(generator, tmp_path):
    # An AR model trained the null class alone without a word; a masked one stopped at its
    # first batch with an error about its labels argument.
    config, out = unlabelled_run(tmp_path, generator, {"num_classes": 3}, eval_every=0)
    with pytest.raises(ValueError, match="num_classes=3 needs shards with labels"):
        main(["train", str(config)])
    assert not out.exists()  # nothing trained


def test_more_masked_steps_than_tokens_fail_before_training(tmp_path):
    # A masked generator unmasks at least one token per step: sample.steps > tokens used to
    # stop the run at its first evaluation, after the training steps before it.
    sample = {"steps": 8, "num_samples": 2}
    config, out = unlabelled_run(tmp_path, "masked", {}, eval_every=1, sample=sample)
    with pytest.raises(ValueError, match=r"sample: expected steps to be an int in \[1, 6\], got 8"):
        main(["train", str(config)])
    assert not out.exists()  # nothing trained


def test_a_codec_of_other_tokens_fails_before_training(tmp_path):
    # The run's codec decodes the samples at each evaluation: one of another image size (same
    # vocabulary) used to be refused only there, after the training steps before it.
    _, tokens = encoded(tmp_path, "titok", TINY_TITOK, ROOT / "assets" / "images")
    other = build_codec("titok", {**TINY_TITOK, "image_size": 64}).save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match=r"expected geometry .*64.*, got .*32"):
        train(tmp_path, "ar", tokens, other)
    assert not (tmp_path / "run-ar").exists()  # nothing trained


def variable_length_audio_generator(tmp: Path) -> tuple[Path, Path]:
    """An untrained variable-length AR generator of 40 tokens over a tiny WavTokenizer (attention
    in its decoder), whose head gives every id and the end token the same logit: about half of
    its samples end before 40 tokens. Returns the generator and codec checkpoints."""
    from mediatok.checkpoint import save_checkpoint
    from mediatok.generation import build_generator

    torch.manual_seed(0)
    codec = build_codec("wavtokenizer", TINY_WAVTOKENIZER)
    codec_path = codec.save_pretrained(tmp / "codec")
    config = {**TINY_MODEL, "variable_length": True}
    model = build_generator("ar", config, codec.token_spec, (40,))
    torch.nn.init.zeros_(model.head.weight)
    task = {
        "generator": "ar",
        "model": config,
        "spec": codec.token_spec.to_dict(),
        "token_shape": [40],
        "codec": str(codec_path),
    }
    checkpoint = save_checkpoint(tmp / "gen", model, kind="generator", run=task)
    return checkpoint, codec_path


def test_variable_length_audio_samples_decode_without_their_padding(tmp_path):
    """Each WAV is its tokens decoded alone. The samples used to be decoded with the code-0
    padding after their end token, which the decoder's attention hears: every sample of a
    batch with a shorter one changed (differences of 0.03 on a trained codec's 0.04-RMS clip)."""
    from mediatok.pipelines import write_decoded
    from mediatok.tokens import TokenDataset

    checkpoint, codec_path = variable_length_audio_generator(tmp_path)
    out = tmp_path / "out"
    main(["sample", str(checkpoint), "-n", "6", "--device", "cpu", "-o", str(out)])
    stored = TokenDataset(out / "tokens")  # each sample's codes up to its end token
    assert int(stored.lengths.min()) < 40 and int(stored.lengths.max()) == 40
    codec = load(codec_path)
    hop = codec.config.hop_length
    for index, key in enumerate(stored.keys):
        codes = stored[index]["codes"]
        alone = codec.decode(codes[None])[0, 0].clamp(-1, 1)  # (n · hop,)
        written, rate = soundfile.read(str(out / f"{key}.wav"), dtype="float32")
        assert rate == 24000 and written.shape == (len(codes) * hop,)
        # 16-bit PCM: within a step of 1/32768
        torch.testing.assert_close(torch.from_numpy(written), alone, atol=2**-14, rtol=0)
    # The same through `write_decoded` (also what training evaluations write): padded with
    # nonzero codes, the padding still must not count.
    codes = torch.randint(64, (2, 40), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([40, 13])
    [_, short] = write_decoded(codec, codes, tmp_path / "direct", ["a", "b"], lengths)
    written, _ = soundfile.read(str(short), dtype="float32")
    alone = codec.decode(codes[1:, :13])[0, 0].clamp(-1, 1)
    torch.testing.assert_close(torch.from_numpy(written), alone, atol=2**-14, rtol=0)
    padded = codec.decode(codes[1:])[0, 0, : 13 * hop].clamp(-1, 1)
    assert float((padded - alone).abs().max()) > 1e-3  # the padding would have been heard


def test_samples_tokens_carry_the_lengths(tmp_path):
    checkpoint, _ = variable_length_audio_generator(tmp_path)
    samples = sample(checkpoint, 4)
    tokens = samples.tokens
    assert torch.equal(tokens.codes, samples.codes) and torch.equal(tokens.lengths, samples.lengths)
    for row, length in enumerate(samples.lengths.tolist()):
        alone = samples.codec.decode(samples.codes[row : row + 1, :length])[0]
        torch.testing.assert_close(samples.codec.decode(tokens)[row, :, : length * 320], alone)


def test_the_recorded_codec_is_found_from_any_directory(tmp_path, monkeypatch):
    """A run records its codec as an absolute path: `mediatok sample` from another directory
    used to fail with "demo-output/image/checkpoint: not a codec checkpoint (no config.json)".
    A recorded codec that is no longer there is named, with how to name another."""
    run = tmp_path / "run"
    codec, tokens = encoded(run, "titok", TINY_TITOK, ROOT / "assets" / "images")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(run)
    checkpoint = train(run, "ar", tokens, Path("codec"))  # as the YAML names it
    assert read_generator_run(checkpoint).codec == str(codec.resolve())
    monkeypatch.chdir(elsewhere)
    args = ["sample", str(checkpoint), "-n", "2", "--device", "cpu"]
    assert main([*args, "-o", "a"]) == 0
    assert len(list((elsewhere / "a").glob("sample-*.png"))) == 2

    moved = codec.rename(run / "moved-codec")
    message = (
        "the codec recorded in the generator checkpoint was not found at "
        + re.escape(str(codec.resolve()))
        + r"; pass the codec checkpoint with --codec CKPT"
    )
    with pytest.raises(FileNotFoundError, match=message):
        main([*args, "-o", "b"])
    assert main([*args, "-o", "b", "--codec", str(moved)]) == 0


@pytest.mark.parametrize("generator", ["ar", "masked"])
def test_guidance_scale_one_with_a_linear_schedule_is_no_guidance(generator, tmp_path):
    # Both generators take scale 1 as no guidance, whatever the schedule: an unconditional run
    # used to be refused unless it also set sample.cfg_schedule: constant.
    sample = {"cfg_scale": 1.0, "cfg_schedule": "linear", "num_samples": 2}
    if generator == "masked":
        sample["steps"] = 3
    config, out = unlabelled_run(tmp_path, generator, {}, eval_every=1, sample=sample)
    assert main(["train", str(config)]) == 0
    assert (out / "checkpoint" / "config.json").is_file()


def test_steps_for_an_ar_generator_are_refused(tmp_path):
    # `mediatok sample AR_CKPT --steps 3` used to sample as without it.
    checkpoint = saved_generator(tmp_path, "ar")
    assert sample(checkpoint, 2).codes.shape == (2, 8)
    message = r"expected no steps for an 'ar' generator .*masked generators only.*, got steps=3"
    with pytest.raises(ValueError, match=message):
        sample(checkpoint, 2, steps=3)
    args = ["sample", str(checkpoint), "-n", "2", "--device", "cpu", "-o", str(tmp_path / "o")]
    with pytest.raises(ValueError, match=message):
        main([*args, "--steps", "3"])
    masked = saved_generator(tmp_path / "m", "masked")
    assert sample(masked, 2, steps=3).codes.shape == (2, 8)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": float("inf")}, r"expected a finite temperature >= 0 \(0: greedy\)"),
        ({"cfg_scale": float("nan")}, r"expected a finite cfg_scale \(1: no guidance\)"),
        ({"choice_temperature": float("inf")}, "expected a finite choice_temperature >= 0"),
    ],
)
def test_non_finite_sampling_settings_are_refused_up_front(settings, message, tmp_path):
    from mediatok.generation import SampleConfig

    with pytest.raises(ValueError, match=message):
        SampleConfig(**settings)
    checkpoint = saved_generator(tmp_path, "ar", num_classes=3)
    with pytest.raises(ValueError, match=message):
        sample(checkpoint, 2, **settings)
