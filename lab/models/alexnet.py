"""Reduced AlexNet: the study's Table 2 layout, layer for layer.

Table 2 of the study: input 64x64x3; CONV1-64 (64x64x64) twice; pool/2 (32x32x64); batch norm;
CONV2-128 (32x32x128); pool/2 (16x16x128); batch norm; CONV3-256 twice (16x16x256);
pool/2 (8x8x256); flatten; FC1-1024; FC2-1024; output. The table leaves some details open, so:
convs are 3x3 with padding 1 and a bias (no BN directly after them, as in the table), ReLU
follows every conv and hidden FC layer, pools are 2x2 max pools, and dropout 0.5 precedes each
FC layer (AlexNet's own regulariser for its large FC layers). 19,031,048 parameters with 200
classes, almost all of them in FC1 (16384 x 1024).
"""

from torch import nn


def conv_relu(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv with padding 1 and bias, then ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


def alexnet_reduced(num_classes: int = 200) -> nn.Sequential:
    """Build the study's reduced AlexNet (Table 2) for 64x64x3 inputs."""
    return nn.Sequential(
        conv_relu(3, 64),
        conv_relu(64, 64),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(64),
        conv_relu(64, 128),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(128),
        conv_relu(128, 256),
        conv_relu(256, 256),
        nn.MaxPool2d(2),
        # identity at 64x64 input; lets other input sizes reach the same 8x8 flatten
        nn.AdaptiveAvgPool2d(8),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(256 * 8 * 8, 1024),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(1024, 1024),
        nn.ReLU(),
        nn.Linear(1024, num_classes),
    )
