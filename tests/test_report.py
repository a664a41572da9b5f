"""`report.html`: `mediatok eval` writes it for image, audio and video codecs and for generator
samples; it names no network address; and a real headless Chromium (tests/chromium.py) loads it
with no console error, every image decoded and every player able to play."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

import mediatok.eval.fid
from chromium import Browser, find_chromium
from mediatok.cli import main
from mediatok.codecs import build_codec
from mediatok.data import write_image, write_video
from mediatok.eval import CodebookUsage
from mediatok.report import (
    HISTOGRAM_BARS,
    ReportMedia,
    ReportRow,
    codebook_counts,
    image_grid,
    read_codebook_counts,
    spectrograms,
    write_codebook_counts,
    write_report,
)
from mediatok.tokens import TokenWriter
from tiny_configs import CAUSAL_VIDEO, FLEXTOK, TITOK, WAVTOKENIZER

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "images"
SPEECH = ROOT / "assets" / "speech-val"


# --------------------------------------------------------------------------------------------
# the page's parts


def test_codebook_counts_keep_the_used_codes_only_and_read_back(tmp_path):
    usage = CodebookUsage([8, 1000])
    usage.update(torch.tensor([[0, 999], [0, 5], [3, 5]]))  # (N, Q)
    counts = codebook_counts(usage)
    assert counts["levels"][0] == {"codebook_size": 8, "codes": [0, 3], "counts": [2, 1]}
    assert counts["levels"][1] == {"codebook_size": 1000, "codes": [5, 999], "counts": [2, 1]}
    path = write_codebook_counts(tmp_path, usage)
    assert path == tmp_path / "codebook.json" and len(path.read_text()) < 200
    for read, kept in zip(read_codebook_counts(path), usage.counts, strict=True):
        assert torch.equal(read, kept)
    path.write_text(json.dumps({"format": 7, "levels": []}))
    with pytest.raises(ValueError, match="expected format 1, got 7"):
        read_codebook_counts(path)


def test_spectrograms_share_one_colour_scale():
    t = torch.arange(24000) / 24000
    loud = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    loud_image, quiet_image = spectrograms([loud, loud / 100], 24000)
    assert loud_image.dtype == torch.uint8 and loud_image.shape == (3, 128, 101)
    # the loudest bin is the top of the shared scale (viridis' yellow, green 231); the same
    # sound 40 dB down reaches about the middle of the 80 dB shown (green 144)
    assert int(loud_image[1].max()) == 231
    assert 120 < int(quiet_image[1].max()) < 170


def test_a_grid_takes_the_first_images_at_the_first_ones_size(tmp_path):
    sizes = [(8, 12), (20, 20), (8, 12), (5, 7)]
    files = []
    for index, (height, width) in enumerate(sizes):
        files.append(tmp_path / f"{index}.png")
        write_image(files[-1], torch.full((3, height, width), index * 60, dtype=torch.uint8))
    grid = image_grid(files, columns=2, limit=3)
    assert grid.shape == (3, 16, 24) and grid.dtype == torch.uint8
    assert grid[0, 0, 0] == 0 and grid[0, 0, 12] == 60 and grid[0, 8, 0] == 120
    assert int(grid[0, 8:, 12:].max()) == 0  # the short last row stays black
    with pytest.raises(ValueError, match="expected at least one image"):
        image_grid([])


def test_the_page_shows_metrics_media_and_a_histogram_and_refuses_missing_files(tmp_path):
    write_image(tmp_path / "grid.png", torch.zeros(3, 8, 16, dtype=torch.uint8))
    usage = CodebookUsage([512])
    usage.update(torch.arange(300) % 200)
    codebook = write_codebook_counts(tmp_path, usage)
    report = {"psnr": 21.234567, "rfid": None, "scored": {"psnr": 6}, "skipped": []}
    report["skipped"] = [{"key": "bad.png", "error": "cannot read it"}]
    rows = [ReportRow("Grid", (ReportMedia("image", tmp_path / "grid.png", "a grid"),))]
    page = write_report(tmp_path, report, rows, title="a <test>", codebook=codebook)
    text = page.read_text()
    assert "<title>a &lt;test&gt;</title>" in text
    assert re.search(r"<th>psnr</th><td[^>]*>21.23</td><td[^>]*>6 scored</td>", text)
    assert '<th>rfid</th><td class="value">—</td>' in text
    assert "200 of 512 codes used (39.1%)" in text
    assert text.count("<rect") == HISTOGRAM_BARS
    assert "bad.png: skipped, cannot read it" in text
    assert 'src="data:image/png;base64,' in text
    missing = [ReportRow("Gone", (ReportMedia("audio", tmp_path / "gone.wav"),))]
    with pytest.raises(FileNotFoundError, match=r"gone\.wav"):
        write_report(tmp_path, report, missing, title="t")
    with pytest.raises(ValueError, match="expected kind image, audio or video"):
        ReportMedia("text", tmp_path / "a.txt")


# --------------------------------------------------------------------------------------------
# real reports from `mediatok eval`


def moving_pattern(frames: int, size: int = 20) -> torch.Tensor:
    """A smooth pattern drifting with time: `(3, T, S, S)` in [-1, 1]."""
    t = torch.linspace(0, 1, frames)[:, None, None]
    y = torch.linspace(-1, 1, size)[None, :, None]
    x = torch.linspace(-1, 1, size)[None, None, :]
    channels = [torch.sin(3 * y + 5 * t + x), torch.cos(2 * x - 4 * t + 0 * y), x * y + t - 0.5]
    return torch.stack(channels).clamp(-1, 1)


def evaluate(*args: str) -> Path:
    """`mediatok eval ARGS -o OUT`; the page it says it wrote."""
    assert main(["eval", *args, "--device", "cpu"]) == 0
    return Path(args[args.index("-o") + 1]) / "report.html"


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """The reports of a tiny image, FlexTok, audio and video codec and of a folder of samples."""
    root = tmp_path_factory.mktemp("reports")
    torch.manual_seed(0)
    pages = {}
    titok = build_codec("titok", TITOK)
    image = titok.save_pretrained(root / "titok")
    pages["image"] = evaluate(str(image), str(PHOTOS), "-o", str(root / "image"), "--no-fid")
    flextok = build_codec("flextok", FLEXTOK).save_pretrained(root / "flextok")
    pages["flextok"] = evaluate(
        str(flextok), str(PHOTOS), "-o", str(root / "flextok"), "--no-fid", "--steps", "2"
    )
    audio = build_codec("wavtokenizer", WAVTOKENIZER).save_pretrained(root / "wavtokenizer")
    pages["audio"] = evaluate(
        str(audio), str(SPEECH), "-o", str(root / "audio"), "--no-speech-metrics"
    )
    video = build_codec("causal_video", {**CAUSAL_VIDEO, "fps": 8.0})
    clips = root / "clips"
    for name, frames in (("a.mp4", 9), ("sub/b.webm", 5), ("still.mp4", 1)):
        write_video(clips / name, moving_pattern(frames), fps=8)
    pages["video"] = evaluate(
        str(video.save_pretrained(root / "video-codec")),
        str(clips),
        "-o",
        str(root / "video"),
        "--no-fid",
    )
    samples, reference = root / "samples", root / "reference"
    for index in range(5):
        write_image(samples / f"sample-{index:05d}.png", torch.rand(3, 16, 16) * 2 - 1)
        write_image(reference / f"photo-{index}.png", torch.rand(3, 16, 16) * 2 - 1)
    with TokenWriter(samples / "tokens", titok.token_spec, codec="titok") as writer:
        writer.add_batch(torch.randint(0, 64, (5, 8)), keys=[f"sample-{i:05d}" for i in range(5)])
    original = mediatok.eval.fid.fid
    mediatok.eval.fid.fid = lambda *args, **kwargs: 123.0  # no Inception run: not what is tested
    try:
        pages["samples"] = evaluate(
            str(samples), "--reference", str(reference), "-o", str(root / "gfid")
        )
    finally:
        mediatok.eval.fid.fid = original
    return pages


KINDS = ["image", "flextok", "audio", "video", "samples"]


class _Addresses(HTMLParser):
    """Every `src` and `href` in a page."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.found += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("kind", KINDS)
def test_eval_writes_a_report_that_names_no_network_address(reports, kind, capsys):
    page = reports[kind]
    text = page.read_text(encoding="utf-8")
    outside_data = re.sub(r'"data:[^"]*"', "", text)  # base64 holds "//" by chance
    assert not re.search(r"https?:|//[a-z]", outside_data, re.IGNORECASE), "a network address"
    parser = _Addresses()
    parser.feed(text)
    assert parser.found
    for address in parser.found:
        if address.startswith("data:"):
            continue
        parsed = urlparse(address)
        assert not parsed.scheme and not parsed.netloc and not address.startswith("/")
        assert (page.parent / unquote(parsed.path)).is_file(), address
    metrics = json.loads((page.parent / "metrics.json").read_text())
    for name, value in metrics.items():
        if isinstance(value, float):
            assert f'<th>{name}</th><td class="value">{value:.4g}</td>' in text


def test_eval_prints_where_the_report_is(tmp_path, capsys):
    checkpoint = build_codec("titok", TITOK).save_pretrained(tmp_path / "titok")
    page = evaluate(str(checkpoint), str(PHOTOS), "-o", str(tmp_path / "out"), "--no-fid")
    captured = capsys.readouterr()
    assert f"wrote {page}" in captured.err
    assert json.loads(captured.out)["num_images"] == 6  # stdout: the JSON alone


@pytest.fixture(scope="module")
def browser():
    try:
        find_chromium()
    except FileNotFoundError as error:
        pytest.fail(str(error), pytrace=False)  # not a skip: CI installs it (.ci/run)
    with Browser() as running:
        yield running


# What each page must hold, besides loading cleanly: images, players, histograms.
EXPECTED = {
    "image": {"images": 1, "audio": 0, "video": 0, "svgs": 1},
    "flextok": {"images": 3, "audio": 0, "video": 0, "svgs": 1},  # + the k grid and k-curve
    "audio": {"images": 6, "audio": 6, "video": 0, "svgs": 1},
    "video": {"images": 1, "audio": 0, "video": 6, "svgs": 1},
    "samples": {"images": 2, "audio": 0, "video": 0, "svgs": 1},
}


@pytest.mark.parametrize("kind", KINDS)
def test_the_report_loads_in_chromium_with_every_image_and_player_working(reports, browser, kind):
    page = browser.check_page(reports[kind].resolve().as_uri())
    assert page.problems() == []
    tags = [media["tag"] for media in page.media]
    found = {
        "images": len(page.images),
        "audio": tags.count("audio"),
        "video": tags.count("video"),
        "svgs": page.svgs,
    }
    assert found == EXPECTED[kind]
    assert all(media["duration"] > 0 for media in page.media)


def test_the_browser_check_sees_what_is_broken(tmp_path, browser):
    """The check can fail: a missing image, a player of a missing file, a console error and an
    exception are each reported."""
    (tmp_path / "page.html").write_text(
        '<!doctype html><title>t</title><img src="gone.png"><audio src="gone.wav" '
        'preload="metadata"></audio><script>console.error("boom"); missing();</script>'
    )
    problems = browser.check_page((tmp_path / "page.html").as_uri(), media_timeout=5).problems()
    assert any("console.error: boom" in line for line in problems)
    assert any("uncaught exception: ReferenceError" in line for line in problems)
    assert any(line.startswith("image not decoded") for line in problems)
    assert any(line.startswith("audio cannot play") for line in problems)
