"""The work behind each command, one module per command, typed and with plain exceptions:
`encode_folder` (`mediatok encode`), `decode_folder` (`mediatok decode`), `sample` and
`write_samples` (`mediatok sample`), `evaluate_codec` and `evaluate_samples` (`mediatok eval`).

The CLI is a thin shell over these (argparse, and the one-line form of their errors); Python
users call them directly:

>>> from mediatok.pipelines import encode_folder, decode_folder
>>> result = encode_folder("runs/s128/checkpoint", "photos/", "tokens/")  # doctest: +SKIP
>>> decode_folder("runs/s128/checkpoint", "tokens/", "decoded/")          # doctest: +SKIP

What differs between media is asked of the codec's entry in `mediatok.modalities`; nothing here
branches on a modality, and nothing here imports `mediatok.training`.

Layer 5.
"""

from mediatok.modalities import DecodeOptions, EncodeOptions, EvalOptions
from mediatok.pipelines.common import Stopped, Terminated, check_decodes
from mediatok.pipelines.decode import DecodeResult, decode_folder, write_decoded
from mediatok.pipelines.encode import EncodeResult, encode_folder
from mediatok.pipelines.evaluate import evaluate_codec, evaluate_samples
from mediatok.pipelines.sample import Samples, batch_seed, sample, write_samples

__all__ = [
    "DecodeOptions",
    "DecodeResult",
    "EncodeOptions",
    "EncodeResult",
    "EvalOptions",
    "Samples",
    "Stopped",
    "Terminated",
    "batch_seed",
    "check_decodes",
    "decode_folder",
    "encode_folder",
    "evaluate_codec",
    "evaluate_samples",
    "sample",
    "write_decoded",
    "write_samples",
]
