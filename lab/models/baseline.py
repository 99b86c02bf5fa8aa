"""Baseline: a plain small ConvNet in the CS231n style (our layout; the study gives none).

The study reports a "baseline" model without describing it, so this is a choice: the classic
CS231n assignment pattern [conv3x3-BN-ReLU-maxpool] x 3 with 32, 64, 128 channels
(64 -> 32 -> 16 -> 8 pixels), then flatten, FC-256-BN-ReLU and FC-num_classes, with dropout before
each FC layer. About 2.2M parameters and 43M MACs at 64x64: cheap enough for a laptop CPU.
"""

from torch import nn

from lab.models.layers import conv_bn_relu


def baseline(num_classes: int = 200) -> nn.Sequential:
    """Build the baseline ConvNet for 64x64x3 inputs."""
    return nn.Sequential(
        conv_bn_relu(3, 32),
        nn.MaxPool2d(2),
        conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        conv_bn_relu(64, 128),
        nn.MaxPool2d(2),
        # identity at 64x64 input; lets other input sizes reach the same 8x8 flatten
        nn.AdaptiveAvgPool2d(8),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(128 * 8 * 8, 256, bias=False),
        nn.BatchNorm1d(256),  # without it the FC layer's units die at the study's lr 0.1
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(256, num_classes),
    )
