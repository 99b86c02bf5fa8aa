"""`lab predict` and lab.predict: your own JPEGs and PNGs, any size or mode, through a run."""

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lab import data
from lab.cli import main
from lab.config import Config
from lab.evaluate import predict
from lab.predict import decode, load_predictor, read_image, top_classes
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


def test_a_data_set_image_gets_the_runs_own_prediction(run: Path, tiny_cache: Path) -> None:
    # a test image saved losslessly must score exactly as the run scores it in evaluation
    predictor = load_predictor(run)
    assert predictor.names == ["thing0", "thing1", "thing2", "thing3"]  # words.txt, first name
    test = data.load_split("test", cache_dir=tiny_cache)
    images = np.asarray(test.images[:6])
    blobs = [encoded(Image.fromarray(image), "PNG") for image in images]
    decoded = np.stack([decode(blob, "x.png") for blob in blobs])
    np.testing.assert_array_equal(decoded, images)
    stats = data.load_stats(cache_dir=tiny_cache)
    mean, scale = data.normalizer(stats, "channel")
    model = predictor.model
    logits = predict(model, torch.from_numpy(images), mean, scale, amp=False, tta_flip=True)
    tables = top_classes(predictor, decoded)
    for table, probs in zip(tables, logits.softmax(1), strict=True):
        assert list(table["label"]) == probs.argsort(descending=True)[:4].tolist()
        np.testing.assert_allclose(table["probability"], probs.sort(descending=True).values[:4])
        assert list(table["name"]) == [predictor.names[i] for i in table["label"]]


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
    from lab.explain import METHODS, explain_picture

    predictor = load_predictor(run)
    picture = Image.new("RGB", (300, 200), (230, 210, 40))
    image = decode(encoded(picture, "JPEG"), "yellow.jpg")
    top, maps = explain_picture(predictor, image, METHODS)
    assert top.equals(top_classes(predictor, image[None])[0])
    assert set(maps) == set(METHODS)
    for method, attribution in maps.items():
        assert attribution.shape == (64, 64), method
        assert np.isfinite(attribution).all() and (attribution >= 0).all(), method
