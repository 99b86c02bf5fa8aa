"""`lab predict` and lab.predict: your own JPEGs and PNGs, any size or mode, through a run."""

import io
import json
import struct
import warnings
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lab import data
from lab.cli import main
from lab.config import Config
from lab.predict import decode, load_predictor, read_image
from lab.train import fit


@pytest.fixture(scope="module")
def run(tiny_config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run on the tiny archive, channel-normalized, with flip averaging."""
    root = str(tmp_path_factory.mktemp("predict_runs"))
    config = replace(tiny_config, normalize="channel", tta_flip=True, runs_root=root)
    return fit(replace(config, name="tiny"))


def encoded(image: Image.Image, fmt: str) -> bytes:
    """An image as the bytes of a file of that format."""
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_any_png_mode_becomes_64x64_rgb(mode: str) -> None:
    picture = Image.new("RGB", (150, 100), (200, 30, 30)).convert(mode)
    image = decode(encoded(picture, "PNG"), "red.png")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    if mode in ("RGB", "RGBA", "P"):  # P: PIL's palette dithers the red, so compare means
        colour = np.asarray(picture.convert("RGB")).mean((0, 1))
        assert np.abs(image.mean((0, 1)) - colour).max() < 3
    else:  # one channel: grey, the same in R, G and B as the data pipeline decodes it
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_wide_picture_is_cropped_not_squashed(fmt: str) -> None:
    # blue bands left and right of a green square: the centred square is what the model sees
    picture = np.zeros((120, 360, 3), np.uint8)
    picture[:, :, 2] = 220
    picture[:, 120:240] = (30, 200, 30)
    image = decode(encoded(Image.fromarray(picture), fmt), f"wide.{fmt}")
    assert np.abs(image[4:-4, 4:-4].astype(int) - [30, 200, 30]).max() < 20


def test_files_that_are_not_images_are_named(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    with pytest.raises(ValueError, match=r"notes\.txt: not a JPEG or PNG image"):
        read_image(notes)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(encoded(Image.new("RGB", (80, 80), "white"), "JPEG")[:200])
    with pytest.raises(ValueError, match=r"cut\.jpg: damaged JPEG"):
        read_image(cut)
    with pytest.raises(ValueError, match=r"missing\.png: cannot read it"):
        read_image(tmp_path / "missing.png")


def test_lab_predict_gives_a_test_image_the_class_in_predictions_csv(
    run: Path, tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # test images saved losslessly: `lab predict` must rank the classes as the run's own
    # evaluation did (the run's precision and flip averaging, top-k's first as the class)
    assert load_predictor(run).names == ["thing0", "thing1", "thing2", "thing3"]  # words.txt
    test = data.load_split("test", cache_dir=tiny_cache)
    paths = [tmp_path / f"{file}.png" for file in test.files]
    for path, image in zip(paths, test.images, strict=True):
        Image.fromarray(np.asarray(image)).save(path)
    np.testing.assert_array_equal(np.stack([read_image(p) for p in paths]), test.images)
    assert main(["predict", str(run), *map(str, paths), "--json"]) == 0
    evaluated = pd.read_csv(run / "predictions.csv").set_index("file")
    results = json.loads(capsys.readouterr().out)
    for file, result in zip(test.files, results, strict=True):
        labels = [row["label"] for row in result["top5"]]
        assert labels[0] == evaluated.loc[file, "pred"], file
        assert labels == [int(label) for label in evaluated.loc[file, "top5"].split()], file
        confidence = result["top5"][0]["probability"]
        assert confidence == pytest.approx(evaluated.loc[file, "confidence"], abs=1e-4), file


def test_cli_predicts_each_file_and_names_the_bad_one(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    big = tmp_path / "big.jpg"
    Image.new("RGB", (640, 480), (40, 200, 60)).save(big)
    gray = tmp_path / "gray.png"
    Image.new("L", (30, 50), 128).save(gray)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["predict", str(run), str(big), str(notes), str(gray)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"lab predict: error: {notes}: not a JPEG or PNG image"
    blocks = captured.out.split(str(gray))
    assert blocks[0].startswith(str(big)) and blocks[0].count("thing") == 4  # 4 classes: top-4
    assert blocks[1].count("thing") == 4

    assert main(["predict", str(run), str(big), str(gray), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(big), str(gray)]
    for result in results:
        probabilities = [row["probability"] for row in result["top5"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert {row["name"] for row in result["top5"]} == {f"thing{i}" for i in range(4)}

    assert main(["predict", str(run), str(notes), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)[0]["error"].endswith("not a JPEG or PNG image")


def test_explain_picture_gives_the_top5_and_a_map_a_method(run: Path) -> None:
    # what the dashboard's "Your image" page shows for an upload
    from lab.explain import METHODS, explain_picture, inputs

    predictor = load_predictor(run)
    picture = Image.new("RGB", (300, 200), (230, 210, 40))
    image = decode(encoded(picture, "JPEG"), "yellow.jpg")
    top, maps = explain_picture(predictor, image, METHODS)
    assert list(top["probability"]) == sorted(top["probability"], reverse=True)
    assert list(top["name"]) == [predictor.names[label] for label in top["label"]]
    # the maps explain the top class: its saliency map is the gradient of that class's logit
    x = inputs(image[None], predictor.mean, predictor.scale).requires_grad_()
    predictor.model(x)[0, int(top["label"].iloc[0])].backward()
    np.testing.assert_allclose(maps["saliency"], x.grad.abs().sum(1)[0], rtol=1e-5, atol=1e-8)
    assert set(maps) == set(METHODS)
    for method, attribution in maps.items():
        assert attribution.shape == (64, 64), method
        assert np.isfinite(attribution).all() and (attribution >= 0).all(), method


def png_of_size(width: int, height: int) -> bytes:
    """A PNG whose header says width x height, with a few rows of its zero pixels: kilobytes
    that would inflate to width * height * 3 bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = zlib.compress(bytes((1 + 3 * width) * 4), 9)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def test_pictures_over_the_pixel_or_aspect_limit_are_refused_by_their_header(
    tmp_path: Path,
) -> None:
    tall = tmp_path / "tall.png"
    tall.write_bytes(encoded(Image.new("L", (1, 4000)), "PNG"))
    assert tall.stat().st_size < 200  # once 64x256000 RGB on the way to 64x64
    with pytest.raises(ValueError, match=rf"^{tall}: PNG of 1x4000 pixels, its long side over"):
        read_image(tall)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_of_size(100_000, 80_000))  # 24 GB decoded
    assert huge.stat().st_size < 2_000
    with pytest.raises(ValueError, match=rf"^{huge}: PNG of 100000x80000 pixels, over the limit"):
        read_image(huge)
    wide = encoded(Image.new("RGB", (400, 20), (10, 200, 10)), "JPEG")  # 20:1 is still taken
    assert decode(wide, "wide.jpg").shape == (64, 64, 3)


def test_decoding_is_pil_with_exif_orientation_and_no_deprecation_warning() -> None:
    # red left half, blue right; EXIF orientation 6: the camera was turned, shown rotated 90°
    picture = Image.new("RGB", (128, 64), (0, 0, 250))
    picture.paste((250, 0, 0), (0, 0, 64, 64))
    exif = Image.Exif()
    exif[0x0112] = 6
    blob = encoded(picture, "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchvision.io's decoders warn since 0.29
        unturned = decode(blob, "plain.png")
        out = io.BytesIO()
        picture.save(out, "JPEG", exif=exif.tobytes(), quality=95)
        turned = decode(out.getvalue(), "turned.jpg")
    assert unturned[32, 16, 0] > 200 and unturned[32, 48, 2] > 200  # red left, blue right
    assert turned[16, 32, 0] > 200 and turned[48, 32, 2] > 200  # red on top, blue below
    # a 16-bit grey PNG: its top 8 bits, the same in R, G and B
    grey = decode(encoded(Image.fromarray(np.full((70, 90), 0xC8FF, np.uint16)), "PNG"), "g.png")
    assert (grey == 0xC8).all()
