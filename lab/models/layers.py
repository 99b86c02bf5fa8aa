"""Small building blocks shared by the model families."""

from torch import nn


def conv_bn_relu(cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: BN follows) -> BatchNorm -> ReLU, with "same" padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )
