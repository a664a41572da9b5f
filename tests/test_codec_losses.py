"""The codec objective's parts: pixel, perceptual (weights from a path), hinge and LeCam."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mediatok.training.tasks import ImageLossConfig
from mediatok.training.tasks.adversarial import (
    LeCam,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from mediatok.training.tasks.image_losses import (
    PatchDiscriminator,
    PerceptualLoss,
    reconstruction_loss,
)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5
    assert hinge_discriminator_loss(real, fake).item() == pytest.approx(0.75)
    assert hinge_generator_loss(fake).item() == pytest.approx(1.0)


def test_lecam_tracks_averages_and_penalizes_the_gap():
    lecam = LeCam(decay=0.0)  # the averages become this step's means
    value = lecam(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -1.0]))
    assert lecam.real_average.item() == 2.0 and lecam.fake_average.item() == -1.0
    # mean((real - (-1))^2) + mean((fake - 2)^2) = (4 + 16) / 2 + 9 = 19
    assert value.item() == pytest.approx(19.0)


def test_patch_discriminator_shape():
    logits = PatchDiscriminator(channels=8, layers=2)(torch.randn(2, 3, 32, 32))
    assert logits.shape[:2] == (2, 1) and logits.ndim == 4


def test_reconstruction_loss_names_only_weighted_terms():
    a, b = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert set(reconstruction_loss(a, b, 1.0, 0.0)) == {"l1"}
    losses = reconstruction_loss(a, b, 0.5, 2.0)
    assert losses["l1"].item() == 0.5 and losses["l2"].item() == 2.0


def test_perceptual_loss_loads_vgg_weights_from_a_path(tmp_path):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    features = vgg16(weights=None).features[:30]
    path = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, path)
    loss = PerceptualLoss(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(x, -x).item() > 0
    assert not any(p.requires_grad for p in loss.parameters())


def test_perceptual_loss_needs_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="no VGG16 weights"):
        PerceptualLoss(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="perceptual_weights"):
        ImageLossConfig(perceptual_weight=1.0)
