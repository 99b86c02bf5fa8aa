"""A trained run on your own pictures: any JPEG or PNG in, the run's top-5 class names out."""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from lab import data
from lab.config import Config
from lab.errors import LabError
from lab.evaluate import load_checkpoint_model, predict


@dataclass(frozen=True)
class Predictor:
    """A run's model with what raw images need: the run's normalization and its class names."""

    model: nn.Module
    config: Config
    mean: torch.Tensor
    scale: torch.Tensor
    names: list[str]


def load_predictor(run_dir: str | Path) -> Predictor:
    """The model of a run's checkpoint on the CPU, its normalization and class names."""
    if not Path(run_dir).is_dir():
        raise LabError(f"{run_dir}: no such run folder")
    model, config = load_checkpoint_model(Path(run_dir), "cpu")
    cache = data.prepare(config.data or None, config.cache_dir or None, progress=False)
    # names from the data set's words.txt (kept in the cache), in the run's label order
    test = data.load_split(
        "test", cache_dir=cache, classes=config.classes, first_class=config.first_class
    )
    names = test.names
    mean, scale = data.normalizer(data.load_stats(cache), config.normalize)
    return Predictor(model, config, mean, scale, names)


# The first bytes of each format this takes.
SIGNATURES = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}


def decode(blob: bytes, name: str) -> np.ndarray:
    """A picture's bytes as a uint8 (64, 64, 3) RGB image; ValueError naming it if it is none."""
    kind = next((k for k, head in SIGNATURES.items() if blob.startswith(head)), None)
    if kind is None:
        raise LabError(f"{name}: not a JPEG or PNG image")
    try:
        # the decoder the data cache uses: grayscale, palette, CMYK and alpha all become RGB
        image = decode_image(
            torch.frombuffer(bytearray(blob), dtype=torch.uint8),
            mode=ImageReadMode.RGB,
            apply_exif_orientation=True,
        )
    except (RuntimeError, ValueError) as error:
        reason = re.sub(r"^.*?\.cpp:\d+, ", "", str(error).strip())  # torchvision's source line
        raise LabError(f"{name}: damaged {kind} ({reason})") from None
    image = TF.to_dtype(image, torch.uint8, scale=True)  # a 16-bit PNG: to 0..255
    # the shorter side to 64 px (antialiased), then the centre: no stretching, like the data's
    # undistorted 64x64 images
    image = TF.resize(image, [data.SIZE], antialias=True)
    image = TF.center_crop(image, [data.SIZE, data.SIZE])
    return image.permute(1, 2, 0).contiguous().numpy()


def read_image(path: str | Path) -> np.ndarray:
    """decode() of an image file, with errors naming the file."""
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise LabError(f"{path}: cannot read it ({error.strerror})") from None
    return decode(blob, str(path))


def top_classes(predictor: Predictor, images: np.ndarray, k: int = 5) -> list[pd.DataFrame]:
    """Per uint8 (N, 64, 64, 3) image: its k likeliest classes (label, name, probability)."""
    config = predictor.config
    logits = predict(
        predictor.model,
        torch.from_numpy(np.ascontiguousarray(images)),
        predictor.mean,
        predictor.scale,
        amp=False,
        tta_flip=config.tta_flip,  # the evaluation the run's own numbers came from
    )
    values, labels = logits.softmax(1).topk(min(k, logits.shape[1]), dim=1)
    return [
        pd.DataFrame(
            {
                "label": row.tolist(),
                "name": [predictor.names[i] for i in row.tolist()],
                "probability": probs.tolist(),
            }
        )
        for row, probs in zip(labels, values, strict=True)
    ]
