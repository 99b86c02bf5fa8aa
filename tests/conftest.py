"""Shared fixtures: tiny official-layout archives of real JPEGs, the real archive, and a runs
root of short real runs for the dashboard tests."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from lab import data, runs
from lab.train import Config, fit

COLORS = np.array(
    [[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40], [200, 60, 200], [40, 210, 210]]
)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, one torch thread a worker and for the processes it starts (kernels,
    `lab` commands, torchrun): two threads a worker, a worker a core, stall one another. An
    empty torch hub cache of the tests' own, so that weights a user cached never change what a
    test sees."""
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="lab-tests-torch-home-")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# The modules that take longest (`pytest --durations=0`, summed by module: 42 to 76 s each), in
# the order that ran fastest: under --dist loadscope a module runs on one worker, and one of these
# started last would leave the other core idle at the end (pyproject.toml turns off xdist's
# reordering by test count).
LONGEST_FIRST = (
    "test_notebooks.py",
    "test_train.py",
    "test_results.py",
    "test_sweep.py",
    "test_browser.py",
    "test_integration.py",
    "test_damaged.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """LONGEST_FIRST's modules first, each module's tests in their own order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def tiny_image(label: int, seed: int) -> np.ndarray:
    """A 64x64 RGB uint8 image whose colour and stripe direction depend on its class."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64]
    # Classes differ in colour and in stripe angle and period, so a small CNN can tell them
    # apart even in grayscale; a random phase and noise make every image different.
    angle = np.pi * label / 5
    period = 6 + 2 * (label % 3)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    color = COLORS[label % len(COLORS)] * (0.6 + 0.4 * ((label // len(COLORS)) % 2))
    image = color * (0.65 + 0.35 * wave[..., None]) + rng.normal(0, 12, (64, 64, 3))
    return image.clip(0, 255).astype(np.uint8)


def write_archive(
    folder: Path,
    classes: int = 4,
    train_per_class: int = 60,
    val_per_class: int = 10,
    test_images: int = 8,
    grayscale_every: int = 7,
    zipped: bool = True,
) -> Path:
    """Write a tiny official-layout archive under folder; return the zip or the data root."""
    rng = np.random.default_rng(classes * 1000 + train_per_class)
    root = folder / "tiny-imagenet-200"
    wnids = [f"n{9000000 + c:08d}" for c in range(classes)]
    count = 0

    def save(path: Path, label: int) -> None:
        nonlocal count
        image = Image.fromarray(tiny_image(label, seed=count))
        if grayscale_every and count % grayscale_every == grayscale_every - 1:
            image = image.convert("L")
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, "JPEG", quality=90)
        count += 1

    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    words = ["n00000001\tentity"] + [f"{w}\tthing{c}, other name" for c, w in enumerate(wnids)]
    (root / "words.txt").write_text("\n".join(words) + "\n")
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", label)
        boxes = "".join(f"{wnid}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(train_per_class))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(boxes)
    # val files are numbered in a shuffled class order and annotated in another shuffled order,
    # so neither file order nor annotation order tells the class.
    val_labels = rng.permutation(np.repeat(np.arange(classes), val_per_class))
    for i, label in enumerate(val_labels):
        save(root / "val" / "images" / f"val_{i}.JPEG", int(label))
    lines = [f"val_{i}.JPEG\t{wnids[label]}\t0\t0\t63\t63\n" for i, label in enumerate(val_labels)]
    (root / "val" / "val_annotations.txt").write_text("".join(rng.permutation(lines)))
    for i in range(test_images):
        save(root / "test" / "images" / f"test_{i}.JPEG", int(rng.integers(classes)))
    if not zipped:
        return root
    archive = zip_folder(root, folder / "tiny-imagenet-200.zip")
    shutil.rmtree(root)
    return archive


def zip_folder(root: Path, archive: Path) -> Path:
    """Zip root (as the top folder) like the official archive: JPEGs stored, text deflated."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                jpeg = path.suffix == ".JPEG"
                method = zipfile.ZIP_STORED if jpeg else zipfile.ZIP_DEFLATED
                zf.write(path, path.relative_to(root.parent).as_posix(), method)
    return archive


def images_shown(book: nbformat.NotebookNode) -> int:
    """How many PNG outputs the executed notebook holds."""
    return sum(
        "image/png" in out.get("data", {})
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.fixture
def make_archive(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_archive(folder=None, classes=4, ...) -> zip, or data root if zipped=False."""
    made = 0

    def make(
        folder: Path | None = None,
        classes: int = 4,
        train_per_class: int = 60,
        val_per_class: int = 10,
        test_images: int = 8,
        grayscale_every: int = 7,
        zipped: bool = True,
    ) -> Path:
        nonlocal made
        made += 1
        folder = Path(folder) if folder else tmp_path / f"archive{made}"
        options = (classes, train_per_class, val_per_class, test_images, grayscale_every, zipped)
        return write_archive(folder, *options)

    return make


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zip with 4 classes, 60 train images a class (54 train + 6 val), 40 test, 8 challenge."""
    return write_archive(tmp_path_factory.mktemp("tiny_archive"))


@pytest.fixture(scope="session")
def tiny_cache(tiny_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache folder prepared from tiny_archive (shared: do not modify it)."""
    return data.prepare(tiny_archive, tmp_path_factory.mktemp("tiny_cache") / "cache", False)


@pytest.fixture(scope="session")
def tiny_config(tiny_archive: Path, tiny_cache: Path) -> Config:
    """A one-epoch baseline on tiny_archive, 24 images a class: give it a runs_root and a name."""
    return Config(
        model="baseline",
        epochs=1,
        batch_size=24,
        lr=0.05,
        per_class=24,
        data=str(tiny_archive),
        cache_dir=str(tiny_cache),
        quiet=True,
        train_eval_size=32,
    )


@pytest.fixture(scope="session")
def wait_for_an_epoch() -> Callable[[subprocess.Popen, Path, float], None]:
    """A function that waits until a training process has checkpointed its first epoch (or
    ended, or `timeout` seconds passed): the moment a kill -9 test kills it."""

    def wait(process: subprocess.Popen, run_dir: Path, timeout: float) -> None:
        summary, deadline = run_dir / "summary.json", time.time() + timeout
        while process.poll() is None and time.time() < deadline:
            if summary.exists() and runs.read_json(summary).get("epochs_done"):
                return  # epochs_done is written right after each checkpoint
            time.sleep(0.02)

    return wait


@pytest.fixture(scope="session")
def real_archive() -> Path:
    """The real archive from $TINY_IMAGENET, or skip."""
    path = os.environ.get("TINY_IMAGENET")
    if not path or not Path(path).exists():
        pytest.skip("set TINY_IMAGENET to the real tiny-imagenet-200.zip to run this")
    return Path(path)


@pytest.fixture(scope="session")
def real_cache(real_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real archive's cache, in $LAB_DATA_DIR/cache (kept between sessions) or a tmp folder."""
    folder = data.data_dir() if os.environ.get("LAB_DATA_DIR") else tmp_path_factory.mktemp("real")
    return data.prepare(real_archive, folder / "cache", progress=False)


@pytest.fixture(scope="session")
def dashboard_runs(tiny_archive: Path, tiny_cache: Path, tmp_path_factory) -> Path:
    """A runs root: three real short runs, a failed, a broken and two running ones."""
    root = tmp_path_factory.mktemp("dashboard_runs")
    make_runs(root, tiny_archive, tiny_cache)
    return root


def make_runs(root: Path, tiny_archive: Path, tiny_cache: Path) -> None:
    """Train the short runs under root and fake the failed, broken and running ones."""
    base = Config(
        model="baseline",
        epochs=2,
        batch_size=24,
        lr=0.05,
        per_class=24,  # a small train set keeps the two runs to seconds
        data=str(tiny_archive),
        cache_dir=str(tiny_cache),
        runs_root=str(root),
        quiet=True,
        train_eval_size=64,
    )
    fit(replace(base, name="base-2ep"))
    fit(replace(base, name="squeeze-1ep", model="squeezenet", epochs=1))
    fit(replace(base, name="last-two", epochs=1, classes=2, first_class=2))
    with pytest.raises(Exception, match="missing"):  # the record exists, then loading fails
        fit(replace(base, name="failed", data=str(root / "missing.zip")))
    broken = root / "broken"
    shutil.copytree(root / "base-2ep", broken)
    (broken / "summary.json").write_text('{"status": "finished", "test_top1": ')
    running = root / "running"
    shutil.copytree(root / "base-2ep", running)
    summary = json.loads((running / "summary.json").read_text())
    summary.update(status="running", epochs_done=1, epochs=3)
    for key in ("test_top1", "test_top5", "train_top1", "train_top5"):
        summary.pop(key)
    (running / "summary.json").write_text(json.dumps(summary))
    for name in ("per_class.csv", "confusion.npy", "predictions.csv"):
        (running / name).unlink()
    starting = root / "starting"  # no epoch finished yet: no epochs_done, metrics or checkpoint
    starting.mkdir()
    shutil.copy(root / "base-2ep" / "config.json", starting)
    (starting / "summary.json").write_text(json.dumps({"status": "running", "epochs": 2}))
