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

Layer 3: torch, torchvision, Pillow, numpy; never models.

Audio (`audio`): `read_audio` (soundfile; mono mixdown and torchaudio resampling; `AudioReadError`
names the file), `write_audio` (WAV/FLAC, atomic), `loudness_normalize` (RMS), `list_audio`, and
`AudioFolder`, a dataset of fixed-length crops.
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

__all__ = [
    "AUDIO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "AudioFolder",
    "AudioReadError",
    "ImageFolder",
    "ImageReadError",
    "MediaFolder",
    "MediaReadError",
    "Repeated",
    "apply_exif_orientation",
    "decode_batch",
    "list_audio",
    "list_images",
    "loudness_normalize",
    "read_audio",
    "read_center_crops",
    "read_image",
    "resize_and_crop",
    "side_by_side",
    "to_float",
    "to_uint8",
    "write_audio",
    "write_image",
]
