"""Build the demo's speech clips (`assets/speech/`, `assets/speech-val/`) with espeak-ng.

Run once when the assets change (`apt-get install espeak-ng`, then
`.venv/bin/python tools/make_speech_assets.py`); the FLAC files are committed, so neither the
demo nor the tests need espeak-ng. The sentences are our own; espeak-ng (GPL-3+) only renders
them, and its output is not covered by its licence. Deterministic: same espeak-ng, same files.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import torch

from mediatok.data import loudness_normalize, read_audio, write_audio

SAMPLE_RATE = 24000
ROOT = Path(__file__).resolve().parents[1] / "assets"

# (voice, words per minute, pitch 0-99, text): voices and variants spread over accents and
# registers so that a small codec sees more than one speaker.
TRAIN = [
    ("en-us", 150, 40, "The quick brown fox jumps over the lazy dog near the river bank."),
    ("en-gb", 160, 55, "A tokenizer turns a waveform into a short sequence of whole numbers."),
    ("en-us+f2", 140, 60, "Seventy five tokens every second is enough for clear speech."),
    ("en-gb-scotland", 155, 35, "The weather on the island changed three times before noon."),
    ("en+m3", 170, 45, "Please keep the window open while the bread is in the oven."),
    ("en-us+f4", 150, 70, "She counted the boats in the harbour: nine red and four blue."),
    ("en-gb-x-rp", 145, 50, "Every codebook entry should be used, or it is wasted space."),
    ("en+klatt", 160, 50, "Measure twice, then cut once, and write the numbers down."),
    ("en-029", 150, 45, "The train to the coast leaves at half past seven tomorrow."),
    ("en-us+m1", 135, 30, "Low voices and high voices share the same small vocabulary."),
    ("en-gb+f3", 165, 65, "Rain fell softly on the roof of the old wooden library."),
    ("en-us+croak", 150, 40, "Nobody could find the key, so they climbed in through the back."),
]
VAL = [
    ("en-us+f3", 150, 55, "Listening to the decoded audio tells you more than any number."),
    ("en-gb+m2", 155, 40, "The garden was quiet except for the bees and a distant radio."),
    ("en+f5", 145, 60, "Short clips are cut from long recordings before training starts."),
]


def render(voice: str, speed: int, pitch: int, text: str, path: Path) -> None:
    with tempfile.NamedTemporaryFile(suffix=".wav") as raw:
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw.name, text],
            check=True,
        )
        audio, _ = read_audio(raw.name, SAMPLE_RATE)  # (1, T), resampled from 22050 Hz
    pad = torch.zeros(1, SAMPLE_RATE // 10)  # 0.1 s of silence on both sides
    audio = loudness_normalize(torch.cat([pad, audio, pad], dim=1), -20.0)
    write_audio(path, audio, SAMPLE_RATE)


def main() -> None:
    for folder, clips in (("speech", TRAIN), ("speech-val", VAL)):
        directory = ROOT / folder
        directory.mkdir(parents=True, exist_ok=True)
        for index, (voice, speed, pitch, text) in enumerate(clips):
            name = f"{index:02d}-{voice.replace('+', '-')}.flac"
            render(voice, speed, pitch, text, directory / name)
            print(directory / name)


if __name__ == "__main__":
    main()
