"""What the one training loop trains: a task per kind of model, each with its run config (the
YAML's `task:`), its data, and its losses and discriminators beside it.

- `image_codec`: `ImageCodecTask` (`ImageCodecRunConfig`): pixel, perceptual and PatchGAN
  losses (`image_losses.py`).
- `audio_codec`: `AudioCodecTask` (`AudioCodecRunConfig`): multi-scale mel, multi-period,
  multi-resolution and multi-band discriminators, feature matching (`audio_losses.py`,
  `audio_discriminators.py`).
- `video_codec`: `VideoCodecTask` (`VideoCodecRunConfig`): clips and images as 1-frame videos,
  per-frame L1 and perceptual losses, a 3-D PatchGAN (`video_losses.py`), inflation from an
  image checkpoint.
- `flextok`: `FlexTokTask` (`FlexTokRunConfig`): the rectified-flow loss of a FlexTok tokenizer,
  its quantizer's losses, REPA when configured.
- `generator`: `GeneratorTask` (`GeneratorRunConfig`): AR or masked generators on token shards.

The codec tasks share `codec.py` (the codec, the quantizer's terms) and `adversarial.py` (hinge
losses, LeCam).

Layer 5.
"""

from mediatok.training.tasks.audio_codec import (
    AudioCodecRunConfig,
    AudioCodecTask,
    AudioDataConfig,
    AudioLossConfig,
)
from mediatok.training.tasks.codec import CodecTask
from mediatok.training.tasks.flextok import FlexTokLossConfig, FlexTokRunConfig, FlexTokTask
from mediatok.training.tasks.generator import (
    GeneratorDataConfig,
    GeneratorRunConfig,
    GeneratorTask,
    TokenWindows,
    prepare_generator_run,
)
from mediatok.training.tasks.image_codec import (
    ImageCodecRunConfig,
    ImageCodecTask,
    ImageDataConfig,
    ImageLossConfig,
)
from mediatok.training.tasks.video_codec import (
    VideoCodecRunConfig,
    VideoCodecTask,
    VideoDataConfig,
    VideoLossConfig,
)

__all__ = [
    "AudioCodecRunConfig",
    "AudioCodecTask",
    "AudioDataConfig",
    "AudioLossConfig",
    "CodecTask",
    "FlexTokLossConfig",
    "FlexTokRunConfig",
    "FlexTokTask",
    "GeneratorDataConfig",
    "GeneratorRunConfig",
    "GeneratorTask",
    "ImageCodecRunConfig",
    "ImageCodecTask",
    "ImageDataConfig",
    "ImageLossConfig",
    "TokenWindows",
    "VideoCodecRunConfig",
    "VideoCodecTask",
    "VideoDataConfig",
    "VideoLossConfig",
    "prepare_generator_run",
]
