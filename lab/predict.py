"""A trained run on your own pictures: any JPEG or PNG in, the run's top-5 class names out."""

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from torch import nn
from torchvision.transforms.v2 import functional as TF

from lab import data
from lab.config import Config
from lab.errors import LabError
from lab.evaluate import config_logits, load_checkpoint_model, top_labels


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


# The first bytes of each format this takes, and PIL's reader of it (which reads the header only
# until load()).
SIGNATURES = {"JPEG": b"\xff\xd8\xff", "PNG": b"\x89PNG\r\n\x1a\n"}
READERS = {"JPEG": JpegImageFile, "PNG": PngImageFile}
# A picture this decodes: a 12,000 x 4,000 photo, but not a small PNG that inflates to gigabytes.
# Beyond MAX_ASPECT the centre square the model sees is a sliver of the picture anyway.
MAX_PIXELS = 50_000_000
MAX_ASPECT = 20


def to_rgb(picture: Image.Image) -> np.ndarray:
    """A decoded picture of any mode as uint8 (H, W, 3) RGB, as the data cache's images are."""
    if picture.mode.startswith("I"):  # 16-bit grey: its top 8 bits (0..65535 to 0..255)
        grey = (np.asarray(picture).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    # grey, palette, CMYK and alpha (dropped, not blended) become RGB as in the data cache
    return np.array(picture.convert("RGB"))  # a writable copy: torch takes it as it is


def decode(blob: bytes, name: str) -> np.ndarray:
    """A picture's bytes as a uint8 (64, 64, 3) RGB image; ValueError naming it if it is none."""
    kind = next((k for k, head in SIGNATURES.items() if blob.startswith(head)), None)
    if kind is None:
        raise LabError(f"{name}: not a JPEG or PNG image")
    try:
        picture = READERS[kind](io.BytesIO(blob))  # the header: size and mode, nothing decoded
    except (OSError, SyntaxError, EOFError) as error:  # PIL's errors for a damaged header
        raise LabError(f"{name}: damaged {kind} ({error})") from None
    width, height = picture.size
    if width * height > MAX_PIXELS:
        raise LabError(
            f"{name}: {kind} of {width}x{height} pixels, over the limit of {MAX_PIXELS:,}"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise LabError(
            f"{name}: {kind} of {width}x{height} pixels, its long side over {MAX_ASPECT} times"
            " its short side"
        )
    try:
        picture = ImageOps.exif_transpose(picture)  # decodes it, turned as the camera was held
        image = torch.from_numpy(to_rgb(picture)).permute(2, 0, 1)
    except (OSError, SyntaxError, EOFError, ValueError) as error:  # a damaged image stream
        raise LabError(f"{name}: damaged {kind} ({error})") from None
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
    """Per uint8 (N, 64, 64, 3) image: its k likeliest classes (label, name, probability), the
    first being the class the run's own evaluation predicts (lab.evaluate.config_logits)."""
    images = torch.from_numpy(np.ascontiguousarray(images))
    logits = config_logits(
        predictor.model, predictor.config, images, predictor.mean, predictor.scale
    )
    labels = top_labels(logits, k)
    values = logits.softmax(1).gather(1, labels)
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
