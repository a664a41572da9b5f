"""The modality table: one entry per modality, naming everything that differs between media.

Each entry (`Modality`) holds its files' reader and lister, how a batch of files is encoded,
how codes decode back to media of the source's length, the decoded-media writer and its
formats, the metrics of `mediatok eval`, and the `TokenSpec` geometry its codecs must record.
The pipelines, the CLI and training look a codec's entry up with `modality_of(codec)` instead
of branching on the modality.

Adding a modality (video, say) is one module here with a `Modality` subclass, one line in
`MODALITIES`, and its codec (`Codec.modality` naming the entry); its training task goes beside
the others in `mediatok.training.tasks`.

>>> from mediatok.modalities import MODALITIES
>>> sorted(MODALITIES)
['audio', 'image', 'video']

Layer 5.
"""

from __future__ import annotations

from mediatok.codecs import Codec
from mediatok.modalities.audio import AUDIO, AudioModality
from mediatok.modalities.base import (
    DecodeOptions,
    Encoded,
    EncodedBatch,
    EncodeOptions,
    EvalOptions,
    Modality,
    StopEvaluation,
)
from mediatok.modalities.image import IMAGE, ImageModality
from mediatok.modalities.video import VIDEO, VideoModality

MODALITIES: dict[str, Modality] = {entry.name: entry for entry in (IMAGE, AUDIO, VIDEO)}


def modality_of(codec: Codec) -> Modality:
    """The table's entry for `codec`'s modality, its spec's geometry checked.

    Raises:
        TypeError: `codec` is not a `Codec` (a generator, say).
        ValueError: a modality the table has no entry for, or a spec without the geometry the
            entry needs.
    """
    if not isinstance(codec, Codec):
        raise TypeError(f"expected a codec, got {type(codec).__name__}")
    entry = MODALITIES.get(codec.modality)
    if entry is None:
        known = ", ".join(sorted(MODALITIES))
        raise ValueError(
            f"{codec.name} codes {codec.modality}, which has no entry in the modality table "
            f"yet (known: {known})"
        )
    entry.geometry(codec.token_spec, codec.name)
    return entry


__all__ = [
    "AUDIO",
    "IMAGE",
    "MODALITIES",
    "VIDEO",
    "AudioModality",
    "DecodeOptions",
    "EncodeOptions",
    "Encoded",
    "EncodedBatch",
    "EvalOptions",
    "ImageModality",
    "Modality",
    "StopEvaluation",
    "VideoModality",
    "modality_of",
]
