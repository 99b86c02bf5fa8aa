"""Inception: torchvision's GoogLeNet (Inception v1, Szegedy et al. 2014), scratch or transfer.

The study fine-tunes an ImageNet-pretrained Inception; we use torchvision's GoogLeNet with its
IMAGENET1K_V1 weights (GoogLeNet_Weights), from the `weights` file if given, else from the torch
hub cache ($TORCH_HOME/hub/checkpoints), where torchvision's weights API downloads them when they
are missing (hash checked against the file name, written to a temporary name and renamed, so a
partial download never looks complete). `lab weights` tells whether they are cached and fetches
them ahead of a sweep.
As torchvision's googlenet() builder does for pretrained weights, the file's auxiliary heads are
dropped (aux_logits=False) and the input is transformed as by transform_input=True (the weights
expect Google's (x - 0.5) / 0.5 input; this maps ImageNet-normalised input to that). That
transform is our InputTransform module, whose scale and shift are buffers: they travel in the
state dict, so a checkpoint reloaded into a model built without pretrained=True computes the
same function (GoogLeNet's own transform_input flag is not saved). The 1000-class fc is then
replaced by a fresh num_classes Linear. From scratch: identity transform and torchvision's init
(init_weights=True). The network is torchvision's, except BasicConv2d: its in-place functional
ReLU is replaced by one nn.ReLU module per conv (Captum needs that); the state dict keys are
unchanged. `input_size` other than 64 upsamples the input bilinearly inside the model (e.g.
224, the size the ImageNet weights were trained at).
"""

import hashlib
from collections import OrderedDict
from functools import partial
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from lab.errors import LabError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


class BasicConv2d(nn.Module):
    """torchvision's GoogLeNet conv block with an nn.ReLU module instead of in-place F.relu."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class InputTransform(nn.Module):
    """Per-channel x * scale + shift with saved buffers (GoogLeNet's transform_input)."""

    def __init__(self, imagenet: bool) -> None:
        super().__init__()
        # torchvision's _transform_input: undo ImageNet mean/std, apply (x - 0.5) / 0.5
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        scale, shift = (
            (std / 0.5, (mean - 0.5) / 0.5) if imagenet else (torch.ones(3), torch.zeros(3))
        )
        self.register_buffer("scale", scale.view(1, 3, 1, 1))
        self.register_buffer("shift", shift.view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def imagenet_weights() -> "WeightsEnum":
    """torchvision's GoogLeNet_Weights.IMAGENET1K_V1: its url names the file and its hash."""
    from torchvision.models import GoogLeNet_Weights  # see inception()

    return GoogLeNet_Weights.IMAGENET1K_V1


def hub_weights_file() -> Path:
    """Where torch.hub caches GoogLeNet_Weights.IMAGENET1K_V1 (honours $TORCH_HOME)."""
    name = Path(urlparse(imagenet_weights().url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def download_weights(progress: bool = True) -> Path:
    """The hub cache file of the ImageNet weights, downloaded there first if it is missing."""
    cached, url = hub_weights_file(), imagenet_weights().url
    if cached.is_file():
        return cached
    try:
        # torchvision's own way: torch.hub downloads to a temporary file, checks the sha256
        # prefix that the file name carries, then renames; a failed download leaves nothing
        imagenet_weights().get_state_dict(
            progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except (OSError, HTTPException, RuntimeError) as e:  # offline, refused, cut short, bad hash
        reason = getattr(e, "reason", None) or e  # URLError wraps the socket's error
        raise LabError(
            f"GoogLeNet ImageNet weights: downloading {url} failed ({reason}); nothing was"
            f" cached. Without internet, copy that file to {cached} or pass --weights FILE."
        ) from None
    return cached


def weights_status() -> str:
    """One line: whether the ImageNet weights are in the hub cache and their hash matches."""
    cached, url = hub_weights_file(), imagenet_weights().url
    if not cached.is_file():
        return (
            f"GoogLeNet ImageNet weights: not cached ({cached}); `lab weights --download` fetches"
            f" {url}, or copy that file there by hand"
        )
    expected = torch.hub.HASH_REGEX.search(cached.name).group(1)
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        return (
            f"GoogLeNet ImageNet weights: {cached} is damaged (sha256 {digest[:8]}, its name"
            f" says {expected}): delete it and run `lab weights --download`"
        )
    return f"GoogLeNet ImageNet weights: cached, hash checked ({cached})"


def load_imagenet_state(weights: str | Path | None) -> dict[str, torch.Tensor]:
    """The 1000-class GoogLeNet state dict (`weights`, else the hub cache), without aux heads."""
    if weights and not Path(weights).is_file():
        raise LabError(
            f"GoogLeNet ImageNet weights not found: weights={str(weights)!r} (option `weights`,"
            f" file missing); without it, the torch hub cache {hub_weights_file()} is used"
            " (downloaded there if missing)"
        )
    path = Path(weights) if weights else download_weights()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LabError(f"{path}: not a readable PyTorch state dict ({e})") from e
    if not isinstance(state, dict):
        raise LabError(f"{path}: expected a state dict, found {type(state).__name__}")
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}


def inception(
    num_classes: int = 200,
    pretrained: bool = False,
    weights: str | None = None,
    input_size: int = 64,
) -> nn.Sequential:
    """Build GoogLeNet, optionally from its ImageNet weights, with a num_classes head."""
    # Imported here: torchvision's import costs about 2 s, which every process that builds
    # only our own models would pay (every `lab` command and notebook kernel imports the
    # registry).
    from torchvision.models import GoogLeNet
    from torchvision.models.googlenet import Inception, InceptionAux

    if weights and not pretrained:
        raise LabError(f"inception: weights={weights!r} given but pretrained=False")
    if input_size < 32:
        raise LabError(f"inception: input_size must be at least 32, got {input_size}")
    net = GoogLeNet(
        num_classes=1000 if pretrained else num_classes,
        aux_logits=False,
        transform_input=False,  # done by InputTransform, whose buffers are saved
        init_weights=not pretrained,
        blocks=[BasicConv2d, partial(Inception, conv_block=BasicConv2d), InceptionAux],
    )
    if pretrained:
        path = weights or hub_weights_file()
        try:
            net.load_state_dict(load_imagenet_state(weights))
        except RuntimeError as e:
            raise LabError(f"{path}: not torchvision GoogLeNet IMAGENET1K_V1 weights ({e})") from e
        net.fc = nn.Linear(net.fc.in_features, num_classes)
    resize = nn.Identity()
    if input_size != 64:
        resize = nn.Upsample(size=(input_size, input_size), mode="bilinear", align_corners=False)
    return nn.Sequential(OrderedDict(transform=InputTransform(pretrained), resize=resize, net=net))
