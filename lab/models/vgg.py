"""Reduced VGG: VGG-11 (configuration A, Simonyan & Zisserman 2014) narrowed and shortened.

The study trains a "reduced VGG" without giving its layout, so this is our sizing for 64x64:
VGG-11's pattern of one conv in the first two stages and two 3x3 convs in the later ones, at
half VGG's widths and with four stages instead of five (64 -> 32 -> 16 -> 8 -> 4 pixels):
[32] M [64] M [128 128] M [256 256] M. BatchNorm after every conv (as in torchvision's vgg11_bn)
so it trains from scratch at lr 0.1; the classifier keeps VGG's two hidden FC layers with
dropout, at 512 units. About 3.6M parameters and 138M MACs at 64x64.
"""

from torch import nn

from lab.models.layers import conv_bn_relu


def vgg_reduced(num_classes: int = 200) -> nn.Sequential:
    """Build the reduced VGG for 64x64x3 inputs."""
    return nn.Sequential(
        conv_bn_relu(3, 32),
        nn.MaxPool2d(2),
        conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        conv_bn_relu(64, 128),
        conv_bn_relu(128, 128),
        nn.MaxPool2d(2),
        conv_bn_relu(128, 256),
        conv_bn_relu(256, 256),
        nn.MaxPool2d(2),
        # identity at 64x64 input; lets other input sizes reach the same 4x4 flatten
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(256 * 4 * 4, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )
