"""Video files to tensors and back: listing, reading with PyAV (FFmpeg), a dataset, writing.

Every video in mediatok is a tensor `(3, T, H, W)` (C, T, H, W: what `torch.nn.Conv3d` takes per
sample): uint8 RGB in [0, 255] from the readers, float in [-1, 1] inside models (the formulas of
`to_float` / `to_uint8`, applied with T as a leading dimension).

Reading (`read_video`, `video_info`):

- The first video stream that is not an attached picture (the cover art of an audio file) is
  read; frames come in presentation order and are converted to RGB by FFmpeg's swscale, which
  follows the stream's colour tags (matrix, range). Pixels with an alpha channel (transparent
  GIF frames) are composited over white, as `read_image` does.
- Frame times are presentation timestamps measured from the first frame, which is at 0.
- `fps=None` keeps the source's frames: output frame k is the k-th frame decoded, and the rate
  returned is the stream's average rate.
- `fps=r` resamples by time: output frame k is the source frame shown at time k / r, the latest
  one whose timestamp is at or before k / r. The source lasts until its last frame's time plus
  that frame's duration, D, and gives the ceil(D * r) outputs with k / r < D. Going up repeats
  frames, going down drops them; nothing is blended (a blend is a frame that never existed).
  Variable-rate sources (GIFs with per-frame delays) come out at the constant rate `r`.
- `start` / `max_frames` pick output frames [start, start + max_frames), counted after
  resampling. Decoding stops at the first frame after the window; frames before it are decoded
  but not converted. With `fps` given and `start > 0` the reader seeks to the keyframe at or
  before start / r, and checks that it landed at or before that time (else it decodes from the
  beginning), so seeking never changes the frames. With `fps=None` frames are counted from the
  first, so the file is decoded from its beginning (in a variable-rate file a frame's number
  cannot be found from its time). A window that starts after the last frame is empty,
  `(3, 0, H, W)`.
- Rotation: a display matrix rotating by a multiple of 90 degrees (phones record portrait video
  as landscape frames plus this tag) is applied, as `read_image` applies the EXIF orientation,
  and `video_info` reports the displayed width and height. Other angles and mirroring are not
  applied (a warning says so).
- A file written by `write_video` at an odd width or height carries its true size in the tag
  `mediatok_picture_size` (H.264 in 4:2:0 needs even sides, see below); the padding is cut off.

A file that cannot be read raises `VideoReadError` naming the file and the problem, never an
empty or black video: missing, not a regular file, empty (0 bytes), not a video or a container
FFmpeg cannot open, no video stream (audio only), no decoder, no frames, or damaged. A
truncated or damaged file is an error, not a shorter video: a decoding error, a frame the decoder
marks corrupt, or, when reading reaches the end of the stream, a stream that ends more than 1.5
frames before the duration its header declares (from the stream, a Matroska DURATION tag, or the
container when the video is its only stream), or that gives fewer frames than the header counts
when no duration is declared, or a GIF without its trailer byte. The frames decoded before the
damage are not returned: a training set should not silently hold cut clips, and a dataset skips
or stops at the file (`VideoFolder`). A read that stops before the damage (a window early in
the file) returns its frames, which are intact. An MP4 cut while it was written (its index, the
moov box, written last, is missing) cannot be opened at all.

Writing (`write_video`): `.mp4`, `.m4v`, `.mov` and `.mkv` get H.264 (libx264, yuv420p, CRF 18,
preset medium, tagged BT.709 limited range; MP4 and MOV with the index first, `faststart`);
`.webm` gets VP9 (libvpx-vp9, yuv420p, CRF 24 constant quality, BT.709). 4:2:0 H.264 needs even
sides, so an odd width or height is padded by repeating the last column or row and the true
size is stored in the tag above, which `read_video` applies; other players show the extra
row or column. VP9 takes odd sizes as they are. The frame rate is stored as a rational (29.97 is
2997/100, 30000/1001 stays 30000/1001), each frame one tick of 1 / fps.

Layer 3: torch, PyAV, numpy; never models.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from mediatok.data.folder import MediaFolder, MediaReadError, list_files
from mediatok.data.image_io import _composite_over_white, to_float, to_uint8
from mediatok.data.images import CROPS, resize_and_crop, target_size

if TYPE_CHECKING:
    import av

__all__ = [
    "VIDEO_EXTENSIONS",
    "VIDEO_WINDOWS",
    "VideoFolder",
    "VideoInfo",
    "VideoReadError",
    "list_videos",
    "read_video",
    "resize_and_crop_video",
    "video_info",
    "write_video",
]

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".m4v",
    ".mov",
    ".mkv",
    ".webm",
    ".avi",
    ".gif",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
)
VIDEO_WINDOWS = ("random", "start")
# suffix -> (FFmpeg muxer, encoder)
_WRITE_FORMATS = {
    ".mp4": ("mp4", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mov": ("mov", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
}
# CRF 18: about visually lossless for H.264; CRF 24 is VP9's equivalent (its scale differs).
_ENCODER_OPTIONS = {
    "libx264": {"crf": "18", "preset": "medium"},
    "libvpx-vp9": {"crf": "24", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
}
# AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic BT.709 and AVColorRange MPEG
# (limited): the encoders write them into the bitstream, so players convert back as we did.
_BT709, _LIMITED_RANGE = 1, 1
SIZE_TAG = "mediatok_picture_size"
# A frame rate given as a float becomes the nearest fraction with a denominator up to this:
# 29.97 -> 2997/100, 30000/1001 (29.97002997...) -> 30000/1001.
_RATE_DENOMINATOR = 1_000_000
# A stream may end this many frame durations before its declared duration (rounding, a last
# frame without a duration) before it counts as truncated.
_TRUNCATION_SLACK = Fraction(3, 2)
_GIF_TRAILER = b";"
# FFmpeg's demuxer names, shortened for messages.
_CONTAINER_NAMES = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4/MOV",
    "matroska,webm": "Matroska/WebM",
    "avi": "AVI",
    "gif": "GIF",
}
logger = logging.getLogger("mediatok.data")


class VideoReadError(MediaReadError):
    """A video file cannot be read or decoded; the message starts with its path.

    Args:
        path: the file at fault.
        problem: what went wrong, e.g. `"no video stream (the file holds 1 audio stream)"`.
    """


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's container says, as `read_video` would return it with `fps=None`.

    Attributes:
        frames: the number of frames (from the header, or by counting the packets).
        fps: the stream's average frame rate.
        width, height: the displayed size (after rotation and `write_video`'s padding).
    """

    frames: int
    fps: float
    width: int
    height: int


# --------------------------------------------------------------------------------------------
# listing


def list_videos(
    root: str | os.PathLike[str], extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> list[Path]:
    """Every video file under `root`, recursively, in a deterministic order: `list_files`."""
    return list_files(root, extensions, "videos")


# --------------------------------------------------------------------------------------------
# reading


class _Frame:
    """A decoded frame, its time and duration in seconds from the first frame, and its RGB
    pixels, converted once on demand."""

    __slots__ = ("_pixels", "duration", "frame", "time")

    def __init__(self, frame: av.VideoFrame, time: Fraction, duration: Fraction) -> None:
        self.frame, self.time, self.duration = frame, time, duration
        self._pixels: np.ndarray | None = None


class _VideoFile:
    """An open video stream: frames in presentation order with their times, checks at the end.

    Use as a context manager; `frames()` iterates from the current position, `seek(time)`
    moves it (see `read_video`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        self.container, self.stream = _open_video(self.path)
        stream = self.stream
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate or rate <= 0:
            self.close()
            raise VideoReadError(self.path, f"the {self.what} stream has no frame rate")
        self.rate = Fraction(rate)
        self.time_base = Fraction(stream.time_base) if stream.time_base else None
        self.stored_size = _stored_size(self.container)
        self.first: Fraction | None = None  # absolute time of the first frame (seconds)
        self.last_time: Fraction | None = None
        self.turns = 0  # quarter turns counterclockwise, from the first frame's display matrix
        self.seeked = False

    @property
    def what(self) -> str:
        """E.g. "MP4/MOV h264", for messages."""
        name = self.container.format.name
        return f"{_CONTAINER_NAMES.get(name, name)} {self.stream.codec_context.name}"

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> _VideoFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def restart(self) -> None:
        """Back to the first frame (after a seek that missed)."""
        self.close()
        self._open()

    def frames(self) -> Iterator[_Frame]:
        """Every frame from the current position; at the end of the stream, the checks of the
        module docstring (no frames, truncation)."""
        import av

        count = 0
        last: _Frame | None = None
        try:
            for packet in self.container.demux(self.stream):
                for frame in packet.decode():
                    if frame.is_corrupt:
                        raise VideoReadError(
                            self.path,
                            f"damaged {self.what} data: frame {count + 1} decodes as corrupt",
                        )
                    last = self._timed(frame, count)
                    count += 1
                    yield last
        except av.FFmpegError as error:
            raise VideoReadError(
                self.path,
                f"damaged or truncated {self.what} data: decoding failed after {count} frames "
                f"({type(error).__name__}: {error})",
            ) from error
        self._check_complete(count, last)

    def _timed(self, frame: av.VideoFrame, index: int) -> _Frame:
        nominal = 1 / self.rate
        previous = self.last_time
        if frame.pts is None or self.time_base is None:
            time = Fraction(0) if previous is None else previous + nominal
        else:
            stamp = frame.pts * self.time_base
            if self.first is None:
                self.first = stamp - (Fraction(0) if previous is None else previous + nominal)
            time = stamp - self.first
        if previous is None:
            self.turns = self._quarter_turns(frame)
        else:
            # Presentation order is monotonic; a repeated or decreasing timestamp (damaged
            # timing) does not go back in time.
            time = max(time, previous)
        self.last_time = time
        duration = nominal
        if frame.duration and self.time_base is not None:
            duration = frame.duration * self.time_base
        return _Frame(frame, time, duration)

    def _quarter_turns(self, frame: av.VideoFrame) -> int:
        angle = frame.rotation  # counterclockwise degrees, 0 without a display matrix
        turns = round(angle / 90)
        if abs(angle - 90 * turns) > 1:
            logger.warning(
                "%s: a display rotation of %s degrees is not a multiple of 90; not applied",
                self.path,
                angle,
            )
            return 0
        return turns % 4

    def _check_complete(self, count: int, last: _Frame | None) -> None:
        if count == 0 and not self.seeked:
            raise VideoReadError(self.path, f"no frames: the {self.what} stream decodes to none")
        if last is None:
            return
        end = last.time + last.duration
        declared = self._declared_end()
        if declared is not None:
            slack = _TRUNCATION_SLACK * max(last.duration, 1 / self.rate)
            if end < declared - slack:
                raise VideoReadError(
                    self.path,
                    f"truncated {self.what} data: the frames end at {float(end):.3f} s, the "
                    f"header declares {float(declared):.3f} s",
                )
        elif not self.seeked and count < self.stream.frames:
            raise VideoReadError(
                self.path,
                f"truncated {self.what} data: {count} of the {self.stream.frames} frames the "
                "header declares",
            )
        if self.container.format.name == "gif" and not _ends_with(self.path, _GIF_TRAILER):
            raise VideoReadError(
                self.path, "truncated GIF data: the file does not end with the GIF trailer"
            )

    def _declared_end(self) -> Fraction | None:
        """The end of the stream its header declares, in seconds from the first frame."""
        first = self.first if self.first is not None else Fraction(0)
        stream, container = self.stream, self.container
        if stream.duration and self.time_base is not None:
            start = stream.start_time if stream.start_time is not None else 0
            return (start + stream.duration) * self.time_base - first
        tag = stream.metadata.get("DURATION")  # Matroska, per stream: "00:00:02.400000000"
        if tag:
            try:
                hours, minutes, seconds = tag.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds) - first
            except ValueError:
                pass
        if container.duration and len(container.streams) == 1:
            start = container.start_time or 0
            return Fraction(start + container.duration, 1_000_000) - first
        return None

    def seek(self, time: Fraction) -> Iterator[_Frame]:
        """Frames from the keyframe at or before `time` (seconds from the first frame), or from
        the first frame when the container cannot seek there; times stay those of `frames()`.
        """
        import av

        frames = self.frames()
        first = next(frames)  # fixes the clock's origin; raises on a file without frames
        if self.first is None or self.time_base is None or time <= first.time:
            return _chain(first, frames)
        frames.close()
        try:
            self.container.seek(self._seek_timestamp(time), stream=self.stream, backward=True)
            self.seeked = True
            frames = self.frames()
            landed = next(frames, None)
        except (av.FFmpegError, VideoReadError) as error:
            # A container that cannot seek, or a landing the decoder cannot start from: the
            # file may still decode from its start, which decides.
            logger.debug("%s: cannot seek (%s); decoding from the start", self.path, error)
            self.restart()
            return self.frames()
        if landed is not None and landed.frame.pts is not None and landed.time <= time:
            return _chain(landed, frames)
        frames.close()
        logger.debug("%s: a seek to %s s missed; decoding from the start", self.path, time)
        self.restart()
        return self.frames()

    def _seek_timestamp(self, time: Fraction) -> int:
        """The stream timestamp of `time` seconds from the first frame."""
        assert self.first is not None and self.time_base is not None
        return math.floor((self.first + time) / self.time_base)

    def pixels(self, item: _Frame) -> np.ndarray:
        """`(H, W, 3)` uint8 RGB, padding cut off and rotation applied."""
        if item._pixels is not None:
            return item._pixels
        frame = item.frame
        if any(component.is_alpha for component in frame.format.components):
            rgba = frame.to_ndarray(format="rgba")
            array = _composite_over_white(rgba[..., :3], rgba[..., 3], 255)
        else:
            array = frame.to_ndarray(format="rgb24")
        if self.stored_size is not None:
            width, height = self.stored_size
            array = array[:height, :width]
        if self.turns:
            array = np.rot90(array, self.turns)  # counterclockwise, as the display matrix says
        item._pixels = np.ascontiguousarray(array)
        return item._pixels

    def display_size(self, frame: av.VideoFrame) -> tuple[int, int]:
        """`(height, width)` of `pixels` for a frame of this stream."""
        width, height = self.stored_size or (frame.width, frame.height)
        return (width, height) if self.turns % 2 else (height, width)


def _chain(first: _Frame, rest: Iterator[_Frame]) -> Iterator[_Frame]:
    yield first
    yield from rest


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    """The container and its first video stream, or a `VideoReadError` saying why not."""
    import av

    try:
        status = path.stat()
    except OSError as error:
        raise VideoReadError(path, f"cannot read the file ({error.strerror or error})") from error
    if not stat.S_ISREG(status.st_mode):
        # A FIFO would block the open; a directory is a user's mistake.
        raise VideoReadError(path, "not a regular file")
    if status.st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes), not a video")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except Exception as error:
        raise VideoReadError(path, _describe_open_failure(path, error)) from error
    streams = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        kinds = [stream.type for stream in container.streams]
        container.close()
        held = ", ".join(
            f"{kinds.count(kind)} {kind} stream{'s' if kinds.count(kind) > 1 else ''}"
            for kind in sorted(set(kinds))
        )
        found = f"the file holds {held}" if kinds else "the file holds no streams"
        if not {"audio", "subtitle"} & set(kinds):
            # A cut MP4 index can leave a track FFmpeg reads as "data" only.
            found += "; damaged or truncated?"
        raise VideoReadError(path, f"no video stream ({found})")
    stream = streams[0]
    if stream.codec_context is None:
        container.close()
        raise VideoReadError(path, "no decoder for its video codec in this FFmpeg build")
    return container, stream


def _describe_open_failure(path: Path, error: Exception) -> str:
    """Why FFmpeg cannot open a file."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
    except OSError:
        head = b""
    reason = getattr(error, "strerror", None) or str(error)
    if head[4:8] == b"ftyp":
        # An MP4 or MOV whose index (moov box) is missing or cut: an interrupted recording or a
        # partial download, as the index is usually written last.
        return f"truncated or damaged MP4/MOV data: FFmpeg cannot open it ({reason})"
    # The first bytes tell an HTML error page or a text file under a video name at a glance.
    return f"not a video, or a format FFmpeg cannot read ({reason}; file starts with {head!r})"


def _stored_size(container: av.container.InputContainer) -> tuple[int, int] | None:
    """`(width, height)` from `write_video`'s padding tag, or None."""
    # Matroska stores tag names in capitals.
    tag = container.metadata.get(SIZE_TAG) or container.metadata.get(SIZE_TAG.upper())
    if not tag:
        return None
    try:
        width, height = (int(side) for side in tag.split("x"))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _ends_with(path: Path, suffix: bytes) -> bool:
    with open(path, "rb") as file:
        file.seek(-len(suffix), os.SEEK_END)
        return file.read() == suffix


def _frame_rate(fps: Any, name: str = "fps") -> Fraction:
    """A positive finite frame rate as a fraction (see `_RATE_DENOMINATOR`)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float, Fraction)):
        raise TypeError(f"expected {name} to be a number of frames per second, got {fps!r}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"expected {name} to be a positive, finite frame rate, got {fps!r}")
    rate = Fraction(fps)
    return rate if isinstance(fps, (int, Fraction)) else rate.limit_denominator(_RATE_DENOMINATOR)


def read_video(
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    start: int = 0,
    max_frames: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Decode a video file to RGB frames (see the module docstring for the rules).

    Args:
        path: any container and codec FFmpeg reads (MP4, MOV, MKV, WebM, AVI, GIF, ...).
        fps: resample to this rate by time (output frame k is the source frame shown at
            k / fps); None keeps the source's frames.
        start: the first output frame to return, counted after resampling.
        max_frames: return at most this many frames (from `start`); None: to the end.

    Returns:
        `video` `(3, T, H, W)` uint8, contiguous (T = 0 when `start` is past the end), and the
        frame rate of the returned frames (`fps`, or the source's average rate).

    Raises:
        VideoReadError: the file is missing or unreadable, not a video, has no video stream,
            no frames, or is damaged or truncated; the message names the path and the problem.
        ValueError, TypeError: a bad `fps`, `start` or `max_frames`.
    """
    import av

    rate = None if fps is None else _frame_rate(fps)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"expected start to be a non-negative int, got {start!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
    ):
        raise ValueError(f"expected max_frames to be None or a positive int, got {max_frames!r}")
    stop = math.inf if max_frames is None else start + max_frames
    path = Path(path)
    with _VideoFile(path) as video:
        try:
            if rate is None:
                frames, size = _count_frames(video, start, stop)
                rate_out = float(video.rate)
            else:
                frames, size = _resample_frames(video, rate, start, stop)
                rate_out = float(fps)
        except av.FFmpegError as error:
            # A conversion to RGB (swscale) or a seek failing: still this file's problem.
            raise VideoReadError(
                path, f"cannot decode the {video.what} data: {type(error).__name__}: {error}"
            ) from error
    if not frames:
        return torch.empty((3, 0, *size), dtype=torch.uint8), rate_out
    pixels = np.stack(frames)  # (T, H, W, 3)
    return torch.from_numpy(pixels).permute(3, 0, 1, 2).contiguous(), rate_out


def _count_frames(
    video: _VideoFile, start: int, stop: float
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Source frames [start, stop), and the frame size."""
    frames: list[np.ndarray] = []
    size = (0, 0)
    for index, item in enumerate(video.frames()):
        size = video.display_size(item.frame)
        if index >= start:
            frames.append(video.pixels(item))
            if index + 1 >= stop:
                break
    return frames, size


def _resample_frames(
    video: _VideoFile, rate: Fraction, start: int, stop: float
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Output frames [start, stop) at `rate`: frame k is the latest source frame at or before
    k / rate; the source ends at its last frame's time plus duration. Returns the frames and
    the frame size."""
    frames: list[np.ndarray] = []
    index = start  # the next output frame
    current: _Frame | None = None  # the latest source frame at or before index / rate
    items = video.seek(start / rate) if start > 0 else video.frames()
    for item in items:
        # Every output before this frame's time shows the current one.
        while current is not None and index < stop and index / rate < item.time:
            frames.append(video.pixels(current))
            index += 1
        if index >= stop:
            break
        current = item
    else:
        if current is not None:
            end = current.time + current.duration
            while index < stop and index / rate < end:
                frames.append(video.pixels(current))
                index += 1
    size = video.display_size(current.frame) if current is not None else (0, 0)
    return frames, size


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Frame count, rate and displayed size of a video file, without decoding it all.

    The first frame is decoded (for its rotation, and to fail early on undecodable files); the
    frame count is the header's, or, when the header has none (Matroska, WebM), the number of
    the stream's packets, found by demuxing the whole file without decoding.

    Args:
        path: a video file.

    Returns:
        `VideoInfo(frames, fps, width, height)`.

    Raises:
        VideoReadError: as `read_video`.
    """
    import av

    path = Path(path)
    with _VideoFile(path) as video:
        frames_from_start = video.frames()
        first = next(frames_from_start)
        frames_from_start.close()
        height, width = video.display_size(first.frame)
        frames = video.stream.frames
        if frames <= 0:
            video.restart()
            try:
                frames = sum(1 for packet in video.container.demux(video.stream) if packet.size)
            except av.FFmpegError as error:
                raise VideoReadError(
                    path, f"damaged or truncated {video.what} data: {error}"
                ) from error
        return VideoInfo(frames=max(frames, 1), fps=float(video.rate), width=width, height=height)


# --------------------------------------------------------------------------------------------
# geometry


def resize_and_crop_video(
    video: torch.Tensor,
    size: int | Sequence[int],
    crop: Literal["center", "random", "random_resized"] = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`resize_and_crop` with one window for every frame of a video.

    Args:
        video: `(3, T, H, W)` uint8 or float, on any device.
        size: target side (the short side becomes `size`, the crop is square), or `(H, W)`.
        crop: `"center"`, `"random"` or `"random_resized"` (see `resize_and_crop`).
        generator: random source of the random crops; None uses the global one.

    Returns:
        `(3, T, H', W')` of the target size, same dtype and device, contiguous; each frame equal
        to `resize_and_crop` of that frame with the same window.
    """
    if not isinstance(video, torch.Tensor) or video.ndim != 4:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"expected a video (3, T, H, W), got {shape}")
    frames = video.transpose(0, 1)  # (T, 3, H, W): resize_and_crop takes leading dimensions
    return resize_and_crop(frames, size, crop, generator).transpose(0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# writing


def write_video(path: str | os.PathLike[str], video: torch.Tensor, fps: float) -> None:
    """Write a video to MP4/MOV/MKV (H.264) or WebM (VP9), atomically (see the module docstring
    for the settings and odd sizes).

    The bytes go to a hidden temporary file beside `path` that is then renamed over it (not
    fsynced), as `write_image` does.

    Args:
        path: ends in `.mp4`, `.m4v`, `.mov`, `.mkv` or `.webm` (any case); parent directories
            are created.
        video: `(3, T, H, W)` on any device, T >= 1, either uint8 pixels or float in [-1, 1]
            (converted as `to_uint8` does).
        fps: frames per second, a positive number (a float such as 29.97 is stored as the
            nearest fraction with a denominator up to 10**6).

    Raises:
        ValueError: an unknown suffix, a wrong shape, non-finite values or a bad `fps`.
        TypeError: not a tensor, or neither uint8 nor float.
    """
    import av

    path = Path(path)
    written = _WRITE_FORMATS.get(path.suffix.lower())
    if written is None:
        raise ValueError(f"expected a path ending in {', '.join(_WRITE_FORMATS)}, got {path}")
    rate = _frame_rate(fps)
    pixels = _video_pixels(video, path)  # (T, H, W, 3)
    container_format, codec = written
    _, height, width, _ = pixels.shape
    container_options = {"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}
    padded = codec == "libx264" and (height % 2 or width % 2)
    if padded:
        # 4:2:0 H.264 has no odd sides; repeat the last row / column, keep the size in a tag.
        pixels = np.pad(pixels, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if container_format in ("mp4", "mov"):
            container_options["movflags"] += "+use_metadata_tags"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    try:
        with av.open(
            str(temporary), "w", format=container_format, options=container_options
        ) as container:
            if padded:
                container.metadata[SIZE_TAG] = f"{width}x{height}"
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height = pixels.shape[2], pixels.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = dict(_ENCODER_OPTIONS[codec])
            if codec == "libvpx-vp9":
                stream.bit_rate = 0  # with crf: constant quality
            context = stream.codec_context
            context.colorspace = context.color_primaries = context.color_trc = _BT709
            context.color_range = _LIMITED_RANGE
            for frame in _frames_for_encoding(pixels):
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _video_pixels(video: torch.Tensor, path: Path) -> np.ndarray:
    """A `(3, T, H, W)` uint8 or float video as `(T, H, W, 3)` uint8 on the CPU."""
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"expected a tensor video, got {type(video).__name__}")
    if video.ndim != 4 or video.shape[0] != 3 or 0 in video.shape:
        raise ValueError(
            f"expected a video of shape (3, T, H, W) with T, H, W >= 1, got {tuple(video.shape)}"
        )
    frames = video.detach().transpose(0, 1)  # (T, 3, H, W)
    if frames.is_floating_point():
        if not torch.isfinite(frames).all():
            raise ValueError(f"cannot write {path}: the float video holds NaN or infinite values")
        frames = to_uint8(frames)
    elif frames.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 video or a float video in [-1, 1], got {video.dtype}")
    return frames.cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (T, H, W, 3)


def _frames_for_encoding(pixels: np.ndarray) -> Iterator[av.VideoFrame]:
    """`(T, H, W, 3)` RGB to yuv420p frames in BT.709 limited range, pts = index."""
    import av

    for index, rgb in enumerate(pixels):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = index
        yield frame


# --------------------------------------------------------------------------------------------
# dataset


class VideoFolder(MediaFolder):
    """Every video under a directory, cut into fixed-length clips for codec training.

    Items are `{"video": (3, frames, H, W) float32 in [-1, 1], "length": int, "key": str,
    "index": int}`: a window of `frames` consecutive frames (after resampling to `fps`, if
    given), every frame resized and cropped with the same window (`resize_and_crop_video`). A
    video shorter than `frames` is padded by repeating its last frame; `length` is the number
    of real frames. The key is the file's path relative to `root` (POSIX separators), the index
    that of the file returned.

    Only the window is decoded, up to its end: its position comes from `video_info` (cached per
    file), then `read_video(start=, max_frames=)` reads it. With `fps` given, the reader seeks
    to the window; with `fps=None` it decodes from the start of the file to the window's end
    (see `read_video`), so for long files pass `fps`.

    Bad files, `skipped`, seeding and `set_epoch` behave as in `ImageFolder`: with
    `on_error="stop"` a `VideoReadError` naming the file; with `"skip"` a warning, the file is
    appended to `skipped` and the next readable file in listing order is returned. The window
    and the crop draw from one generator seeded by `(seed, epoch, index)` (and the copy, under
    `Repeated`).

    Args:
        root: directory searched recursively by `list_videos`.
        image_size: output side (square), or `(H, W)`.
        frames: clip length in frames, a positive int.
        fps: resample to this rate; None keeps each file's own frames.
        crop: `"random"` or `"random_resized"` (training), or `"center"`.
        on_error: `"skip"` or `"stop"`.
        seed: non-negative base seed of the random windows and crops.
        window: `"random"` (training) or `"start"` (the first `frames` frames).
        extensions: file suffixes to include.

    Attributes:
        paths: the files, sorted; `keys`: their relative paths; `skipped`: unreadable files met
            so far by this copy.
    """

    noun = "video"

    def __init__(
        self,
        root: str | os.PathLike[str],
        image_size: int | Sequence[int],
        frames: int,
        *,
        fps: float | None = None,
        crop: Literal["center", "random", "random_resized"] = "random",
        on_error: Literal["skip", "stop"] = "skip",
        seed: int = 0,
        window: Literal["random", "start"] = "random",
        extensions: Iterable[str] = VIDEO_EXTENSIONS,
    ) -> None:
        target_size(image_size)
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise ValueError(f"expected frames to be a positive int, got {frames!r}")
        if fps is not None:
            _frame_rate(fps)
        if crop not in CROPS:
            raise ValueError(f"expected crop to be one of {CROPS}, got {crop!r}")
        if window not in VIDEO_WINDOWS:
            raise ValueError(f"expected window to be one of {VIDEO_WINDOWS}, got {window!r}")
        super().__init__(root, list_videos(root, extensions), on_error, seed)
        self.image_size = image_size
        self.frames = frames
        self.fps = fps
        self.crop = crop
        self.window = window
        self._positions = {path: index for index, path in enumerate(self.paths)}
        self._infos: dict[int, VideoInfo] = {}
        self._draw = 0

    def get(self, index: int, draw: int = 0) -> dict[str, Any]:
        """Item `index` with the window and crop of its copy `draw` this epoch, or the next
        readable item (`MediaFolder.get`)."""
        # `_read` draws the window, so it needs the copy; MediaFolder passes it only to `_item`.
        self._draw = draw
        return super().get(index, draw)

    def _read(self, path: Path) -> tuple[torch.Tensor, int]:  # type: ignore[override]
        index = self._positions[path]
        info = self._infos.get(index)
        if info is None:
            info = self._infos[index] = video_info(path)
        available = info.frames
        if self.fps is not None:
            # Duration frames / fps, in frames at the new rate (a constant source rate assumed).
            available = max(1, math.ceil(info.frames * float(self.fps) / info.fps - 1e-6))
        generator = self.generator(index, self._draw)
        start = 0
        if self.window == "random" and available > self.frames:
            start = int(torch.randint(available - self.frames + 1, (), generator=generator))
        clip, _ = read_video(path, fps=self.fps, start=start, max_frames=self.frames)
        if clip.shape[1] < self.frames and start > 0:
            # The header promised more frames than the file gives: take its last ones.
            logger.debug("%s: fewer frames than its header says; reading it whole", path)
            clip = read_video(path, fps=self.fps)[0][:, -self.frames :]
        clip = resize_and_crop_video(
            clip, self.image_size, self.crop, generator if self.crop != "center" else None
        )
        length = clip.shape[1]
        if length < self.frames:
            last = clip[:, -1:].expand(-1, self.frames - length, -1, -1)
            clip = torch.cat([clip, last], dim=1)  # (3, frames, H, W), the last frame repeated
        video = to_float(clip.transpose(0, 1)).transpose(0, 1).contiguous()  # (3, T, H, W)
        return video, length

    def _item(  # type: ignore[override]
        self, data: tuple[torch.Tensor, int], index: int, draw: int
    ) -> dict[str, Any]:
        video, length = data
        return {"video": video, "length": length, "key": self.keys[index], "index": index}
