"""`mediatok train|encode|decode|eval` with a tiny audio codec on shipped speech clips: any rate and
channel count in, source durations out, bad files named, long files chunked."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mediatok.cli import main
from mediatok.codecs import build_codec, load_codec
from mediatok.data import read_audio, write_audio
from mediatok.data.audio import resample
from mediatok.tokens import TokenDataset
from tiny_configs import WAVTOKENIZER as TINY_WAVTOKENIZER

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "assets" / "speech"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    codec = build_codec("wavtokenizer", TINY_WAVTOKENIZER)
    return codec.save_pretrained(tmp_path_factory.mktemp("audio") / "checkpoint")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Two 24 kHz FLACs, a stereo 44.1 kHz WAV, a 40 s file (chunked), an empty file and a
    WAV with a header and no samples."""
    root = tmp_path_factory.mktemp("clips")
    (root / "sub").mkdir()
    shutil.copy(SPEECH / "00-en-us.flac", root / "a.flac")
    shutil.copy(SPEECH / "01-en-gb.flac", root / "sub" / "b.flac")
    speech, rate = read_audio(SPEECH / "02-en-us-f2.flac")
    stereo = resample(speech, rate, 44100).repeat(2, 1) * torch.tensor([[1.0], [0.5]])
    soundfile.write(root / "stereo.wav", stereo.T.numpy(), 44100)
    long = speech.repeat(1, 9)[:, : 40 * rate]  # 40 s
    write_audio(root / "long.wav", long, rate)
    (root / "empty.wav").write_bytes(b"")
    soundfile.write(root / "silent-header.wav", torch.zeros(0, 1).numpy(), 24000)
    return root


def encode(checkpoint, clips, out, *extra) -> int:
    args = ["encode", str(checkpoint), str(clips), "-o", str(out), "--device", "cpu"]
    return main([*args, "--chunk-seconds", "10", "--batch-size", "2", *extra])


def test_encode_decode_restore_every_duration(checkpoint, clips, tmp_path, capsys):
    tokens, decoded = tmp_path / "tokens", tmp_path / "decoded"
    assert encode(checkpoint, clips, tokens) == 0
    err = capsys.readouterr().err
    assert "empty.wav" in err and "silent-header.wav" in err
    dataset = TokenDataset(tokens)
    assert sorted(dataset.keys) == ["a.flac", "long.wav", "stereo.wav", "sub/b.flac"]
    assert sorted(entry["key"] for entry in dataset.skipped) == ["empty.wav", "silent-header.wav"]
    assert dataset.spec.layout == "T" and dataset.spec.geometry["hop_length"] == 320
    for index in range(len(dataset)):
        item = dataset[index]
        assert len(item["codes"]) == -(-item["media_length"] // 320)

    assert (
        main(["decode", str(checkpoint), str(tokens), "-o", str(decoded), "--device", "cpu"]) == 0
    )
    for key in dataset.keys:
        source = soundfile.info(str(clips / key))
        out = soundfile.info(str((decoded / key).with_suffix(".wav")))
        assert out.samplerate == 24000 and out.channels == 1
        assert abs(out.duration - source.duration) < 2 / 24000, key

    # rerunning either command redoes nothing
    before = sorted(p.name for p in tokens.glob("shard-*"))
    assert encode(checkpoint, clips, tokens) == 0
    assert sorted(p.name for p in tokens.glob("shard-*")) == before
    main(["decode", str(checkpoint), str(tokens), "-o", str(decoded), "--device", "cpu"])
    assert "0 files into" in capsys.readouterr().out


def test_chunked_file_has_the_codes_of_one_pass(checkpoint, clips, tmp_path):
    tokens = tmp_path / "tokens"
    encode(checkpoint, clips, tokens)
    dataset = TokenDataset(tokens)
    item = dataset[dataset.keys.index("long.wav")]
    codec = load_codec(checkpoint)
    audio = read_audio(clips / "long.wav", 24000)[0][None]
    assert torch.equal(item["codes"], codec.encode(audio).codes[0])


def test_encode_stops_on_a_bad_file_when_asked(checkpoint, clips, tmp_path, capsys):
    assert encode(checkpoint, clips, tmp_path / "t", "--on-error", "stop") == 1
    assert re.search(r"mediatok encode: stopped at .*empty\.wav", capsys.readouterr().err)


def test_decode_writes_flac(checkpoint, clips, tmp_path):
    tokens, decoded = tmp_path / "tokens", tmp_path / "decoded"
    encode(checkpoint, clips, tokens)
    args = ["decode", str(checkpoint), str(tokens), "-o", str(decoded), "--format", "flac"]
    main([*args, "--device", "cpu"])
    assert soundfile.info(str(decoded / "sub" / "b.flac")).format == "FLAC"


def test_eval_writes_speech_metrics(checkpoint, tmp_path):
    out = tmp_path / "report"
    args = ["eval", str(checkpoint), str(ROOT / "assets" / "speech-val"), "-o", str(out)]
    assert main([*args, "--device", "cpu", "--limit", "2"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_files"] == 2 and report["tokens_per_second"] == 75
    for name in ("mel_distance", "stft_distance", "si_sdr", "pesq", "stoi", "codebook_usage"):
        assert isinstance(report[name], float), name
    assert len(list((out / "examples").glob("*-reconstruction.wav"))) == 2


def test_train_two_steps_from_a_yaml(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        json.dumps(
            {
                "task": "audio_codec",
                "model": TINY_WAVTOKENIZER,
                "data": {"train_dir": str(SPEECH), "segment_seconds": 0.5, "val_files": 1},
                "loss": {
                    "discriminator": {"period_channels": [4, 8, 8, 8, 8], "resolution_channels": 4}
                },
                "train": {
                    "steps": 2,
                    "batch_size": 2,
                    "num_workers": 0,
                    "eval_every": 2,
                    "out_dir": str(tmp_path / "run"),
                    "tensorboard": False,
                    "device": "cpu",
                },
            }
        )
    )
    assert main(["train", str(config)]) == 0
    codec = load_codec(tmp_path / "run" / "checkpoint")
    assert codec.modality == "audio" and codec.config.latent_dim == 16
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any("eval/mel_distance" in line for line in lines)


def test_run_configs_reject_a_wrong_task_or_modality(tmp_path):
    from mediatok.config import ConfigError
    from mediatok.training.run import load_run_config
    from mediatok.training.tasks import AudioCodecTask, AudioDataConfig, AudioLossConfig

    config = tmp_path / "x.yaml"
    config.write_text("task: audio_codek\n")
    with pytest.raises(ConfigError, match="unknown task 'audio_codek'; known tasks: audio_codec"):
        load_run_config(config)
    task = AudioCodecTask("titok", {}, AudioDataConfig(), AudioLossConfig())
    with pytest.raises(ValueError, match="'titok' codes image"):
        task.build_model()
    with pytest.raises(ValueError, match="expected segment_seconds and val_seconds > 0"):
        AudioDataConfig(segment_seconds=0)


def test_encode_reads_a_few_batches_ahead_not_the_whole_folder(checkpoint, tmp_path, monkeypatch):
    """Reading runs ahead of the model on threads; unbounded, it would hold every decoded file
    of a large collection in memory (and a stop would wait for the whole folder to be read)."""
    import mediatok.modalities.audio
    from mediatok.tokens import TokenWriter

    root = tmp_path / "clips"
    root.mkdir()
    for index in range(16):
        soundfile.write(root / f"{index:02d}.wav", np.full(400, 0.1, np.float32), 24000)
    reads, seen = [], []
    real_read, real_add = mediatok.modalities.audio.read_audio, TokenWriter.add_batch

    def counting_read(*args, **kwargs):
        reads.append(args[0])
        return real_read(*args, **kwargs)

    def slow_add(self, *args, **kwargs):
        if not seen:
            time.sleep(0.3)  # the model is slower than the readers
        seen.append(len(reads))
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(mediatok.modalities.audio, "read_audio", counting_read)
    monkeypatch.setattr(TokenWriter, "add_batch", slow_add)
    assert encode(checkpoint, root, tmp_path / "tokens", "--batch-size", "1") == 0
    assert seen[0] <= 8, f"{seen[0]} of 16 files read before the first batch was written"
    assert len(reads) == 16 and len(TokenDataset(tmp_path / "tokens")) == 16


def test_decode_refuses_tokens_of_another_frame_rate(checkpoint, clips, tmp_path):
    """75 and 40 tokens per second share the vocabulary and layout: decoding one's tokens with
    the other would write audio of the wrong speed, silently. So would another vocabulary."""
    tokens = tmp_path / "tokens"
    encode(checkpoint, clips, tokens)
    torch.manual_seed(0)
    slower = build_codec("wavtokenizer", {**TINY_WAVTOKENIZER, "hop_length": 600})
    other = slower.save_pretrained(tmp_path / "hop-600")
    out = tmp_path / "decoded"
    args = ["decode", str(other), str(tokens), "-o", str(out), "--device", "cpu"]
    expected = re.escape(
        f"{other} cannot decode the tokens in {tokens}: expected geometry {{'hop_length': 600}}, "
        "got {'hop_length': 320}"
    )
    with pytest.raises(ValueError, match=expected):  # one line from `main`, exit status 2
        main(args)
    assert not out.exists()
    bigger = {**TINY_WAVTOKENIZER, "quantizer": {"kind": "vq", "options": {"codebook_size": 128}}}
    other = build_codec("wavtokenizer", bigger).save_pretrained(tmp_path / "vocabulary-128")
    args = ["decode", str(other), str(tokens), "-o", str(out), "--device", "cpu"]
    with pytest.raises(ValueError, match=r"expected vocabulary \[128\], got \[64\]"):
        main(args)
    assert not out.exists()
