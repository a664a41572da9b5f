"""Video codecs: a causal 3-D tokenizer (MAGVIT-v2 / Cosmos style; the first frame alone, so
images are 1-frame videos), chunked long-video coding, last-tap inflation from image weights."""

from mediatok.codecs.video.causal import CausalVideoConfig, CausalVideoTokenizer
from mediatok.codecs.video.inflate import inflate_from_image_checkpoint
from mediatok.codecs.video.layers import FrameCache

__all__ = [
    "CausalVideoConfig",
    "CausalVideoTokenizer",
    "FrameCache",
    "inflate_from_image_checkpoint",
]
