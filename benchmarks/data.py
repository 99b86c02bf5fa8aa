"""Data pipeline speed on the real archive: the decode-once cache build, and batch throughput of
`lab.data.batches` (crop+flip, on CPU) against torchvision ImageFolder + PIL transforms +
DataLoader(num_workers=2), on the same classes.

    python benchmarks/data.py --data /path/to/tiny-imagenet-200.zip
"""

import argparse
import os
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from lab import data


def cache_build(source: Path, folder: Path) -> dict:
    """Build a fresh cache in folder; wall time and CPU time of this process and its workers."""
    before, start = os.times(), time.perf_counter()
    cache = data.prepare(source, folder / "cache", progress=False)
    seconds, after = time.perf_counter() - start, os.times()
    cpu = sum(after[:4]) - sum(before[:4])  # user + system, self + finished children
    images = sum(len(data.load_split(s, cache_dir=cache).labels) for s in data.SPLITS)
    return {"cache": cache, "images": images, "seconds": seconds, "cpu": cpu}


def ours(cache: Path, classes: int, batch_size: int, epochs: int) -> tuple[int, float]:
    """Images and seconds for `epochs` shuffled crop+flip passes of lab.data.batches."""
    split = data.load_split("train", cache_dir=cache, classes=classes)
    images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
    mean, scale = data.normalizer(data.load_stats(cache), "pixel")
    generator = torch.Generator().manual_seed(0)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, _ in data.batches(
            images,
            labels,
            batch_size,
            mean=mean,
            scale=scale,
            shuffle=True,
            augment="crop_flip",
            generator=generator,
        ):
            count += len(x)
    return count, time.perf_counter() - start


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
    root: Path, stats: dict, batch_size: int, workers: int, epochs: int
) -> tuple[int, float]:
    """Images and seconds for `epochs` passes of the torchvision reference pipeline."""
    transform = transforms.Compose(
        [
            transforms.RandomCrop(64, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(stats["mean_channel"] / 255, stats["std_channel"] / 255),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    count, start = 0, time.perf_counter()
    for _ in range(epochs):  # worker start-up counts: a training loop pays it every epoch
        for x, _ in loader:
            count += len(x)
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("TINY_IMAGENET"), help="archive (zip)")
    parser.add_argument("--classes", type=int, default=20, help="classes in the loader test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--epochs", type=int, default=2, help="passes in each loader test")
    args = parser.parse_args()
    if not args.data:
        parser.error("pass --data or set TINY_IMAGENET")
    source = data.resolve_source(args.data)
    if not source.is_file():
        parser.error(f"{source}: the benchmark reads the zip, not an extracted folder")
    print(
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        build = cache_build(source, Path(tmp))
        print(
            f"\ncache build: {build['images']:,} images in {build['seconds']:.1f} s "
            f"({build['images'] / build['seconds']:,.0f} images/s; "
            f"{build['cpu']:.1f} s CPU, so {build['images'] / build['cpu']:,.0f} images/s per core)"
        )
        torch.set_num_threads(1)  # fair: the ImageFolder workers run one thread each, too
        ours_images, ours_seconds = ours(build["cache"], args.classes, args.batch_size, args.epochs)
        wnids = data.load_split("train", cache_dir=build["cache"], classes=args.classes).wnids
        root = extract_classes(source, wnids, Path(tmp) / "folder")
        stats = data.load_stats(build["cache"])
        ref_images, ref_seconds = image_folder(
            root, stats, args.batch_size, args.workers, args.epochs
        )

    rows = [
        ("lab.data.batches, 1 thread", ours_images, ours_seconds),
        (f"ImageFolder + PIL, {args.workers} workers", ref_images, ref_seconds),
    ]
    reference = ref_images / ref_seconds
    print(f"\ncrop+flip batches of {args.batch_size}, {args.classes} classes, {args.epochs} epochs")
    print(f"{'loader':<34} {'images':>8} {'seconds':>8} {'images/s':>10} {'ratio':>7}")
    for name, images, seconds in rows:
        rate = images / seconds
        print(f"{name:<34} {images:>8,} {seconds:>8.2f} {rate:>10,.0f} {rate / reference:>6.1f}x")


if __name__ == "__main__":
    main()
