"""Last-tap inflation: start a video model from a checkpoint of the same architecture trained on
images only (1-frame clips). It is the causal counterpart of inflating 2-D image kernels into
3-D ones at the central temporal tap (MAGVIT, Yu et al. 2023): here the tap a still frame meets
is the last one.

Time is zero-padded before the first frame, so a 1-frame clip meets only the last temporal tap
of every kernel: an image-only run trains those taps and leaves the earlier ones at their
initialization. Keeping the last taps and zeroing the earlier ones makes every temporal conv
look at the current frame alone, so the inflated model codes each frame of a clip as the image
model codes it (a static clip: every latent frame gets the image's codes), and video training
then learns the earlier taps from there. Everything else (spatial convs, norms, attention, the
quantizer) is copied as it is.
"""

from __future__ import annotations

import os

import torch

from mediatok.checkpoint import (
    EMA_NAME,
    MODEL_NAME,
    load_weights,
    read_checkpoint,
    resolve_checkpoint,
)
from mediatok.codecs.video.causal import CausalVideoTokenizer
from mediatok.codecs.video.layers import CausalConv3d


@torch.no_grad()
def inflate_from_image_checkpoint(
    model: CausalVideoTokenizer, checkpoint_path: str | os.PathLike, ema: bool = True
) -> CausalVideoTokenizer:
    """Initialize `model` in place from an image-only checkpoint of the same architecture,
    keeping each temporal kernel's last tap and zeroing the earlier ones.

    Args:
        model: the video model to initialize (any device; its config sets the architecture).
        checkpoint_path: a codec checkpoint directory of `causal_video` (`save_pretrained` or
            `mediatok train`), trained on 1-frame clips. A temporal kernel of size 1 there (a
            2-D model of the same names) fills the last tap too.
        ema: read the EMA weights when the checkpoint has them.

    Returns:
        `model`.

    Raises:
        FileNotFoundError: no checkpoint there, or no weights in it.
        ValueError: another kind of checkpoint or codec, or weights that do not fit the model.
    """
    checkpoint = read_checkpoint(checkpoint_path, kind="codec")
    name = checkpoint.run.get("codec")
    if name != model.name:
        raise ValueError(
            f"{checkpoint_path}: expected a {model.name!r} checkpoint to inflate, got codec "
            f"{name!r}"
        )
    directory = resolve_checkpoint(checkpoint_path)
    assert directory is not None, "read_checkpoint found it"
    path = directory / (EMA_NAME if ema and (directory / EMA_NAME).is_file() else MODEL_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: expected the codec's weights in {path.name}")
    source = load_weights(path)
    target = model.state_dict()
    temporal = {
        f"{module_name}.conv.weight"
        for module_name, module in model.named_modules()
        if isinstance(module, CausalConv3d) and module.time_kernel > 1
    }
    unfit = []
    for key, value in target.items():
        weight = source.get(key)
        if (
            key in temporal
            and weight is not None
            and weight.shape[:2] + weight.shape[3:] == (value.shape[:2] + value.shape[3:])
        ):
            inflated = torch.zeros_like(value)
            inflated[:, :, -1] = weight[:, :, -1]  # (C_out, C_in, k_t, k_h, k_w): the last tap
            source[key] = inflated
        elif weight is None or weight.shape != value.shape:
            got = "missing" if weight is None else f"shape {tuple(weight.shape)}"
            unfit.append(f"{key} (expected {tuple(value.shape)}, got {got})")
    unexpected = sorted(set(source) - set(target))
    if unfit or unexpected:
        raise ValueError(
            f"{path}: weights do not fit this {model.name} model (same architecture expected): "
            f"{', '.join(unfit[:5])}{'; unexpected ' if unexpected else ''}"
            f"{', '.join(unexpected[:5])}"
        )
    model.load_state_dict(source)
    return model
