"""Attribution maps: shapes, signs and whether they point at the pixels the model reads."""

import numpy as np
import pytest
import torch
from torch import nn

from lab.explain import METHODS, attribute, check_methods, last_conv, overlay
from lab.models import build_model


class Quadrant(nn.Module):
    """Tiny conv net whose logits read only one 32x32 quadrant of a 64x64 input."""

    def __init__(self, row: int, col: int, classes: int = 4):
        super().__init__()
        mask = torch.zeros(1, 1, 64, 64)
        mask[..., 32 * row : 32 * row + 32, 32 * col : 32 * col + 32] = 1
        self.register_buffer("mask", mask)
        # no bias: activations outside the quadrant are exactly zero, so Grad-CAM can be tested
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x * self.mask)).mean((2, 3)))


@pytest.mark.parametrize("method", METHODS)
def test_registry_model_maps(method):
    torch.manual_seed(0)
    model = build_model("baseline", num_classes=4)
    images = torch.randn(2, 3, 64, 64)
    attr = attribute(model, images, torch.tensor([0, 3]), method)
    assert attr.shape == (2, 64, 64)
    assert torch.isfinite(attr).all()
    assert (attr >= 0).all()
    assert (attr.flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("quadrant", [(0, 1), (1, 0)])
def test_maps_concentrate_where_the_model_looks(method, quadrant):
    torch.manual_seed(0)
    model = Quadrant(*quadrant)
    images = torch.randn(3, 3, 64, 64)
    attr = attribute(model, images, 1, method)
    r, c = quadrant
    inside = attr[:, 32 * r : 32 * r + 32, 32 * c : 32 * c + 32].sum((1, 2))
    # occlusion windows straddling the border also see the quadrant, so allow some spill
    assert (inside / attr.sum((1, 2)) > 0.8).all()


def test_maps_depend_on_the_target():
    torch.manual_seed(0)
    model = Quadrant(0, 0)
    images = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(
        attribute(model, images, 0, "saliency"), attribute(model, images, 1, "saliency")
    )


def test_unknown_method_and_conv_free_model_fail_clearly():
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(Quadrant(0, 0), torch.zeros(1, 3, 64, 64), 0, "lime")
    assert check_methods(("gradcam", "saliency")) == ["gradcam", "saliency"]
    for methods in ([], ["saliency", "lime"]):
        with pytest.raises(ValueError, match="choose one or more of"):
            check_methods(methods)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)))


def test_overlay_is_an_rgb_image_that_shows_the_map():
    image = np.full((64, 64, 3), 128, np.uint8)
    attr = np.zeros((64, 64), np.float32)
    attr[:16, :16] = 1.0
    out = overlay(image, attr)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[:16, :16], out[32:, 32:])
    assert np.array_equal(overlay(image, np.zeros((64, 64)))[0, 0], overlay(image, attr)[63, 63])
