"""`mediatok.data` video: reading every container, fps resampling, windows, rotation, bad files,
writing, resizing, the VideoFolder dataset.

Every video is generated in `tmp_path` with PyAV. Frame i shows its index in binary: six
horizontal stripes, stripe b white when bit b of i is set, which survives every codec (even GIF's
3-3-2 bit colours), so a test reads back which source frame each output frame is.
"""

from __future__ import annotations

import logging
import os
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import mediatok.data.video as video_module
from mediatok.data import (
    VIDEO_EXTENSIONS,
    Repeated,
    VideoFolder,
    VideoInfo,
    VideoReadError,
    list_videos,
    read_video,
    resize_and_crop,
    resize_and_crop_video,
    to_float,
    video_info,
    write_video,
)

STRIPES = 6
# suffix -> (encoder, pixel format)
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mjpeg", "yuvj420p"),
    ".gif": ("gif", "rgb8"),
}


def index_frame(index: int, height: int = 24, width: int = 32) -> np.ndarray:
    """`(H, W, 3)` uint8: `index` in binary, one horizontal stripe per bit (LSB on top)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    stripe = height // STRIPES
    for bit in range(STRIPES):
        if index >> bit & 1:
            pixels[bit * stripe : (bit + 1) * stripe] = 255
    return pixels


def frame_indices(video: torch.Tensor) -> list[int]:
    """The index each frame of a `(3, T, H, W)` video shows (see `index_frame`)."""
    stripe = video.shape[2] // STRIPES
    return [
        sum(
            int(video[:, t, bit * stripe : (bit + 1) * stripe].float().mean() > 128) << bit
            for bit in range(STRIPES)
        )
        for t in range(video.shape[1])
    ]


def make_video(
    path: Path,
    count: int = 12,
    *,
    rate: int = 25,
    size: tuple[int, int] = (24, 32),
    pts: list[int] | None = None,
    rotation: int | None = None,
    frames: list[np.ndarray] | None = None,
    **options: str,
) -> Path:
    """A video of `count` index frames (or `frames`), with the codec its suffix says.

    Args:
        pts: timestamps in 1/100 s (a variable-rate GIF); None: one tick of 1 / rate each.
        rotation: a display matrix rotating counterclockwise by this many degrees.
        options: encoder options (`g="5"`: a keyframe every 5 frames).
    """
    codec, pixel_format = CODECS[path.suffix]
    height, width = size
    frames = frames if frames is not None else [index_frame(i, *size) for i in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.options = {"crf": "10"} if codec == "libx264" else {}
        stream.options |= options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 100)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index if pts is None else pts[index]
            if pts is not None:
                frame.time_base = Fraction(1, 100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def noisy_frames(count: int) -> list[np.ndarray]:
    """Index frames with texture (every frame costs bytes, so a cut file loses frames at its
    end rather than a few large ones at its start); `frame_indices` still reads them."""
    generator = np.random.default_rng(0)
    frames = []
    for index in range(count):
        pixels = index_frame(index).astype(np.int16)
        texture = generator.integers(0, 40, pixels.shape)
        frames.append(np.where(pixels > 128, pixels - texture, pixels + texture).astype(np.uint8))
    return frames


def make_audio_only(path: Path) -> Path:
    """An AAC-in-MP4 file: no video stream."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def smooth_video(frames: int = 8, height: int = 48, width: int = 64) -> torch.Tensor:
    """`(3, T, H, W)` uint8 gentle gradients drifting over time: survives H.264 with a small
    error."""
    rows = torch.linspace(0, 60, height)[:, None]
    columns = torch.linspace(60, 200, width)[None, :]
    planes = [
        torch.stack([rows + columns + 3 * t for t in range(frames)]),  # (T, H, W)
        torch.stack([columns.flip(1) + rows * 0.5 + 2 * t for t in range(frames)]),
        torch.stack([(columns + rows) * 0.7 for _ in range(frames)]),
    ]
    return torch.stack(planes).clamp(0, 255).round().to(torch.uint8)


def mean_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.int() - b.int()).abs().float().mean())


# --------------------------------------------------------------------------------------------
# reading


@pytest.mark.parametrize("suffix", list(CODECS))
def test_round_trip_of_each_container(tmp_path: Path, suffix: str) -> None:
    path = make_video(tmp_path / f"clip{suffix}", 12)
    video, fps = read_video(path)
    assert video.dtype == torch.uint8 and video.shape == (3, 12, 24, 32) and video.is_contiguous()
    assert frame_indices(video) == list(range(12)) and fps == 25.0
    assert video_info(path) == VideoInfo(frames=12, fps=25.0, width=32, height=24)
    assert suffix in VIDEO_EXTENSIONS


@pytest.mark.parametrize("suffix", [".gif", ".mp4", ".webm"])
def test_a_one_frame_file_is_a_one_frame_video(tmp_path: Path, suffix: str) -> None:
    path = make_video(tmp_path / f"still{suffix}", 1)
    video, _ = read_video(path)
    assert video.shape == (3, 1, 24, 32) and frame_indices(video) == [0]
    assert video_info(path).frames == 1
    assert read_video(path, fps=10)[0].shape[1] == 1  # 1 frame of 1/25 s: one output at 0 s


@pytest.mark.parametrize(
    ("fps", "expected"),
    [
        # 10 frames at 10 fps, 1 s: output k shows source frame floor(k * 10 / fps).
        (10, list(range(10))),
        (25, [k * 10 // 25 for k in range(25)]),
        (4, [0, 2, 5, 7]),
        (7, [0, 1, 2, 4, 5, 7, 8]),
        (3.5, [0, 2, 5, 8]),  # ceil(3.5) outputs, at 0, 0.29, 0.57, 0.86 s
    ],
)
def test_fps_resampling_shows_the_frame_at_each_output_time(
    tmp_path: Path, fps: float, expected: list[int]
) -> None:
    path = make_video(tmp_path / "ten.mp4", 10, rate=10)
    video, rate = read_video(path, fps=fps)
    assert rate == fps and frame_indices(video) == expected


def test_fps_resampling_of_a_variable_rate_gif(tmp_path: Path) -> None:
    # Frames at 0, 0.1, 0.15, 0.4, 0.9 s, the last shown 0.1 s: the video lasts 1 s.
    path = make_video(tmp_path / "vfr.gif", 5, pts=[0, 10, 15, 40, 90, 100])
    video, rate = read_video(path, fps=10)
    # Output k at k / 10 s: the latest frame starting at or before it.
    assert rate == 10 and frame_indices(video) == [0, 1, 2, 2, 3, 3, 3, 3, 3, 4]
    # At 0.25, 0.3, 0.35, 0.4 s: frame 2 (from 0.15 s) until frame 3 starts, at 0.4 s exactly.
    assert frame_indices(read_video(path, fps=20, start=5, max_frames=4)[0]) == [2, 2, 2, 3]
    assert frame_indices(read_video(path)[0]) == [0, 1, 2, 3, 4]  # fps=None: every frame


def count_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the frames `read_video` decodes from now on: `calls[0]`."""
    calls = [0]
    timed = video_module._VideoFile._timed

    def counting(self: object, frame: av.VideoFrame, index: int) -> object:
        calls[0] += 1
        return timed(self, frame, index)  # type: ignore[arg-type]

    monkeypatch.setattr(video_module._VideoFile, "_timed", counting)
    return calls


def test_start_and_max_frames_select_a_window_without_decoding_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_video(tmp_path / "long.mp4", 40, rate=10, g="5")
    decoded = count_decoded(monkeypatch)
    video, _ = read_video(path, start=7, max_frames=5)
    assert frame_indices(video) == [7, 8, 9, 10, 11]
    assert decoded[0] == 12  # frames 0..11: none past the window
    decoded[0] = 0
    video, _ = read_video(path, fps=20, start=50, max_frames=6)  # output k at k / 20 s
    assert frame_indices(video) == [25, 25, 26, 26, 27, 27]
    assert decoded[0] <= 10  # the first frame, then from the keyframe at 25 (a seek)
    video, _ = read_video(path, fps=10, start=35, max_frames=10)  # the end comes first
    assert frame_indices(video) == [35, 36, 37, 38, 39]
    empty, _ = read_video(path, start=40)
    assert empty.shape == (3, 0, 24, 32) and empty.dtype == torch.uint8
    assert read_video(path, fps=10, start=100)[0].shape == (3, 0, 24, 32)


@pytest.mark.parametrize("suffix", list(CODECS))
def test_seeking_gives_the_frames_of_decoding_from_the_start(tmp_path: Path, suffix: str) -> None:
    path = make_video(tmp_path / f"long{suffix}", 30, rate=10)
    whole, _ = read_video(path, fps=15)
    window, _ = read_video(path, fps=15, start=26, max_frames=7)
    assert torch.equal(window, whole[:, 26:33])
    assert frame_indices(window) == [k * 10 // 15 for k in range(26, 33)]


def test_a_seek_that_lands_after_the_window_falls_back_to_decoding_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_video(tmp_path / "long.mp4", 40, rate=10, g="5")
    expected, _ = read_video(path, fps=10, start=12, max_frames=3)
    # Containers whose seeking is coarse can land past the target: here, 2 s past it.
    overshoot = video_module._VideoFile._seek_timestamp
    monkeypatch.setattr(
        video_module._VideoFile,
        "_seek_timestamp",
        lambda self, time: overshoot(self, time + 2),
    )
    with caplog.at_level(logging.DEBUG, logger="mediatok.data"):
        video, _ = read_video(path, fps=10, start=12, max_frames=3)
    assert "missed" in caplog.text
    assert torch.equal(video, expected) and frame_indices(video) == [12, 13, 14]


def test_a_transparent_gif_is_composited_over_white(tmp_path: Path) -> None:
    indices = np.zeros((24, 32), np.uint8)
    indices[:, 16:] = 1  # left half: palette entry 0, transparent; right half: opaque blue
    palette = np.zeros((256, 4), np.uint8)  # ARGB
    palette[1] = (255, 0, 0, 255)
    path = tmp_path / "clear.gif"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "pal8"
        for index in range(2):
            frame = av.VideoFrame.from_ndarray((indices, palette), format="pal8")
            frame.pts = index
            for packet in [*stream.encode(frame), *(stream.encode() if index else [])]:
                container.mux(packet)
    video, _ = read_video(path)
    assert video.shape == (3, 2, 24, 32)
    assert bool((video[:, :, :, :16] == 255).all())
    assert video[:, :, :, 16:].flatten(1).unique(dim=1).tolist() == [[0], [0], [255]]  # blue


def test_bad_window_arguments_raise(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.mp4", 3)
    for bad in ({"start": -1}, {"max_frames": 0}, {"fps": 0}, {"fps": float("nan")}):
        with pytest.raises(ValueError, match="expected"):
            read_video(path, **bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="frames per second"):
        read_video(path, fps="25")  # type: ignore[arg-type]


@pytest.mark.parametrize(("degrees", "corner"), [(90, (-1, 0)), (-90, (0, -1)), (180, (-1, -1))])
def test_display_rotation_is_applied(tmp_path: Path, degrees: int, corner: tuple) -> None:
    # A 32x24 (W x H) frame, black with a white 8x8 block in its top-left corner; the display
    # matrix turns it counterclockwise by `degrees`.
    pixels = np.zeros((24, 32, 3), np.uint8)
    pixels[:8, :8] = 255
    path = make_video(tmp_path / "turned.mp4", frames=[pixels] * 3, rotation=degrees)
    video, _ = read_video(path)
    expected = np.rot90(pixels, degrees // 90)  # counterclockwise for positive quarter turns
    assert video.shape == (3, 3, *expected.shape[:2])
    assert mean_error(video[:, 0].permute(1, 2, 0), torch.from_numpy(expected.copy())) < 4
    row, column = corner  # where the white block went
    assert video[:, 0, row, column].min() > 200 and video[:, 0, -1 - row, -1 - column].max() < 50
    info = video_info(path)
    assert (info.height, info.width) == expected.shape[:2]


# --------------------------------------------------------------------------------------------
# bad files


def truncate(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_bad_file(root: Path, kind: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "zero-length":
        (path := root / "empty.mp4").write_bytes(b"")
    elif kind == "random bytes":
        (path := root / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "text":
        (path := root / "notes.mkv").write_text("not a video, just words\n" * 20)
    elif kind == "audio only":
        path = make_audio_only(root / "speech.mp4")
    elif kind == "missing":
        path = root / "missing.mp4"
    elif kind == "directory":
        (path := root / "folder.mp4").mkdir()
    elif kind == "mp4 cut while written":  # the index (moov) comes last: it is lost
        path = truncate(make_video(root / "cut.mp4", frames=noisy_frames(30)), 0.7)
    elif kind == "mp4 with its index first, cut":
        path = make_video(root / "cut.mp4", frames=noisy_frames(30))
        with (
            av.open(str(path)) as source,
            av.open(str(root / "fast.mp4"), "w", options={"movflags": "+faststart"}) as output,
        ):
            stream = output.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    output.mux(packet)
        path = truncate(root / "fast.mp4", 0.7)
    elif kind in ("mkv cut", "webm cut", "gif cut", "avi cut"):
        suffix = "." + kind.split()[0]
        path = truncate(make_video(root / f"cut{suffix}", frames=noisy_frames(30)), 0.6)
    else:
        raise AssertionError(kind)
    return path


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("zero-length", "empty file"),
        ("random bytes", "not a video"),
        ("text", r"not a video.*file starts with b'not a video"),
        ("audio only", "no video stream .the file holds 1 audio stream"),
        ("missing", "cannot read the file"),
        ("directory", "not a regular file"),
        ("mp4 cut while written", "truncated or damaged MP4"),
        # Where the cut falls decides between a decoding error and a short stream.
        ("mp4 with its index first, cut", "truncated MP4/MOV h264 data"),
        ("mkv cut", "truncated Matroska/WebM h264 data"),
        ("webm cut", "truncated Matroska/WebM vp9 data"),
        ("gif cut", "truncated GIF data"),
        ("avi cut", "truncated AVI mjpeg data"),
    ],
)
def test_bad_files_raise_naming_the_path(tmp_path: Path, kind: str, match: str) -> None:
    path = make_bad_file(tmp_path, kind)
    # video_info decodes one frame: damage further on is found by reading to it.
    readers = [read_video, lambda path: read_video(path, fps=10)]
    if "cut" not in kind or "written" in kind:
        readers.append(video_info)
    for read in readers:
        with pytest.raises(VideoReadError, match=match) as caught:
            read(path)
        assert caught.value.path == path and str(caught.value).startswith(f"{path}: ")


def test_a_window_before_the_damage_is_returned_and_reading_to_the_end_raises(
    tmp_path: Path,
) -> None:
    path = make_bad_file(tmp_path, "mkv cut")
    video, _ = read_video(path, max_frames=4)  # intact frames: returned
    assert frame_indices(video) == [0, 1, 2, 3]
    assert video_info(path).frames < 30  # the packets that are there
    with pytest.raises(VideoReadError, match="truncated"):
        read_video(path, start=2)


def test_video_read_error_pickles(tmp_path: Path) -> None:
    with pytest.raises(VideoReadError) as caught:
        read_video(make_bad_file(tmp_path, "text"))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.path == caught.value.path and str(copy) == str(caught.value)


def test_list_videos(tmp_path: Path) -> None:
    for name in ("b.mp4", "a/c.GIF", "a/.hidden.mp4", "d.txt", "e.webm"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)] == [
        "a/c.GIF",
        "b.mp4",
        "e.webm",
    ]
    with pytest.raises(ValueError, match="no videos"):
        list_videos(tmp_path, extensions=".avi")


# --------------------------------------------------------------------------------------------
# resize_and_crop_video


def test_resize_and_crop_video_uses_one_window_for_every_frame() -> None:
    generator = torch.Generator().manual_seed(0)
    video = torch.randint(0, 256, (3, 5, 30, 70), dtype=torch.uint8, generator=generator)
    for crop in ("center", "random", "random_resized"):
        out = resize_and_crop_video(video, 16, crop, torch.Generator().manual_seed(4))
        assert out.shape == (3, 5, 16, 16) and out.dtype == torch.uint8 and out.is_contiguous()
        for t in range(5):  # each frame as resize_and_crop crops it with the same draws
            frame = resize_and_crop(video[:, t], 16, crop, torch.Generator().manual_seed(4))
            assert torch.equal(out[:, t], frame)
    assert resize_and_crop_video(
        to_float(video.transpose(0, 1)).transpose(0, 1), (8, 12)
    ).shape == (
        3,
        5,
        8,
        12,
    )
    with pytest.raises(ValueError, match=r"\(3, T, H, W\)"):
        resize_and_crop_video(video[:, 0], 16)


# --------------------------------------------------------------------------------------------
# write_video


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mp4", "h264"), (".mkv", "h264"), (".webm", "vp9")]
)
def test_write_video_round_trip(tmp_path: Path, suffix: str, codec: str) -> None:
    video = smooth_video()
    path = tmp_path / "deep" / f"out{suffix}"
    write_video(path, video, 24)
    back, fps = read_video(path)
    assert back.shape == video.shape and fps == 24.0
    assert mean_error(back, video) < 3
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec and stream.codec_context.pix_fmt == "yuv420p"
    write_video(path, to_float(video.transpose(0, 1)).transpose(0, 1), 24)  # float, overwriting
    assert mean_error(read_video(path)[0], video) < 3
    assert os.listdir(path.parent) == [path.name]  # no temporary left behind


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_write_video_odd_sizes_read_back_at_their_size(tmp_path: Path, suffix: str) -> None:
    video = smooth_video(5, 25, 33)
    path = tmp_path / f"odd{suffix}"
    write_video(path, video, 25)
    back, _ = read_video(path)
    assert back.shape == (3, 5, 25, 33) and mean_error(back, video) < 3
    assert video_info(path) == VideoInfo(frames=5, fps=25.0, width=33, height=25)


@pytest.mark.parametrize("fps", [29.97, 30000 / 1001, 12.5])
def test_write_video_keeps_a_fractional_frame_rate(tmp_path: Path, fps: float) -> None:
    path = tmp_path / "rate.mp4"
    write_video(path, smooth_video(4, 16, 16), fps)
    info = video_info(path)
    assert info.frames == 4 and info.fps == pytest.approx(fps, abs=1e-9)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(fps).limit_denominator(10**6)


def test_write_video_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.mp4"
    old = smooth_video(3, 16, 16)
    write_video(path, old, 10)
    encode = video_module._frames_for_encoding

    def fail(pixels: np.ndarray):  # type: ignore[no-untyped-def]
        yield next(encode(pixels))
        raise OSError("disk full")

    monkeypatch.setattr(video_module, "_frames_for_encoding", fail)
    with pytest.raises(OSError, match="disk full"):
        write_video(path, smooth_video(6, 16, 16), 10)
    monkeypatch.undo()
    assert read_video(path)[0].shape == old.shape  # the old file is whole
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_write_video_rejects_bad_input(tmp_path: Path) -> None:
    video = torch.zeros(3, 2, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"\.mp4, .*\.webm"):
        write_video(tmp_path / "a.avi", video, 10)
    with pytest.raises(ValueError, match=r"\(3, T, H, W\).*got \(2, 4, 4\)"):
        write_video(tmp_path / "a.mp4", video[0], 10)
    with pytest.raises(ValueError, match="T, H, W >= 1"):
        write_video(tmp_path / "a.mp4", video[:, :0], 10)
    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "a.mp4", torch.full((3, 2, 4, 4), float("nan")), 10)
    with pytest.raises(TypeError, match="int32"):
        write_video(tmp_path / "a.mp4", video.int(), 10)
    with pytest.raises(ValueError, match="positive, finite frame rate"):
        write_video(tmp_path / "a.mp4", video, -1)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# VideoFolder


def make_folder(root: Path) -> Path:
    """`a_long.mp4` (30 frames, 40x32), `b_short.gif` (3 frames), `sub/c.webm` (12 frames)."""
    make_video(root / "a_long.mp4", 30, size=(24, 40))
    make_video(root / "b_short.gif", 3)
    make_video(root / "sub" / "c.webm", 12)
    return root


def test_video_folder_windows_are_consecutive_frames_with_one_crop(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "clips")
    dataset = VideoFolder(root, 24, 8, seed=3)
    assert len(dataset) == 3 and dataset.keys == ["a_long.mp4", "b_short.gif", "sub/c.webm"]
    item = dataset[0]
    assert set(item) == {"video", "length", "key", "index"}
    assert item["video"].shape == (3, 8, 24, 24) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1 and item["video"].max() <= 1
    assert item["key"] == "a_long.mp4" and item["index"] == 0 and item["length"] == 8
    pixels = ((item["video"] + 1) * 127.5).round().to(torch.uint8)
    first = frame_indices(pixels)[0]
    assert frame_indices(pixels) == list(range(first, first + 8))  # consecutive frames
    # The 40-wide file cropped to 24: every frame shows the same columns of its source frame.
    source, _ = read_video(root / "a_long.mp4", start=first, max_frames=8)
    lefts = {
        left
        for left in range(40 - 24 + 1)
        if torch.equal(source[:, :, :, left : left + 24], pixels)
    }
    assert len(lefts) >= 1  # one window fits all 8 frames
    starts = {
        frame_indices(((dataset.get(0, d)["video"] + 1) * 127.5).round())[0] for d in range(12)
    }
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 30 - 8


def test_video_folder_pads_short_videos_with_their_last_frame(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "clips")
    item = VideoFolder(root, 24, 8, crop="center")[1]  # b_short.gif: 3 frames
    assert item["key"] == "b_short.gif" and item["length"] == 3
    pixels = ((item["video"] + 1) * 127.5).round()
    assert frame_indices(pixels) == [0, 1, 2, 2, 2, 2, 2, 2]
    assert torch.equal(item["video"][:, 3:], item["video"][:, 2:3].expand(-1, 5, -1, -1))


def test_video_folder_windows_are_reproducible_per_seed_and_epoch(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "clips")
    first = VideoFolder(root, 24, 4, seed=5)
    again = VideoFolder(root, 24, 4, seed=5)
    clips = [first[i]["video"] for i in range(3)]
    assert all(torch.equal(clip, again[i]["video"]) for i, clip in enumerate(clips))

    epochs = set()
    for epoch in range(6):
        first.set_epoch(epoch)
        epochs.add(float(first[0]["video"].sum()))
    assert len(epochs) > 1  # new windows or crops each epoch
    first.set_epoch(0)
    assert torch.equal(first[0]["video"], clips[0])
    others = {float(VideoFolder(root, 24, 4, seed=s)[0]["video"].sum()) for s in range(6)}
    assert len(others) > 1  # the seed matters
    repeated = Repeated(VideoFolder(root, 24, 4, seed=5), 4)
    assert torch.equal(repeated[0]["video"], clips[0])  # copy 0: the plain folder's
    copies = {float(repeated[3 * d]["video"].sum()) for d in range(4)}
    assert len(copies) > 1 and repeated[3]["key"] == "a_long.mp4"


def test_video_folder_resamples_and_starts(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "clips")
    item = VideoFolder(root, 24, 6, fps=50, window="start", crop="center")[0]  # 25 -> 50 fps
    pixels = ((item["video"] + 1) * 127.5).round()
    assert frame_indices(pixels) == [0, 0, 1, 1, 2, 2] and item["length"] == 6
    slow = VideoFolder(root, 24, 6, fps=5, seed=1)  # 30 frames at 25 fps: 6 frames at 5 fps
    assert frame_indices(((slow[0]["video"] + 1) * 127.5).round()) == [0, 5, 10, 15, 20, 25]


def test_video_folder_skip_and_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_folder(tmp_path / "clips")
    bad = root / "b_short.gif"
    bad.write_text("not a gif")
    stopping = VideoFolder(root, 16, 4, on_error="stop")
    with pytest.raises(VideoReadError, match="not a video") as caught:
        stopping[1]
    assert caught.value.path == bad

    skipping = VideoFolder(root, 16, 4, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="mediatok.data"):
        item = skipping[1]
    assert item["key"] == "sub/c.webm" and item["index"] == 2
    assert skipping.skipped == [bad] and str(bad) in caplog.text
    assert skipping[1]["index"] == 2 and skipping.skipped == [bad]  # not decoded again

    truncate(root / "sub" / "c.webm", 0.6)  # damage found only by reading to the end
    with pytest.raises(VideoReadError, match="truncated"):
        VideoFolder(root, 16, 40, on_error="stop")[2]
    for path in list_videos(root):
        path.write_text("broken")
    with pytest.raises(ValueError, match="no readable video"):
        VideoFolder(root, 16, 4)[0]


def test_video_folder_rejects_bad_arguments(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "clips")
    with pytest.raises(ValueError, match="frames"):
        VideoFolder(root, 16, 0)
    with pytest.raises(ValueError, match="crop"):
        VideoFolder(root, 16, 4, crop="top")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        VideoFolder(root, 16, 4, window="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame rate"):
        VideoFolder(root, 16, 4, fps=0)
    with pytest.raises(ValueError, match="positive int"):
        VideoFolder(root, 0, 4)
