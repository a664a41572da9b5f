"""Token files: the on-disk contract between codecs (which write codes) and generators.

- `TokenSpec`: what codes mean (vocabulary per level, layout, read order, media geometry).
- `TokenWriter`: append samples to safetensors shards, atomically and resumably, one writer per
  rank (a second one of a rank is refused: `TokenWriterBusy`); `merge_manifests` joins the
  ranks' part manifests into `manifest.json`. A sample may replace an older one of its key (a
  source re-encoded because it changed); readers see the newest sample of each key only.
- `TokenDataset`: memory-mapped random access with checks (each shard's CRC-32s the first time
  it is mapped); `pad_collate` and `pack` batch samples for generator training.
- `read_shard`: open one shard zero-copy; `TokenFileError` names the file and the problem.
- `written.written_samples`: the live sample of each key in a directory, and its source's
  size and mtime, for a job that resumes it.

Layer 3: numpy, safetensors and the standard library; torch only to hand out tensors.
"""

from mediatok.tokens.dataset import TokenDataset, pack, pad_collate
from mediatok.tokens.lock import TokenWriterBusy
from mediatok.tokens.manifest import merge_manifests
from mediatok.tokens.shards import FORMAT_VERSION, ShardData, TokenFileError, read_shard
from mediatok.tokens.spec import LAYOUTS, TokenSpec
from mediatok.tokens.writer import TokenWriter

__all__ = [
    "FORMAT_VERSION",
    "LAYOUTS",
    "ShardData",
    "TokenDataset",
    "TokenFileError",
    "TokenSpec",
    "TokenWriter",
    "TokenWriterBusy",
    "merge_manifests",
    "pack",
    "pad_collate",
    "read_shard",
]
