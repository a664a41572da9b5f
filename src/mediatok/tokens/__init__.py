"""Token files: the on-disk contract between codecs (which write codes) and generators.

- `TokenSpec`: what codes mean (vocabulary per level, layout, read order, media geometry).
- `TokenWriter`: append samples to safetensors shards, atomically and resumably, one writer per
  rank; `merge_manifests` joins the ranks' part manifests into `manifest.json`.
- `TokenDataset`: memory-mapped random access with checks; `pad_collate` and `pack` batch
  samples for generator training.
- `read_shard`: open one shard zero-copy; `TokenFileError` names the file and the problem.

Layer 3: numpy, safetensors and the standard library; torch only to hand out tensors.
"""

from mediatok.tokens.dataset import TokenDataset, pack, pad_collate
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
    "merge_manifests",
    "pack",
    "pad_collate",
    "read_shard",
]
