"""Data pipeline speed on the real archive: JPEG decoders on one core (the lab's PIL against
torchvision.io, deprecated since torchvision 0.29, and TorchCodec where installed), the
decode-once cache build, and batch throughput of `lab.data.batches` (crop+flip or
random-resized crops, on CPU) against torchvision ImageFolder + the same PIL transforms +
DataLoader(num_workers=2), on the same classes.

    python benchmarks/data.py --data ZIP [--decoders-only] [--augment rrc]
"""

import argparse
import importlib.util
import os
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from lab import data
from lab.device import cpu_info

CROP_SCALE = 0.35  # rrc's smallest crop, as the ablation in RESULTS.md trains with


def timed(run: Callable[[], int]) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds of this process and its finished children) of run()."""
    before, start = os.times(), time.perf_counter()
    images = run()
    wall, after = time.perf_counter() - start, os.times()
    return images, wall, sum(after[:4]) - sum(before[:4])  # user + system, self + children


def decoders(source: Path, count: int) -> dict[str, Callable[[], np.ndarray]]:
    """Each decoder as a function that decodes the same `count` train JPEGs of the zip."""
    with zipfile.ZipFile(source) as zf:
        names = [n for n in zf.namelist() if "/train/" in n and n.endswith(".JPEG")]
        names = names[:: max(1, len(names) // count)][:count]  # every class, not just the first
        blobs = [zf.read(n) for n in names]
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]

    def torchvision_io() -> np.ndarray:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():  # its deprecation warning, once a call
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.stack(decode_jpeg(tensors, mode=ImageReadMode.RGB)).permute(0, 2, 3, 1)

    found = {
        "PIL (lab.data)": lambda: data._decode(blobs, names, str(source)),
        "torchvision.io, batched": lambda: torchvision_io().numpy(),
    }
    if importlib.util.find_spec("torchcodec"):  # not a dependency: measured where installed
        from torchcodec.decoders import ImageReadMode, decode_jpeg

        found["torchcodec, batched"] = lambda: (
            torch.stack(decode_jpeg(tensors, mode=ImageReadMode.RGB)).permute(0, 2, 3, 1).numpy()
        )
    return found


def decoder_table(source: Path, count: int) -> None:
    """Print images per CPU-second of each decoder on one thread, as a ratio to the lab's."""
    torch.set_num_threads(1)
    rows, reference = {}, None
    for name, decode in decoders(source, count).items():
        images = decode()  # warm up; the pixels to compare
        reference = images if reference is None else reference
        # best of 3: CPU time of this process alone (the decoders run in it)
        cpu = min(timed(lambda decode=decode: len(decode()))[2] for _ in range(3))
        rows[name] = (count / cpu, np.array_equal(images, reference))
    print(f"\nJPEG decoding, {count:,} train images, 1 thread")
    print(f"{'decoder':<26} {'images/CPU-s':>12} {'ratio':>6}  same pixels as PIL")
    for name, (speed, same) in rows.items():
        ratio = speed / rows["PIL (lab.data)"][0]
        print(f"{name:<26} {speed:>12,.0f} {ratio:>5.2f}x  {'yes' if same else 'NO'}")


def ours(cache: Path, classes: int, batch_size: int, epochs: int, augment: str) -> int:
    """Images served by `epochs` shuffled passes of lab.data.batches, augmented."""
    split = data.load_split("train", cache_dir=cache, classes=classes)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    mean, scale = data.normalizer(data.load_stats(cache), "pixel")
    generator = torch.Generator().manual_seed(0)
    count = 0
    for _ in range(epochs):
        for x, _ in data.batches(
            images,
            labels,
            batch_size,
            mean=mean,
            scale=scale,
            shuffle=True,
            augment=augment,
            generator=generator,
            crop_scale=CROP_SCALE,
        ):
            count += len(x)
    return count


def extract_classes(source: Path, wnids: list[str], folder: Path) -> Path:
    """Extract the train images of these classes from the zip into folder/<wnid>/images/."""
    with zipfile.ZipFile(source) as zf:
        prefix = zf.namelist()[0].split("/", 1)[0] + "/train/"
        for name in zf.namelist():
            if name.startswith(prefix) and name.split("/")[2] in wnids and name.endswith(".JPEG"):
                target = folder / name.removeprefix(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    return folder


def image_folder(
    root: Path, stats: dict, batch_size: int, workers: int, epochs: int, augment: str
) -> int:
    """Images served by `epochs` passes of the torchvision reference pipeline, augmented."""
    crop = {
        "crop_flip": transforms.RandomCrop(64, padding=4),
        "rrc": transforms.RandomResizedCrop(64, scale=(CROP_SCALE, 1)),
    }[augment]
    transform = transforms.Compose(
        [
            crop,
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(stats["mean_channel"] / 255, stats["std_channel"] / 255),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    count = 0
    for _ in range(epochs):  # worker start-up counts: a training loop pays it every epoch
        for x, _ in loader:
            count += len(x)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("TINY_IMAGENET"), help="archive (zip)")
    parser.add_argument("--classes", type=int, default=20, help="classes in the loader test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--epochs", type=int, default=3, help="passes in each loader test")
    parser.add_argument("--decode", type=int, default=10_000, help="JPEGs in the decoder test")
    parser.add_argument("--augment", choices=("crop_flip", "rrc"), default="crop_flip")
    parser.add_argument(
        "--decoders-only", action="store_true", help="only the decoder table (seconds, no cache)"
    )
    args = parser.parse_args()
    if not args.data:
        parser.error("pass --data or set TINY_IMAGENET")
    source = data.resolve_source(args.data)
    if not source.is_file():
        parser.error(f"{source}: the benchmark reads the zip, not an extracted folder")
    print(
        f"{cpu_info()[0]}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f},"
        f" torch {torch.__version__}"
    )
    decoder_table(source, args.decode)
    if args.decoders_only:
        return

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"

        def build() -> int:
            data.prepare(source, cache, progress=False)
            return sum(len(data.load_split(split, cache_dir=cache).labels) for split in data.SPLITS)

        images, wall, cpu = timed(build)
        print(
            f"\ncache build: {images:,} images in {wall:.1f} s ({images / wall:,.0f} images/s); "
            f"{cpu:.1f} s CPU ({images / cpu:,.0f} images per CPU-second)"
        )
        # One thread: on a shared 2-core machine more intra-op threads mostly wait for each other.
        torch.set_num_threads(1)
        # Best of 3: each run takes well under a second, so one busy moment would dominate it.
        runs = [
            timed(lambda: ours(cache, args.classes, args.batch_size, args.epochs, args.augment))
            for _ in range(3)
        ]
        wnids = data.load_split("train", cache_dir=cache, classes=args.classes).wnids
        root = extract_classes(source, wnids, Path(tmp) / "folder")
        stats = data.load_stats(cache)
        reference = timed(
            lambda: image_folder(
                root, stats, args.batch_size, args.workers, args.epochs, args.augment
            )
        )

    rows = {
        "lab.data.batches, 1 thread": min(runs, key=lambda run: run[1]),
        f"ImageFolder + PIL, {args.workers} workers": reference,
    }
    print(
        f"\n{args.augment} batches of {args.batch_size}, {args.classes} classes,"
        f" {args.epochs} epochs"
    )
    print(
        f"{'loader':<30} {'images':>7} {'wall s':>7} {'images/s':>9} {'ratio':>6}"
        f" {'CPU s':>6} {'images/CPU-s':>12} {'ratio':>6}"
    )
    for name, (images, wall, cpu) in rows.items():
        print(
            f"{name:<30} {images:>7,} {wall:>7.2f} {images / wall:>9,.0f}"
            f" {images / wall / (reference[0] / reference[1]):>5.1f}x {cpu:>6.2f}"
            f" {images / cpu:>12,.0f} {images / cpu / (reference[0] / reference[2]):>5.1f}x"
        )


if __name__ == "__main__":
    main()
