"""The published numbers of the study this lab rebuilds.

"Convolutional Neural Networks for Tiny ImageNet Classification" (CS231n report): SGD with
momentum 0.9, lr 0.1, batch 256, weight decay 1e-4, 5 epochs, mean-subtracted 64x64 inputs.
Top-1 accuracy in percent as (train, val, test); the report gives no SqueezeNet numbers.
"""

STUDY: dict[str, tuple[float, float, float] | None] = {
    "baseline": (65.40, 54.40, 43.04),
    "alexnet_reduced": (43.2, 43.65, 33.40),
    "vgg_reduced": (54.62, 45.88, 39.40),
    "inception": (76.03, 50.43, 49.40),
    "resnet20": (65.08, 54.40, 55.40),
    "squeezenet": None,
}

STUDY_MODELS = list(STUDY)
