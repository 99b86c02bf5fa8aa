"""Residual networks: the study's ResNet-20, He et al.'s CIFAR ResNet-20, and a ResNet-18.

- resnet20: the study's figure. 7x7 conv 64 stride 2, 3x3 max pool stride 2 (64 -> 32 -> 16
  pixels), then three stages of two bottleneck blocks (1x1 w, 3x3 w, 1x1 4w) with w = 64, 128,
  256 (16 -> 8 -> 4 pixels), global average pool, fc. 1 + 6 x 3 + 1 = 20 weighted layers.
  The figure leaves these open, filled as in torchvision's ResNet v1.5: BN after every conv,
  stride on the 3x3 conv, and a 1x1 conv + BN projection shortcut where the shape changes
  (He et al.'s option B; not counted as a layer, as in the paper).
- resnet20_cifar: He et al. 2015 ("Deep Residual Learning", section 4.2), the CIFAR-10 ResNet-20:
  3x3 conv 16 stride 1, three stages of three basic blocks with 16, 32, 64 channels (64 -> 32
  -> 16 pixels here), global average pool, fc. Shortcuts use the paper's option A for CIFAR:
  stride-2 subsampling and zero-padded extra channels, no parameters (0.27M as in the paper).
- resnet18: He et al.'s ResNet-18 laid out as torchvision's resnet18 (basic blocks [2, 2, 2, 2],
  64-512 channels, projection shortcuts), with the usual small-image stem: 3x3 conv stride 1
  and no max pool, so the four stages run at 64, 32, 16 and 8 pixels. Our own BasicBlock:
  torchvision's reuses one in-place ReLU twice per block, which breaks Captum.
- resnet18_cpu: the same ResNet-18 with torchvision's own ImageNet stem (7x7 conv stride 2, 3x3
  max pool stride 2), so the stages run at 16, 8, 4 and 2 pixels: 148M MACs at 64x64, about
  resnet20's cost with three times its parameters, for training on a CPU.
- resnet18_s2: the ResNet-18 pattern (basic blocks [2, 2, 2, 2]) at a quarter of its widths
  (32-256) with a 3x3 stride-2 stem and no max pool, so its first stage runs at 32x32 (32, 16,
  8 and 4 pixels) for about resnet20's multiply-adds: the from-scratch Tiny ImageNet results
  above 60% keep the first stage at 32 or 64 px, where resnet18_cpu's is at 16.

Weights are initialised as torchvision does (Kaiming normal, fan_out, for convs).
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from lab.models.layers import conv_bn_relu


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand to 4x width; projection if needed."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = projection(cin, cout, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride) plus a shortcut; one ReLU module per use."""

    def __init__(self, cin: int, cout: int, stride: int = 1, zero_pad: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        changes = stride != 1 or cin != cout
        if zero_pad and changes:
            self.shortcut = ZeroPadShortcut(cout - cin, stride)
        else:
            self.shortcut = projection(cin, cout, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ZeroPadShortcut(nn.Module):
    """He et al.'s option A shortcut: subsample by the stride, zero-pad the extra channels."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def projection(cin: int, cout: int, stride: int) -> nn.Module:
    """Option B shortcut: 1x1 conv + BN where the shape changes, identity elsewhere."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def head(channels: int, num_classes: int) -> list[tuple[str, nn.Module]]:
    """Global average pool, flatten, linear classifier."""
    return [
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()),
        ("fc", nn.Linear(channels, num_classes)),
    ]


def init_weights(model: nn.Module) -> nn.Module:
    """Kaiming normal (fan_out) convs and unit BN, as torchvision's ResNet."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def zero_residual_bns(model: nn.Module) -> int:
    """Zero the last BN's scale in each residual block, so every block starts as its shortcut
    (Goyal et al. 2017); returns how many blocks there were."""
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    for block in blocks:
        nn.init.zeros_(block.bn3.weight if isinstance(block, Bottleneck) else block.bn2.weight)
    return len(blocks)


def resnet20(num_classes: int = 200) -> nn.Sequential:
    """Build the study's bottleneck ResNet-20 (about 3.6M parameters with 200 classes)."""
    layers = [("stem", imagenet_stem(64))]
    cin = 64
    for i, (width, stride) in enumerate([(64, 1), (128, 2), (256, 2)], start=1):
        blocks = [Bottleneck(cin, width, stride), Bottleneck(4 * width, width)]
        layers.append((f"layer{i}", nn.Sequential(*blocks)))
        cin = 4 * width
    return init_weights(nn.Sequential(OrderedDict(layers + head(cin, num_classes))))


def imagenet_stem(channels: int) -> nn.Sequential:
    """ImageNet ResNets' stem: 7x7 conv stride 2, BN, ReLU, 3x3 max pool stride 2 (1/4 side)."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 7, 2, 3, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    )


def basic_resnet(
    stem: nn.Module,
    stem_channels: int,
    stages: list[tuple[int, int]],
    blocks: int,
    zero_pad: bool,
    num_classes: int,
) -> nn.Sequential:
    """The stem, then stages of `blocks` basic blocks given as (channels, stride)."""
    layers = [("stem", stem)]
    cin = stem_channels
    for i, (cout, stride) in enumerate(stages, start=1):
        stage = [BasicBlock(cin, cout, stride, zero_pad)]
        stage += [BasicBlock(cout, cout, 1, zero_pad) for _ in range(blocks - 1)]
        layers.append((f"layer{i}", nn.Sequential(*stage)))
        cin = cout
    return init_weights(nn.Sequential(OrderedDict(layers + head(cin, num_classes))))


def resnet20_cifar(num_classes: int = 200) -> nn.Sequential:
    """Build He et al.'s CIFAR ResNet-20 (option A shortcuts, 0.28M parameters at 200 classes)."""
    stages = [(16, 1), (32, 2), (64, 2)]
    return basic_resnet(conv_bn_relu(3, 16), 16, stages, 3, True, num_classes)


RESNET18_STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


def resnet18(num_classes: int = 200) -> nn.Sequential:
    """Build ResNet-18 with a 64x64 stem (3x3 stride 1, no max pool)."""
    return basic_resnet(conv_bn_relu(3, 64), 64, RESNET18_STAGES, 2, False, num_classes)


def resnet18_cpu(num_classes: int = 200) -> nn.Sequential:
    """Build ResNet-18 with ImageNet's stem (7x7 stride 2, max pool): 1/15 of resnet18's MACs."""
    return basic_resnet(imagenet_stem(64), 64, RESNET18_STAGES, 2, False, num_classes)


def resnet18_s2(num_classes: int = 200) -> nn.Sequential:
    """Build a quarter-width ResNet-18 with a 3x3 stride-2 stem (a 32x32 first stage)."""
    stages = [(32, 1), (64, 2), (128, 2), (256, 2)]
    return basic_resnet(conv_bn_relu(3, 32, stride=2), 32, stages, 2, False, num_classes)
