"""Tiny ImageNet data: find or download the archive, decode it once into a memory-mapped cache,
split it, compute its statistics, serve normalized, augmented batches as tensors, and load a
run's splits onto its device (load_data).

The cache (default data_dir()/cache) holds, per split, `<split>_images.npy` (uint8 N,64,64,3),
`<split>_labels.npy` (int64) and `<split>_files.txt`, plus `stats.npz` and `meta.json`
(classes, names, counts, source fingerprint). It is built in a temporary folder and renamed into
place, so a cache folder with a meta.json is always complete.
"""

import fcntl
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import shutil
import struct
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import JpegImagePlugin
from tqdm import tqdm

from lab.config import Config
from lab.errors import LabError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # of the official archive at URL
# the labeled splits, which a run reports top-1 and top-5 on; challenge is unlabeled
SCORED_SPLITS = ("train", "val", "test")
SPLITS = (*SCORED_SPLITS, "challenge")
AUGMENTS = ("none", "flip", "crop_flip", "rrc")
NORMALIZE = ("pixel", "channel")  # subtract the mean image (the study) or the channel means
SIZE = 64  # every image is SIZE x SIZE RGB
PAD = 4  # crop_flip pads by this many zero pixels, then crops SIZE x SIZE back
VAL_EVERY = 10  # val holds out 1 in VAL_EVERY of each class's official train images
SPLIT_SEED = 0
CACHE_VERSION = 1
CHUNK = 500  # images per decoding job


class DataError(LabError):
    """A data file is missing or broken; the message names the file and the problem."""


@dataclass(frozen=True)
class Split:
    """One split (or subset): images, labels, class ids and names, source file names."""

    images: np.ndarray  # uint8 (N, 64, 64, 3), memory-mapped (copy-on-write) unless scattered
    labels: np.ndarray  # int64 (N,), in 0..len(wnids)-1 ; -1 for challenge
    wnids: list[str]  # class id per label index (subset order)
    names: list[str]  # human names per label index (first name from words.txt)
    files: list[str]  # source file name per image, e.g. "val_12.JPEG"


# ----------------------------------------------------------------------------- locating
def data_dir() -> Path:
    """$LAB_DATA_DIR, or ~/.cache/tiny-imagenet-lab: where the archive and cache live."""
    return Path(os.environ.get("LAB_DATA_DIR") or Path.home() / ".cache" / "tiny-imagenet-lab")


def resolve_source(source: str | Path | None = None) -> Path:
    """The archive to read: explicit path > $TINY_IMAGENET > data_dir() zip (downloaded)."""
    # A source is the zip, or an extracted folder holding wnids.txt or tiny-imagenet-200/;
    # an empty string means no source, as in the trainer's Config.
    source = source or os.environ.get("TINY_IMAGENET") or None
    if source is None:
        path = data_dir() / "tiny-imagenet-200.zip"
        return path if path.exists() else download(URL, path, MD5)
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{path}: does not exist")
    if path.is_file():
        return path
    for root in (path, path / "tiny-imagenet-200"):
        if (root / "wnids.txt").is_file():
            return root
    if (path / "tiny-imagenet-200.zip").is_file():
        return path / "tiny-imagenet-200.zip"
    raise DataError(f"{path}: missing wnids.txt (not a Tiny ImageNet folder or zip)")


def download(
    url: str = URL, dest: str | Path | None = None, md5: str | None = MD5, progress: bool = True
) -> Path:
    """Download url to dest (default data_dir()/tiny-imagenet-200.zip), checking its md5."""
    dest = Path(dest) if dest else data_dir() / "tiny-imagenet-200.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    digest = hashlib.md5()
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            open(part, "wb") as f,
            tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None,
                unit="B",
                unit_scale=True,
                desc=f"downloading {url}",
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        if md5 and digest.hexdigest() != md5:
            raise DataError(
                f"{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}): "
                f"corrupted download or a different file; nothing was saved to {dest}"
            )
        os.replace(part, dest)
    except OSError as e:  # urllib's errors are OSErrors
        raise DataError(
            f"{url}: download failed ({e}); fetch the archive yourself and pass its path "
            "(--data PATH or $TINY_IMAGENET)"
        ) from None
    finally:
        part.unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------- reading
def _open(source: Path) -> tuple[Callable[[], list[str]], Callable[[str], bytes]]:
    """(list_names, read) for a zip or an extracted folder; names are relative to its root."""
    if source.is_dir():

        def list_folder() -> list[str]:
            return _walk(source)

        def read_file(name: str) -> bytes:
            try:
                return (source / name).read_bytes()
            except FileNotFoundError:
                raise DataError(f"{source}: missing {name}") from None
            except OSError as e:
                raise DataError(f"{source}: {name}: cannot read ({e.strerror})") from None

        return list_folder, read_file
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{source}: not a readable zip file, or truncated ({e})") from None
    members = [n for n in archive.namelist() if not n.endswith("/")]
    # The official zip keeps everything under tiny-imagenet-200/; accept any single top folder.
    tops = {n.split("/", 1)[0] for n in members}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in n for n in members) else ""

    def list_zip() -> list[str]:
        return [n.removeprefix(prefix) for n in members]

    fd = archive.fp.fileno()

    def read_member(name: str) -> bytes:
        # pread has no shared file position, so forked decoding workers read through this
        # same descriptor, without parsing the 120,000-entry directory again.
        member = prefix + name
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise DataError(f"{source}: missing {member}") from None
        header = os.pread(fd, 30, info.header_offset)
        if header[:4] != b"PK\x03\x04":
            raise DataError(f"{source}: {member}: corrupt zip member (bad local header)")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        raw = os.pread(fd, info.compress_size, info.header_offset + 30 + name_len + extra_len)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(f"{source}: {member}: compression {info.compress_type} unsupported")
        try:
            content = raw if info.compress_type == zipfile.ZIP_STORED else zlib.decompress(raw, -15)
        except zlib.error as e:
            raise DataError(f"{source}: {member}: corrupt zip member ({e})") from None
        if len(raw) != info.compress_size or zlib.crc32(content) != info.CRC:
            raise DataError(f"{source}: {member}: corrupt zip member (bad CRC-32)")
        return content

    return list_zip, read_member


def _walk(root: Path) -> list[str]:
    """Every file under root as a relative posix path, sorted."""
    files = []
    for folder, _, names in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        files += [name if rel == "." else f"{rel}/{name}" for name in names]
    return sorted(files)


def _fingerprint(source: Path) -> dict:
    """Cheap identity of a source: the zip's size and mtime, or a folder's files and texts."""
    # A folder's file list and its text files' size and mtime: listing 120,000 files takes a
    # tenth of the time of stat-ing them (an image rewritten under the same name goes unseen).
    if source.is_file():
        st = source.stat()
        return {"kind": "zip", "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    files = _walk(source)
    digest = hashlib.sha1("\n".join(files).encode())
    for name in ("wnids.txt", "words.txt", "val/val_annotations.txt"):
        st = (source / name).stat() if (source / name).exists() else None
        digest.update(f"{name} {st and st.st_size} {st and st.st_mtime_ns}\n".encode())
    return {"kind": "folder", "files": len(files), "sha1": digest.hexdigest()}


def _natural(name: str) -> list:
    """Sort key that puts val_2 before val_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _is_jpeg(name: str) -> bool:
    """Whether a file name is a JPEG's (the official archive uses .JPEG)."""
    return name.lower().endswith((".jpeg", ".jpg"))


def _held_out(files: list[str]) -> set[str]:
    """The 1/VAL_EVERY of a class's files that form val: those with the smallest seeded hash."""
    # Hashes depend on nothing but the names: the split is stable across machines and versions.
    ranked = sorted(files, key=lambda f: hashlib.sha1(f"{SPLIT_SEED}/{f}".encode()).digest())
    return set(ranked[: len(files) // VAL_EVERY])


def _layout(source: Path, members: list[str], read: Callable[[str], bytes]) -> dict:
    """Parse the official layout: classes, names and, per split, (paths, labels, files)."""
    wnids = read("wnids.txt").decode("utf-8", "replace").split()
    if not wnids:
        raise DataError(f"{source}: wnids.txt lists no classes")
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{source}: wnids.txt lists a class twice")
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if "words.txt" in members:  # optional: without it, classes are named by their wnid
        for line in read("words.txt").decode("utf-8", "replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
    class_files: dict[str, list[str]] = {w: [] for w in wnids}
    val_images, test_images = set(), []
    for name in members:
        parts = name.split("/")
        if not _is_jpeg(name):
            continue
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            if parts[1] in class_files:  # folders of classes not in wnids.txt are ignored
                class_files[parts[1]].append(parts[3])
        elif parts[:2] == ["val", "images"] and len(parts) == 3:
            val_images.add(parts[2])
        elif parts[:2] == ["test", "images"] and len(parts) == 3:
            test_images.append(parts[2])

    splits = {"train": ([], [], []), "val": ([], [], [])}
    for wnid, files in class_files.items():
        if not files:
            raise DataError(f"{source}: train/{wnid}/images has no images (missing or empty)")
        held = _held_out(files)
        for f in sorted(files, key=_natural):
            paths, labels, split_files = splits["val" if f in held else "train"]
            paths.append(f"train/{wnid}/images/{f}")
            labels.append(index[wnid])
            split_files.append(f)

    annotations = "val/val_annotations.txt"
    val_labels = {}
    for number, line in enumerate(read(annotations).decode("utf-8", "replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{source}: {annotations} line {number}"
        if len(fields) < 2:
            raise DataError(f"{where}: expected '<file> <wnid> ...', got {line!r}")
        file, wnid = fields[:2]
        if wnid not in index:
            raise DataError(f"{where}: class {wnid} is not in wnids.txt")
        if file not in val_images:
            raise DataError(f"{where}: names val/images/{file}, which does not exist")
        if file in val_labels:
            raise DataError(f"{where}: {file} is annotated twice")
        val_labels[file] = index[wnid]
    test = sorted(val_labels, key=_natural)
    challenge = sorted(test_images, key=_natural)
    splits["test"] = ([f"val/images/{f}" for f in test], [val_labels[f] for f in test], test)
    splits["challenge"] = (
        [f"test/images/{f}" for f in challenge],
        [-1] * len(challenge),
        challenge,
    )
    return {"wnids": wnids, "names": [words.get(w) or w for w in wnids], "splits": splits}


def _decode(blobs: list[bytes], names: list[str], where: str) -> np.ndarray:
    """JPEG bytes -> uint8 (n, 64, 64, 3) RGB; grayscale and CMYK become RGB."""
    # PIL (libjpeg-turbo) rather than torchvision.io, deprecated since torchvision 0.29: the
    # same pixels, no new dependency; benchmarks/data.py measures the decoders.
    images = np.empty((len(blobs), SIZE, SIZE, 3), np.uint8)
    for i, (blob, name) in enumerate(zip(blobs, names, strict=True)):
        try:
            picture = JpegImagePlugin.JpegImageFile(io.BytesIO(blob))  # the header only
            if picture.size != (SIZE, SIZE):  # before decoding: the header has the size
                width, height = picture.size
                raise DataError(
                    f"{where}: {name}: image is {width}x{height}, expected {SIZE}x{SIZE}"
                )
            images[i] = picture.convert("RGB")
        except (OSError, SyntaxError, EOFError) as e:  # PIL's errors for a damaged file
            raise DataError(f"{where}: {name}: unreadable JPEG ({e})") from None
    return images


# ----------------------------------------------------------------------------- cache build
_worker: dict = {}  # per decoding process: how to read the source, and the output folder


def _init_worker(read: Callable[[str], bytes], source: Path, out: Path) -> None:
    """Set up a decoding process."""
    torch.set_num_threads(1)  # one process per core
    _worker.update(read=read, source=source, out=out)


def _decode_job(job: tuple[str, int, list[str]]) -> tuple:
    """Decode one chunk straight into its split's array; return train statistics partials."""
    split, start, paths = job
    images = _decode([_worker["read"](p) for p in paths], paths, str(_worker["source"]))
    out = np.load(_worker["out"] / f"{split}_images.npy", mmap_mode="r+")
    out[start : start + len(images)] = images
    out.flush()
    channels_equal = (images[..., 0] == images[..., 1]) & (images[..., 1] == images[..., 2])
    gray = int(channels_equal.all(axis=(1, 2)).sum())
    if split != "train":
        return split, len(images), gray, None, None
    # Exact statistics: a per-pixel sum and a per-channel histogram of values
    # (torch's bincount takes uint8 as it is, 2.5x faster than numpy's).
    pixels = torch.from_numpy(images)
    hist = torch.stack([torch.bincount(pixels[..., c].flatten(), minlength=256) for c in range(3)])
    return split, len(images), gray, images.sum(axis=0, dtype=np.uint32), hist.numpy()


def _build(source: Path, out: Path, progress: bool) -> None:
    """Decode the whole source into the empty folder `out`, meta.json last."""
    start_time = time.perf_counter()
    list_names, read = _open(source)
    layout = _layout(source, list_names(), read)
    jobs = []
    for split, (paths, labels, files) in layout["splits"].items():
        np.save(out / f"{split}_labels.npy", np.array(labels, dtype=np.int64))
        (out / f"{split}_files.txt").write_text("".join(f"{f}\n" for f in files))
        np.lib.format.open_memmap(
            out / f"{split}_images.npy",
            mode="w+",
            dtype=np.uint8,
            shape=(len(paths), SIZE, SIZE, 3),
        ).flush()
        jobs += [(split, i, paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK)]

    pixel_sum = np.zeros((SIZE, SIZE, 3), np.int64)
    hist = np.zeros((3, 256), np.int64)
    gray = dict.fromkeys(SPLITS, 0)
    total = sum(len(paths) for paths, _, _ in layout["splits"].values())
    workers = max(1, min(len(os.sched_getaffinity(0)), 8, len(jobs)))
    # fork: workers start at once and inherit the imports and the open archive (read).
    # (An executor rather than a Pool: Pool.terminate after a worker error can deadlock.)
    executor = ProcessPoolExecutor(
        workers, multiprocessing.get_context("fork"), _init_worker, (read, source, out)
    )
    try:
        with tqdm(
            total=total, unit="img", desc=f"caching {source.name}", disable=not progress
        ) as bar:
            for future in as_completed([executor.submit(_decode_job, job) for job in jobs]):
                split, count, split_gray, chunk_sum, chunk_hist = future.result()
                gray[split] += split_gray
                if chunk_sum is not None:
                    pixel_sum += chunk_sum
                    hist += chunk_hist
                bar.update(count)
    finally:
        executor.shutdown(cancel_futures=True)  # on an error: drop pending jobs, finish running

    n_train = len(layout["splits"]["train"][0])
    values = np.arange(256, dtype=np.float64)
    pixels = hist.sum(axis=1)
    mean_channel = hist @ values / pixels
    var_channel = hist @ values**2 / pixels - mean_channel**2
    np.savez(
        out / "stats.npz",
        mean_image=(pixel_sum / n_train).astype(np.float32),
        mean_channel=mean_channel.astype(np.float32),
        std_channel=np.sqrt(var_channel).astype(np.float32),
    )
    meta = {
        "version": CACHE_VERSION,
        "source": str(source),
        "fingerprint": _fingerprint(source),
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
        "build_seconds": round(time.perf_counter() - start_time, 2),
        "split_rule": f"val = 1 in {VAL_EVERY} of each class's train images, seed {SPLIT_SEED}",
        "wnids": layout["wnids"],
        "names": layout["names"],
        "counts": {split: len(paths) for split, (paths, _, _) in layout["splits"].items()},
        "grayscale": gray,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def _read_meta(cache: Path) -> dict | None:
    """The cache's meta.json if it is a complete cache of this version, else None."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("version") == CACHE_VERSION else None


def _cache_path(cache_dir: str | Path | None) -> Path:
    """The cache folder: cache_dir, or data_dir()/cache."""
    return Path(cache_dir).expanduser().absolute() if cache_dir else data_dir() / "cache"


def prepare(
    source: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> Path:
    """The cache folder, built (decoding every image once) if missing or if its source changed."""
    # With no source, an existing cache is used as it is, rebuilt only if the archive it was
    # built from changed; without a cache, the source is resolved as in resolve_source.
    cache = _cache_path(cache_dir)
    meta = _read_meta(cache)
    if not source and meta is not None:
        if not Path(meta["source"]).exists():
            return cache  # the cache outlived its archive: still valid
        source = meta["source"]
    source = resolve_source(source)
    fingerprint = _fingerprint(source)
    if meta is not None and meta["fingerprint"] == fingerprint:
        return cache
    if cache.exists() and any(cache.iterdir()) and not (cache / "meta.json").exists():
        raise DataError(f"{cache}: not a cache folder (no meta.json); refusing to overwrite it")
    cache.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (e.g. several DDP ranks): the others wait, then reuse its cache.
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = _read_meta(cache)
        if meta is not None and meta["fingerprint"] == fingerprint:
            return cache
        # Left by a build that was killed outright (a Ctrl-C or an error cleans up after itself).
        for stale in [
            *cache.parent.glob(f".{cache.name}.building-*"),
            *cache.parent.glob(f".{cache.name}.old-*"),
        ]:
            shutil.rmtree(stale, ignore_errors=True)
        building = cache.parent / f".{cache.name}.building-{os.getpid()}"
        building.mkdir()
        try:
            _build(source, building, progress)
            if cache.exists():
                old = cache.parent / f".{cache.name}.old-{os.getpid()}"
                os.rename(cache, old)
                os.rename(building, cache)
                shutil.rmtree(old)
            else:
                os.rename(building, cache)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return cache


# ----------------------------------------------------------------------------- loading
def load_split(
    split: str,
    source: str | Path | None = None,
    cache_dir: str | Path | None = None,
    classes: int | Sequence[str] | None = None,
    per_class: int | None = None,
    first_class: int = 0,
) -> Split:
    """One split from the cache (built if needed), optionally a subset of classes and images."""
    # classes: K classes in wnids.txt order from first_class on, or a list of wnids; labels are
    # remapped to 0..K-1 in that order (None or 0 = all). per_class: the first N images of each
    # class (None or 0 = all; on the unlabeled challenge split, the first N images).
    if split not in SPLITS:
        raise LabError(f"split must be one of {SPLITS}, got {split!r}")
    cache = prepare(source, cache_dir)
    meta = _read_meta(cache)
    images = np.load(cache / f"{split}_images.npy", mmap_mode="c")  # copy-on-write: writable
    labels = np.load(cache / f"{split}_labels.npy")
    files = (cache / f"{split}_files.txt").read_text().splitlines()
    wnids, names = meta["wnids"], meta["names"]
    if classes is None or classes == 0:  # 0 = all, as in the trainer's Config
        chosen = list(range(len(wnids)))
    elif isinstance(classes, int):
        if not 1 <= classes <= len(wnids) - first_class:
            raise LabError(
                f"classes must be in 1..{len(wnids) - first_class} from class {first_class} on "
                f"(the data set has {len(wnids)} classes), got {classes}"
            )
        chosen = list(range(first_class, first_class + classes))
    else:
        unknown = sorted(set(classes) - set(wnids))
        if unknown:
            raise LabError(f"unknown classes {unknown} (not in {cache / 'meta.json'})")
        chosen = [wnids.index(w) for w in classes]
    if per_class is not None and per_class < 0:
        raise LabError(f"per_class must be >= 0, got {per_class}")
    remap = np.full(len(wnids), -1, np.int64)
    remap[chosen] = np.arange(len(chosen))
    if split == "challenge":
        new_labels = labels
        keep = np.arange(min(per_class or len(labels), len(labels)))
    else:
        new_labels = remap[labels]
        keep = np.flatnonzero(new_labels >= 0)
        if per_class:
            keep = np.sort(
                np.concatenate(
                    [keep[new_labels[keep] == c][:per_class] for c in range(len(chosen))]
                )
            )
    # A contiguous selection stays a memory map; anything else is copied into memory.
    if len(keep) == 0 or np.array_equal(keep, np.arange(keep[0], keep[0] + len(keep))):
        first = int(keep[0]) if len(keep) else 0
        selected = images[first : first + len(keep)]
    else:
        selected = images[keep]
    return Split(
        images=selected,
        labels=new_labels[keep],
        wnids=[wnids[i] for i in chosen],
        names=[names[i] for i in chosen],
        files=[files[i] for i in keep],
    )


def load_stats(
    cache_dir: str | Path | None = None, source: str | Path | None = None
) -> dict[str, np.ndarray]:
    """Train statistics on the 0..255 scale: mean_image (64,64,3), mean_channel, std_channel."""
    cache = prepare(source, cache_dir)
    with np.load(cache / "stats.npz") as stats:
        return {key: stats[key] for key in stats.files}


def normalizer(
    stats: dict[str, np.ndarray], mode: str = "pixel", device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, scale) broadcasting against float NCHW batches: x = (x - mean) / scale."""
    # mode "pixel" subtracts the mean image (the study), "channel" the per-channel mean; both
    # divide by the per-channel std, which keeps inputs near unit scale so lr 0.1 stays stable.
    if mode == "pixel":
        mean = torch.from_numpy(stats["mean_image"]).permute(2, 0, 1)[None]
    elif mode == "channel":
        mean = torch.from_numpy(stats["mean_channel"]).view(1, 3, 1, 1)
    else:
        raise LabError(f"normalize mode must be 'pixel' or 'channel', got {mode!r}")
    scale = torch.from_numpy(stats["std_channel"]).view(1, 3, 1, 1)
    return mean.float().contiguous().to(device), scale.float().to(device)


def batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    mean: torch.Tensor,
    scale: torch.Tensor,
    shuffle: bool = False,
    augment: str = "none",
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    size: int = SIZE,
    crop_scale: float = 0.25,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalized float32 NCHW (channels_last) batches of uint8 NHWC images, on their device,
    resized to size x size (bilinear, antialiased) when size is not SIZE."""
    # augment: "none", "flip" (horizontal, p=0.5), "crop_flip" (a random 64x64 crop of the
    # image zero-padded by PAD px, then the flip) or "rrc" (the flip, then a random crop of
    # crop_scale to all of the image's area and 3/4 to 4/3 aspect, resized to size x size: the
    # Inception / ImageNet training crop). All randomness for the pass is drawn up front
    # from `generator`, on its own device (default CPU): a CPU generator with a given seed gives
    # the same batches whether the images are on the CPU or a GPU.
    if augment not in AUGMENTS:
        raise LabError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if images.dtype != torch.uint8 or images.shape[1:] != (SIZE, SIZE, 3):
        shape = tuple(images.shape)
        raise LabError(f"images must be uint8 (N, {SIZE}, {SIZE}, 3), got {images.dtype} {shape}")
    device, n = images.device, len(images)
    labels = labels.to(device)
    draw = {"generator": generator, "device": generator.device if generator is not None else "cpu"}
    order = torch.randperm(n, **draw) if shuffle else torch.arange(n, device=draw["device"])
    order = order.to(device)
    # Draw only what the augmentation uses, so evaluation leaves the generator untouched.
    # Flips are kept on the CPU: finding the flipped images there never makes a GPU wait.
    flip = (torch.rand(n, **draw) < 0.5).cpu() if augment != "none" else None
    shift = (
        torch.randint(0, 2 * PAD + 1, (2, n), **draw).to(device) if augment == "crop_flip" else None
    )
    boxes = crop_boxes(n, crop_scale, draw).to(device) if augment == "rrc" else None
    # Full-size channels_last operands keep the inner loop contiguous (1.5x faster than (1,3,1,1)).
    inv = (1 / scale).expand(1, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    bias = (-mean * inv).contiguous(memory_format=torch.channels_last)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        end = min(start + batch_size, n)
        index = order[start:end]
        x = images.index_select(0, index)  # uint8 NHWC: augment before the 4x larger float copy
        if shift is not None:
            x = _crop(x, shift[0, start:end], shift[1, start:end])
        if flip is not None:
            x = _flip(x, flip[start:end])
        # NHWC permuted to NCHW is channels_last, and float() keeps that layout.
        x = x.permute(0, 3, 1, 2).float()
        x = torch.addcmul(bias, x, inv, out=x)  # x * inv + bias, in one pass
        if boxes is not None:
            x = _resized_crop(x, boxes[start:end], size)
        elif size != SIZE:  # progressive resizing: whole batches, after the augmentation
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels[index]


def crop_boxes(n: int, min_scale: float, draw: dict) -> torch.Tensor:
    """(n, 4) random crops as (centre x, centre y, width, height), fractions of the image: area
    uniform in [min_scale, 1], aspect log-uniform in [3/4, 4/3], clipped to the image."""
    area = torch.empty(n, device=draw["device"]).uniform_(min_scale, 1, generator=draw["generator"])
    log_ratio = torch.empty(n, device=draw["device"]).uniform_(
        math.log(3 / 4), math.log(4 / 3), generator=draw["generator"]
    )
    width = (area * log_ratio.exp()).sqrt().clamp(max=1)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1)
    where = torch.rand(2, n, generator=draw["generator"], device=draw["device"])
    centre_x = width / 2 + where[0] * (1 - width)
    centre_y = height / 2 + where[1] * (1 - height)
    return torch.stack([centre_x, centre_y, width, height], dim=1)


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each float NCHW image's box (crop_boxes) resized to size x size, bilinear, in one call."""
    # An affine grid per image maps the output square onto its box in [-1, 1] coordinates.
    theta = torch.zeros(len(x), 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = boxes[:, 2], boxes[:, 3]
    theta[:, 0, 2], theta[:, 1, 2] = 2 * boxes[:, 0] - 1, 2 * boxes[:, 1] - 1
    grid = F.affine_grid(theta, [len(x), 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images with those where flip (a CPU bool tensor) is set mirrored left-right."""
    flipped = flip.nonzero().squeeze(1)
    pick = torch.arange(len(x))
    pick[flipped] = len(x) + torch.arange(len(flipped))
    # Gather each image from [x, mirrored copies]: 2x faster than index_copy_ of the copies.
    mirrored = x.index_select(0, flipped.to(x.device, non_blocking=True)).flip(2)
    return torch.cat([x, mirrored]).index_select(0, pick.to(x.device, non_blocking=True))


def _crop(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """64x64 crops of uint8 NHWC images zero-padded by PAD, image i at (dy[i], dx[i])."""
    side = SIZE + 2 * PAD
    padded = F.pad(x, (0, 0, PAD, PAD, PAD, PAD)).view(-1)
    # Every byte offset of the padded batch starts a 64x64 window view; one index_select picks
    # a window per image (7x faster than advanced indexing with per-pixel row/column indices).
    last = (SIZE - 1) * (side + 1) * 3 + 2  # a window's last byte, from its first
    windows = padded.as_strided((padded.numel() - last, SIZE, SIZE, 3), (1, side * 3, 3, 1))
    first = ((torch.arange(len(x), device=x.device) * side + dy) * side + dx) * 3
    return windows.index_select(0, first)


# ----------------------------------------------------------------------------- a run's data
@dataclass
class RunData:
    """The splits a run sees, on its device, and the normalization of its inputs."""

    splits: dict[str, Split]  # class ids, names and file names of each split
    images: dict[str, torch.Tensor]  # uint8 (N, 64, 64, 3) per split
    labels: dict[str, torch.Tensor]  # int64 (N,) per split; -1 for challenge
    mean: torch.Tensor  # x = (x - mean) / scale, broadcasting against NCHW batches
    scale: torch.Tensor

    @property
    def num_classes(self) -> int:
        """How many classes the run tells apart."""
        return len(self.splits["train"].wnids)


def load_data(config: Config, device: torch.device) -> RunData:
    """The run's splits as uint8 tensors on the device, plus the normalization tensors."""
    cache = prepare(
        config.data or None,
        cache_dir=Path(config.cache_dir) if config.cache_dir else None,
        progress=not config.quiet,
    )
    # The challenge format names one of all the classes per image: subsets skip it.
    names = SPLITS if not config.classes else SCORED_SPLITS
    splits = {
        name: load_split(
            name,
            cache_dir=cache,
            classes=config.classes,
            first_class=config.first_class,
            per_class=config.per_class if name == "train" else None,
        )
        for name in names
    }
    mean, scale = normalizer(load_stats(cache), config.normalize, device=device)
    return RunData(
        splits=splits,
        images={
            n: torch.from_numpy(np.ascontiguousarray(s.images)).to(device)
            for n, s in splits.items()
        },
        labels={
            n: torch.from_numpy(np.asarray(s.labels, np.int64)).to(device)
            for n, s in splits.items()
        },
        mean=mean,
        scale=scale,
    )


# ----------------------------------------------------------------------------- info
def data_info(source: str | Path | None = None, cache_dir: str | Path | None = None) -> str:
    """A text table of where the archive and cache are and what the cache holds."""
    cache = _cache_path(cache_dir)
    meta = _read_meta(cache)
    source = source or (meta["source"] if meta else None)
    default = data_dir() / "tiny-imagenet-200.zip"
    resolved = None
    if not source and not os.environ.get("TINY_IMAGENET") and not default.exists():
        source_line = f"none yet: `lab data prepare` downloads {URL} to {default}"
    else:
        try:
            resolved = resolve_source(source)
            kind = "zip" if resolved.is_file() else "folder"
            source_line = f"{resolved} ({kind})"
        except DataError as e:
            source_line = f"unavailable: {e}"
    if meta is None:
        status = "not built (`lab data prepare` builds it)"
    elif resolved is not None and _fingerprint(resolved) != meta["fingerprint"]:
        status = "stale: the source changed; rebuilt on next use"
    else:
        size = sum(p.stat().st_size for p in cache.iterdir()) / 1e6
        status = f"ready, {size:,.1f} MB, built {meta['built']} in {meta['build_seconds']} s"
    lines = [f"source  {source_line}", f"cache   {cache} ({status})"]
    if meta is not None:
        lines += ["", f"{'split':<10} {'images':>8} {'classes':>8} {'grayscale':>10}  file"]
        for split, images, classes, gray in split_summary(cache).itertuples(name=None):
            classes = "-" if split == "challenge" else classes
            lines.append(f"{split:<10} {images:>8,} {classes:>8} {gray:>9.1f}%  {split}_images.npy")
        lines.append(f"{len(meta['wnids'])} classes; {meta['split_rule']}")
    return "\n".join(lines)


def split_summary(cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Images, classes and the share (%) of grayscale images in each split of a built cache."""
    cache = _cache_path(cache_dir)
    meta = _read_meta(cache)
    if meta is None:
        raise DataError(f"{cache}: no cache built there (`lab data prepare` builds it)")
    rows = []
    for split in SPLITS:
        count = meta["counts"][split]
        labels = np.load(cache / f"{split}_labels.npy")
        rows.append(
            {
                "split": split,
                "images": count,
                "classes": len(np.unique(labels[labels >= 0])),  # challenge: unlabeled, 0
                # counted while the cache was built (R == G == B in every pixel)
                "grayscale_%": 100 * meta["grayscale"][split] / max(count, 1),
            }
        )
    return pd.DataFrame(rows).set_index("split")
