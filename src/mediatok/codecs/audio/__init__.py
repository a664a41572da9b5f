"""Audio codecs: WavTokenizer (one codebook, chunked long-file encoding, causal streaming)."""

from mediatok.codecs.audio.layers import StreamState
from mediatok.codecs.audio.wavtokenizer import WavTokenizer, WavTokenizerConfig

__all__ = ["StreamState", "WavTokenizer", "WavTokenizerConfig"]
