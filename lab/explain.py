"""Captum attribution maps of trained runs (imports captum; the training path never does)."""

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from matplotlib import colormaps
from torch import nn

from lab.errors import LabError
from lab.predict import Predictor, top_classes

METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "occlusion")


def check_methods(methods: Sequence[str]) -> list[str]:
    """The attribution methods as a list, each checked against METHODS (at least one)."""
    if not methods or any(m not in METHODS for m in methods):
        raise LabError(f"methods {list(methods)}: choose one or more of {METHODS}")
    return list(methods)


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last nn.Conv2d in model.modules(): the Grad-CAM layer."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise LabError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM")
    return convs[-1]


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor | int,
    method: str,
    *,
    steps: int = 32,
    samples: int = 16,
    window: int = 8,
    chunk: int = 64,
) -> torch.Tensor:
    """Non-negative (N, H, W) attribution map of `target` for a normalized NCHW batch."""
    if method not in METHODS:
        raise LabError(f"unknown attribution method {method!r}; choose from {METHODS}")
    model.eval()
    n, c, h, w = images.shape
    target = torch.as_tensor(target, dtype=torch.long, device=images.device).expand(n)
    images = images.detach().requires_grad_()  # what captum would do, without its warning
    if method == "saliency":
        attr = Saliency(model).attribute(images, target=target, abs=True)
    elif method == "smoothgrad":
        # noise at 15% of the input range, the middle of the SmoothGrad paper's 10-20%
        sigma = 0.15 * float(images.detach().max() - images.detach().min())
        attr = NoiseTunnel(Saliency(model)).attribute(
            images,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=max(1, chunk // n),
            stdevs=sigma,
            target=target,
            abs=True,
        )
    elif method == "integrated_gradients":
        # baseline 0 is the train mean once normalized: the mean image with normalize=pixel, a
        # flat image of the mean colour with normalize=channel; the path starts from "no
        # information"
        attr = (
            IntegratedGradients(model)
            .attribute(images, target=target, n_steps=steps, internal_batch_size=chunk)
            .abs()
        )
    elif method == "gradcam":
        cam = LayerGradCam(model, last_conv(model)).attribute(
            images, target=target, relu_attributions=True
        )
        return LayerAttribution.interpolate(cam, (h, w), "bilinear")[:, 0].clamp(min=0).detach()
    else:
        # the window covers all channels, so every channel holds the same score: keep one;
        # magnitude of the change, like the gradient methods (a rise is evidence too); a window
        # is replaced by 0, the same baseline as integrated_gradients
        attr = Occlusion(model).attribute(
            images,
            sliding_window_shapes=(c, window, window),
            strides=(c, window // 2, window // 2),
            baselines=0.0,
            target=target,
            perturbations_per_eval=chunk,
        )
        return attr[:, 0].abs().detach()
    return attr.sum(1).detach()


def inputs(images: np.ndarray, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Float NCHW batch from uint8 (N, 64, 64, 3) images, normalized as in training."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (x - mean.cpu()) / scale.cpu()


def overlay(image: np.ndarray, attr: np.ndarray | torch.Tensor, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 blend of a uint8 HWC image with a heat map of a non-negative (H, W) map."""
    attr = np.asarray(attr, dtype=np.float32)
    # scale by the 99th percentile so a few extreme pixels do not wash out the rest
    top = np.percentile(attr, 99)
    heat = np.clip(attr / top, 0, 1) if top > 0 else np.zeros_like(attr)
    colours = colormaps["inferno"](heat)[..., :3] * 255
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    return blended.round().astype(np.uint8)


def explain_picture(
    predictor: Predictor, image: np.ndarray, methods: list[str] | tuple[str, ...]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A run's top-5 for one uint8 (64, 64, 3) picture (lab.predict.decode) and, per method,
    the (64, 64) map of its top-1 class."""
    top = top_classes(predictor, image[None])[0]
    x = inputs(image[None], predictor.mean, predictor.scale)
    target = int(top["label"].iloc[0])
    maps = {method: attribute(predictor.model, x, target, method)[0].numpy() for method in methods}
    return top, maps
