"""Media files to tensors and back: readers, writers and datasets.

Images (`image_io`, `images`):

- `read_image`: any Pillow format and mode to RGB `(3, H, W)` uint8, EXIF orientation applied;
  `ImageReadError` (a `ValueError`) names the file and the problem, never a blank image.
- `write_image`: `(3, H, W)` uint8, or float in [-1, 1], to PNG or JPEG (quality 95), atomically.
- `to_float` / `to_uint8`: pixels [0, 255] <-> model range [-1, 1].
- `list_images`: the image files under a directory, recursively, sorted.
- `resize_and_crop`: cover the target size keeping the aspect ratio, then center or random crop.
- `ImageFolder`: a `Dataset` of `{"image", "key", "index"}` with reproducible random crops and a
  skip-or-stop policy for bad files.
- `decode_batch`: a batch of files onto a device for encoding, JPEGs through nvjpeg on CUDA.
- `read_center_crops`: files to one center-cropped float batch on the CPU, for evaluation; an
  unreadable file stops it.

Audio (`audio`): `read_audio` (soundfile; mono mixdown and torchaudio resampling; `AudioReadError`
names the file), `write_audio` (WAV/FLAC, atomic), `loudness_normalize` (RMS), `list_audio`, and
`AudioFolder`, a dataset of fixed-length crops.

Video (`video`, PyAV): every video is `(3, T, H, W)` (C, T, H, W), uint8 from the readers, float
in [-1, 1] in models.

- `read_video`: any container FFmpeg reads to RGB frames; `fps` resamples by time (output frame k
  is the source frame shown at k / fps), `start` / `max_frames` pick a window without decoding
  past it; display rotation applied; `VideoReadError` names the file (truncated and damaged
  files included), never a black or silently cut video.
- `video_info`: `VideoInfo(frames, fps, width, height)` from the container.
- `write_video`: MP4/MOV/MKV (H.264, yuv420p, CRF 18) or WebM (VP9), a rational frame rate, odd
  sizes kept, atomically.
- `resize_and_crop_video`: `resize_and_crop` with one window for all frames.
- `list_videos`, and `VideoFolder`, a dataset of fixed-length clips (random window per item and
  epoch, one crop for all frames, short videos padded with their last frame, `length` real
  frames).

Layer 3 throughout: torch, torchvision, Pillow, soundfile, PyAV, numpy; never models.
"""

from mediatok.data.audio import (
    AUDIO_EXTENSIONS,
    AudioFolder,
    AudioReadError,
    list_audio,
    loudness_normalize,
    read_audio,
    write_audio,
)
from mediatok.data.folder import MediaFolder, MediaReadError, Repeated
from mediatok.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    apply_exif_orientation,
    list_images,
    read_image,
    to_float,
    to_uint8,
    write_image,
)
from mediatok.data.images import (
    ImageFolder,
    decode_batch,
    read_center_crops,
    resize_and_crop,
    side_by_side,
)
from mediatok.data.video import (
    VIDEO_EXTENSIONS,
    VideoFolder,
    VideoInfo,
    VideoReadError,
    list_videos,
    read_video,
    resize_and_crop_video,
    video_info,
    write_video,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AudioFolder",
    "AudioReadError",
    "ImageFolder",
    "ImageReadError",
    "MediaFolder",
    "MediaReadError",
    "Repeated",
    "VideoFolder",
    "VideoInfo",
    "VideoReadError",
    "apply_exif_orientation",
    "decode_batch",
    "list_audio",
    "list_images",
    "list_videos",
    "loudness_normalize",
    "read_audio",
    "read_center_crops",
    "read_image",
    "read_video",
    "resize_and_crop",
    "resize_and_crop_video",
    "side_by_side",
    "to_float",
    "to_uint8",
    "video_info",
    "write_audio",
    "write_image",
    "write_video",
]
