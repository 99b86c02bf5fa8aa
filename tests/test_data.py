"""lab.data: locating and downloading, parsing, cache, splits, subsets, stats, batches, errors."""

import hashlib
import io
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_image, write_archive, zip_folder
from PIL import Image

from lab import data


def jpeg_bytes(image: np.ndarray | Image.Image, mode: str = "RGB") -> bytes:
    """An image saved as JPEG, after converting to mode."""
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def pil_rgb(raw: bytes) -> np.ndarray:
    """Decode image bytes with PIL to uint8 RGB, the reference for our decoder."""
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def assert_no_cache(cache: Path) -> None:
    """No complete-looking cache at cache and no temporary build folders beside it."""
    assert not (cache / "meta.json").exists()
    assert not [p for p in cache.parent.iterdir() if ".building-" in p.name or ".old-" in p.name]


# ----------------------------------------------------------------------------- locating
def test_resolve_source_accepts_zip_and_folders(make_archive, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TINY_IMAGENET", raising=False)
    archive = make_archive()
    root = make_archive(zipped=False)
    assert data.resolve_source(archive) == archive
    assert data.resolve_source(str(root)) == root
    assert data.resolve_source(root.parent) == root  # folder holding tiny-imagenet-200/
    assert data.resolve_source(archive.parent) == archive  # folder holding the zip
    monkeypatch.setenv("TINY_IMAGENET", str(archive))
    assert data.resolve_source(None) == archive
    assert data.resolve_source("") == archive  # the trainer's "no source"
    assert data.resolve_source(root) == root  # an explicit path beats the environment


def test_resolve_source_default_is_data_dir_zip(make_archive, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TINY_IMAGENET", raising=False)
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    assert data.data_dir() == tmp_path / "data"
    archive = make_archive()
    # Missing: downloaded from URL (here a file:// URL), checked against MD5.
    monkeypatch.setattr(data, "URL", archive.as_uri())
    monkeypatch.setattr(data, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    default = tmp_path / "data" / "tiny-imagenet-200.zip"
    assert data.resolve_source() == default
    assert default.read_bytes() == archive.read_bytes()
    monkeypatch.setattr(data, "URL", "file:///nonexistent/tiny.zip")
    assert data.resolve_source() == default  # present now: no download


def test_resolve_source_errors(tmp_path) -> None:
    with pytest.raises(data.DataError, match=r"nowhere\.zip: does not exist"):
        data.resolve_source(tmp_path / "nowhere.zip")
    with pytest.raises(data.DataError, match="missing wnids.txt"):
        data.resolve_source(tmp_path)


def test_download_checks_md5_and_writes_atomically(make_archive, tmp_path) -> None:
    archive = make_archive()
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "tiny.zip"
    assert data.download(archive.as_uri(), dest, md5, progress=False) == dest
    assert dest.read_bytes() == archive.read_bytes()
    dest.unlink()
    with pytest.raises(data.DataError, match=f"checksum mismatch .*expected {'0' * 32}"):
        data.download(archive.as_uri(), dest, "0" * 32, progress=False)
    with pytest.raises(data.DataError, match="nonexistent.zip: download failed"):
        data.download((tmp_path / "nonexistent.zip").as_uri(), dest, md5, progress=False)
    assert list(dest.parent.iterdir()) == []  # nothing, not even a partial file


# ----------------------------------------------------------------------------- parsing
def test_tiny_cache_contents(tiny_cache) -> None:
    counts = {"train": 4 * 54, "val": 4 * 6, "test": 40, "challenge": 8}
    for name, count in counts.items():
        split = data.load_split(name, cache_dir=tiny_cache)
        assert isinstance(split.images, np.memmap)
        assert split.images.shape == (count, 64, 64, 3) and split.images.dtype == np.uint8
        assert split.labels.shape == (count,) and split.labels.dtype == np.int64
        assert len(split.files) == count
        assert split.wnids == [f"n{9000000 + c:08d}" for c in range(4)]
        assert split.names == ["thing0", "thing1", "thing2", "thing3"]  # first name only
    assert (data.load_split("challenge", cache_dir=tiny_cache).labels == -1).all()
    test = data.load_split("test", cache_dir=tiny_cache)
    assert test.files[:3] == ["val_0.JPEG", "val_1.JPEG", "val_2.JPEG"]  # natural order
    assert np.bincount(test.labels).tolist() == [10, 10, 10, 10]


def test_labels_and_pixels_match_the_files(make_archive, tmp_path) -> None:
    root = make_archive(zipped=False)
    cache = data.prepare(root, tmp_path / "cache", progress=False)
    wnids = (root / "wnids.txt").read_text().split()
    annotated = {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        file, wnid = line.split("\t")[:2]
        annotated[file] = wnids.index(wnid)
    test = data.load_split("test", cache_dir=cache)
    assert [annotated[f] for f in test.files] == test.labels.tolist()
    assert test.labels.tolist() != sorted(test.labels.tolist())  # shuffled: order tells nothing
    for i in (0, 5, len(test.files) - 1):
        reference = pil_rgb((root / "val" / "images" / test.files[i]).read_bytes())
        assert np.array_equal(test.images[i], reference)
    train = data.load_split("train", cache_dir=cache)
    assert [wnids[label] for label in train.labels] == [f.split("_")[0] for f in train.files]
    first = root / "train" / wnids[0] / "images" / train.files[0]
    assert np.array_equal(train.images[0], pil_rgb(first.read_bytes()))
    challenge = data.load_split("challenge", cache_dir=cache)
    assert challenge.files == [f"test_{i}.JPEG" for i in range(8)]


def test_deflated_zip_reads_like_the_folder(make_archive, tmp_path) -> None:
    root = make_archive(zipped=False)
    deflated = shutil.make_archive(str(tmp_path / "deflated"), "zip", root.parent, root.name)
    with zipfile.ZipFile(deflated) as zf:
        methods = {info.compress_type for info in zf.infolist() if not info.is_dir()}
    assert methods == {zipfile.ZIP_DEFLATED}
    from_zip = data.prepare(deflated, tmp_path / "zip_cache", progress=False)
    from_folder = data.prepare(root, tmp_path / "folder_cache", progress=False)
    for name in data.SPLITS:
        a, b = (data.load_split(name, cache_dir=c) for c in (from_zip, from_folder))
        assert a.files == b.files and np.array_equal(a.images, b.images)


def cached_train_image(cache: Path, file: str) -> np.ndarray:
    """The cached image of an official train file, wherever the split put it (train or val)."""
    for split in (data.load_split(name, cache_dir=cache) for name in ("train", "val")):
        if file in split.files:
            return split.images[split.files.index(file)]
    raise AssertionError(f"{file} is not in the cache")


def test_grayscale_and_cmyk_become_rgb(make_archive, tmp_path) -> None:
    root = make_archive(zipped=False, grayscale_every=2)
    images = root / "train" / "n09000000" / "images"
    cmyk = jpeg_bytes(tiny_image(0, seed=99), "CMYK")
    (images / "n09000000_0.JPEG").write_bytes(cmyk)
    cache = data.prepare(root, tmp_path / "cache", progress=False)
    gray_file = images / "n09000000_1.JPEG"  # every 2nd image is saved gray
    assert Image.open(gray_file).mode == "L"
    gray = cached_train_image(cache, gray_file.name)
    assert gray.shape == (64, 64, 3)
    assert (gray == np.asarray(Image.open(gray_file))[..., None]).all()
    assert np.array_equal(cached_train_image(cache, "n09000000_0.JPEG"), pil_rgb(cmyk))
    train = data.load_split("train", cache_dir=cache)
    share = np.mean([(image == image[..., :1]).all() for image in train.images])
    assert 0.4 < share < 0.6
    train_row = data.data_info(cache_dir=cache).splitlines()[4].split()
    assert train_row[0] == "train" and train_row[3] == f"{100 * share:.1f}%"


def test_split_summary_reads_the_cache(tiny_cache, tmp_path) -> None:
    table = data.split_summary(tiny_cache)
    assert list(table.index) == list(data.SPLITS)
    for name in data.SPLITS:
        split = data.load_split(name, cache_dir=tiny_cache)
        gray = np.mean([(image == image[..., :1]).all() for image in split.images])
        assert table.loc[name, "images"] == len(split.labels)
        assert table.loc[name, "grayscale_%"] == pytest.approx(100 * gray)
    assert table["classes"].tolist() == [4, 4, 4, 0]  # challenge is unlabeled
    assert 5 < table.loc["train", "grayscale_%"] < 25  # the fixture makes 1 image in 7 gray
    with pytest.raises(data.DataError, match="no cache built"):
        data.split_summary(tmp_path)


# ----------------------------------------------------------------------------- splits
def test_val_holds_out_a_tenth_of_each_class_stably(tiny_archive, tiny_cache, tmp_path) -> None:
    train = data.load_split("train", cache_dir=tiny_cache)
    val = data.load_split("val", cache_dir=tiny_cache)
    assert not set(train.files) & set(val.files)
    assert np.bincount(val.labels).tolist() == [6, 6, 6, 6]
    assert np.bincount(train.labels).tolist() == [54, 54, 54, 54]
    held = [int(f.split("_")[1].split(".")[0]) for f in val.files]
    assert held != [i for i in range(6)] * 4  # chosen at random, not the first files
    again = data.prepare(tiny_archive, tmp_path / "again", progress=False)
    assert data.load_split("val", cache_dir=again).files == val.files
    assert np.array_equal(data.load_split("val", cache_dir=again).images, val.images)


def test_subsets(tiny_cache) -> None:
    full = data.load_split("train", cache_dir=tiny_cache)
    two = data.load_split("train", cache_dir=tiny_cache, classes=2)
    assert two.wnids == full.wnids[:2] and two.names == full.names[:2]
    assert len(two.labels) == 108 and set(two.labels.tolist()) == {0, 1}
    assert isinstance(two.images, np.memmap)  # contiguous: still memory-mapped
    chosen = data.load_split("train", cache_dir=tiny_cache, classes=[full.wnids[3], full.wnids[1]])
    assert chosen.wnids == [full.wnids[3], full.wnids[1]]
    assert [chosen.wnids[label] for label in chosen.labels] == [f[:9] for f in chosen.files]
    assert sorted(set(chosen.labels.tolist())) == [0, 1]
    few = data.load_split("train", cache_dir=tiny_cache, classes=3, per_class=5)
    assert np.bincount(few.labels).tolist() == [5, 5, 5]
    firsts = [f for f, label in zip(full.files, full.labels, strict=True) if label == 2][:5]
    assert [f for f, label in zip(few.files, few.labels, strict=True) if label == 2] == firsts
    index = full.files.index(few.files[-1])
    assert np.array_equal(few.images[-1], full.images[index])
    test = data.load_split("test", cache_dir=tiny_cache, classes=[full.wnids[2]], per_class=4)
    assert test.labels.tolist() == [0] * 4 and test.wnids == [full.wnids[2]]
    challenge = data.load_split("challenge", cache_dir=tiny_cache, classes=2, per_class=3)
    assert challenge.wnids == full.wnids[:2] and challenge.labels.tolist() == [-1] * 3
    assert data.load_split("train", cache_dir=tiny_cache, classes=0).files == full.files  # all
    with pytest.raises(ValueError, match="unknown classes"):
        data.load_split("train", cache_dir=tiny_cache, classes=["n123"])
    with pytest.raises(ValueError, match="classes must be in 1..4"):
        data.load_split("train", cache_dir=tiny_cache, classes=5)
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_split("training", cache_dir=tiny_cache)


# ----------------------------------------------------------------------------- caching
def test_second_prepare_reuses_the_cache(tiny_archive, tiny_cache, monkeypatch) -> None:
    def no_build(*args) -> None:
        raise AssertionError("rebuilt a valid cache")

    monkeypatch.setattr(data, "_build", no_build)
    assert data.prepare(tiny_archive, tiny_cache) == tiny_cache
    monkeypatch.setenv("TINY_IMAGENET", "/nowhere.zip")  # no source given: the cache as it is
    assert data.prepare(None, tiny_cache) == tiny_cache
    assert len(data.load_split("val", cache_dir=tiny_cache).files) == 24


@pytest.mark.parametrize("zipped", [True, False])
def test_changed_archive_rebuilds(make_archive, tmp_path, zipped) -> None:
    small = {"classes": 2, "train_per_class": 10, "zipped": zipped}
    source = make_archive(tmp_path / "src", **small)
    cache = data.prepare(source, tmp_path / "cache", progress=False)
    assert len(data.load_split("challenge", cache_dir=cache).files) == 8
    (tmp_path / "src").rename(tmp_path / "old")
    assert make_archive(tmp_path / "src", test_images=5, **small) == source
    # No source given: the cache notices that the archive it came from changed.
    assert len(data.load_split("challenge", cache_dir=cache).files) == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache.")] == [".cache.lock"]


def test_interrupted_build_leaves_no_cache(tiny_archive, tmp_path, monkeypatch) -> None:
    class CtrlC(data.tqdm):
        def update(self, n: int = 1) -> None:
            raise KeyboardInterrupt

    cache = tmp_path / "cache"
    monkeypatch.setattr(data, "tqdm", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        data.prepare(tiny_archive, cache, progress=False)
    assert_no_cache(cache)
    monkeypatch.undo()
    stale = tmp_path / ".cache.building-1"  # as left by a build killed outright
    stale.mkdir()
    (stale / "train_images.npy").write_bytes(b"partial")
    data.prepare(tiny_archive, cache, progress=False)
    assert (cache / "meta.json").exists() and not stale.exists()


def test_failed_rebuild_keeps_the_old_cache(make_archive, tmp_path) -> None:
    archive = make_archive(tmp_path / "src")
    cache = data.prepare(archive, tmp_path / "cache", progress=False)
    archive.write_bytes(archive.read_bytes()[:1000])  # the archive changes, and breaks
    with pytest.raises(data.DataError, match="not a readable zip file"):
        data.prepare(archive, cache, progress=False)
    assert (cache / "meta.json").exists() and len(np.load(cache / "test_labels.npy")) == 40
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name or ".old-" in p.name]


def test_refuses_to_overwrite_a_foreign_folder(tiny_archive, tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(data.DataError, match="not a cache folder"):
        data.prepare(tiny_archive, tmp_path, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_data_info(tiny_archive, tmp_path) -> None:
    cache = tmp_path / "cache"
    assert "not built" in data.data_info(tiny_archive, cache)
    data.prepare(tiny_archive, cache, progress=False)
    info = data.data_info(cache_dir=cache)
    assert str(tiny_archive) in info and str(cache) in info and "ready" in info
    rows = {line.split()[0]: line.split()[1:3] for line in info.splitlines()[4:8]}
    assert rows == {
        "train": ["216", "4"],
        "val": ["24", "4"],
        "test": ["40", "4"],
        "challenge": ["8", "-"],
    }


# ----------------------------------------------------------------------------- bad input
def corrupt_member(archive: Path, member: str) -> None:
    """Flip one byte inside a stored member's data, so its CRC no longer matches."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    raw = bytearray(archive.read_bytes())
    start = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[start + 26 : start + 30])
    raw[start + 30 + name_len + extra_len + 100] ^= 0xFF  # local header, then data
    archive.write_bytes(bytes(raw))


# Each damage function breaks a data root in one way and returns the error it must produce.
def first_train_image(root: Path) -> Path:
    wnid = (root / "wnids.txt").read_text().split()[0]
    return root / "train" / wnid / "images" / f"{wnid}_0.JPEG"


def drop_wnids(root: Path) -> str:
    (root / "wnids.txt").unlink()
    return "missing .*wnids.txt"


def drop_annotations(root: Path) -> str:
    (root / "val" / "val_annotations.txt").unlink()
    return "missing .*val/val_annotations.txt"


def annotate_missing_file(root: Path) -> str:
    (root / "val" / "images" / "val_3.JPEG").unlink()
    return r"val_annotations.txt line \d+: names val/images/val_3.JPEG, which does not exist"


def garbage_jpeg(root: Path) -> str:
    first_train_image(root).write_bytes(b"\xff\xd8 this is no JPEG")
    return r"train/n09000000/images/n09000000_0.JPEG: unreadable JPEG \("


def wrong_size(root: Path) -> str:
    first_train_image(root).write_bytes(jpeg_bytes(np.zeros((32, 48, 3), np.uint8)))
    return "n09000000_0.JPEG: image is 48x32, expected 64x64"


def empty_class(root: Path) -> str:
    for image in first_train_image(root).parent.iterdir():
        image.unlink()
    return "train/n09000000/images has no images"


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """A small unzipped archive (2 classes, 8 val images) that each bad-input case copies."""
    folder = tmp_path_factory.mktemp("small_archive")
    return write_archive(folder, classes=2, train_per_class=10, val_per_class=4, zipped=False)


@pytest.mark.parametrize(
    "damage",
    [drop_wnids, drop_annotations, annotate_missing_file, garbage_jpeg, wrong_size, empty_class],
)
@pytest.mark.parametrize("zipped", [True, False])
def test_bad_archive_gives_one_clear_error(small_root, tmp_path, damage, zipped) -> None:
    root = Path(shutil.copytree(small_root, tmp_path / "src" / small_root.name))
    problem = damage(root)
    source = zip_folder(root, tmp_path / "bad.zip") if zipped else root
    cache = tmp_path / "cache"
    with pytest.raises(data.DataError, match=problem) as error:
        data.prepare(source, cache, progress=False)
    assert str(source) in str(error.value)  # names the archive as well as the file
    assert_no_cache(cache)
    data.prepare(small_root, cache, progress=False)  # the same cache folder works afterwards
    assert len(data.load_split("test", cache_dir=cache).files) == 8


def test_broken_zip_files(make_archive, tmp_path) -> None:
    archive = make_archive()
    cache = tmp_path / "cache"
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"hello, this is text")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    for path in (not_zip, truncated):
        with pytest.raises(data.DataError, match=f"{path.name}: not a readable zip file"):
            data.prepare(path, cache, progress=False)
    member = "tiny-imagenet-200/train/n09000002/images/n09000002_7.JPEG"
    corrupt_member(archive, member)
    with pytest.raises(data.DataError, match=f"{member}: corrupt zip member .*CRC"):
        data.prepare(archive, cache, progress=False)
    assert_no_cache(cache)


# ----------------------------------------------------------------------------- stats
def test_stats_and_normalizer(tiny_cache) -> None:
    stats = data.load_stats(tiny_cache)
    train = np.asarray(data.load_split("train", cache_dir=tiny_cache).images, np.float64)
    assert np.allclose(stats["mean_image"], train.mean(axis=0), atol=1e-3)
    assert np.allclose(stats["mean_channel"], train.mean(axis=(0, 1, 2)), atol=1e-3)
    assert np.allclose(stats["std_channel"], train.std(axis=(0, 1, 2)), atol=1e-3)
    mean, scale = data.normalizer(stats, "pixel")
    assert mean.shape == (1, 3, 64, 64) and scale.shape == (1, 3, 1, 1)
    assert torch.equal(mean[0, :, 5, 7], torch.from_numpy(stats["mean_image"][5, 7]))
    mean, scale = data.normalizer(stats, "channel")
    assert mean.shape == (1, 3, 1, 1) and mean.dtype == scale.dtype == torch.float32
    assert torch.equal(scale.flatten(), torch.from_numpy(stats["std_channel"]))
    with pytest.raises(ValueError, match="'pixel' or 'channel'"):
        data.normalizer(stats, "zca")


# ----------------------------------------------------------------------------- batches
@pytest.fixture
def small() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 random uint8 images, their labels, and a channel (mean, scale)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (10, 64, 64, 3), dtype=torch.uint8, generator=generator)
    mean = torch.tensor([100.0, 110.0, 120.0]).view(1, 3, 1, 1)
    scale = torch.tensor([50.0, 60.0, 70.0]).view(1, 3, 1, 1)
    return images, torch.arange(10), mean, scale


def collect(small, augment: str, seed: int | None = 0, **options) -> tuple[torch.Tensor, ...]:
    images, labels, mean, scale = small
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    out = list(
        data.batches(
            images,
            labels,
            4,
            mean=mean,
            scale=scale,
            augment=augment,
            generator=generator,
            **options,
        )
    )
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out]), out


def as_uint8(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Undo the normalization: back to uint8 NHWC."""
    return (x * scale + mean).round().to(torch.uint8).permute(0, 2, 3, 1)


def test_batches_shapes_layout_and_normalization(small) -> None:
    images, labels, mean, scale = small
    x, y, out = collect(small, "none")
    assert [len(b) for b, _ in out] == [4, 4, 2]
    assert x.dtype == torch.float32 and x.shape == (10, 3, 64, 64)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b, _ in out)
    assert torch.equal(y, labels)
    assert torch.equal(as_uint8(x, mean, scale), images)
    assert torch.allclose(x[:, 1], (images[..., 1].float() - 110) / 60, atol=1e-5)
    _, _, dropped = collect(small, "none", drop_last=True)
    assert [len(b) for b, _ in dropped] == [4, 4]
    with pytest.raises(ValueError, match="augment must be one of"):
        collect(small, "mixup")


def test_batches_shuffle_is_seeded(small) -> None:
    images, _, mean, scale = small
    x, y, _ = collect(small, "none", shuffle=True)
    assert sorted(y.tolist()) == list(range(10)) and y.tolist() != list(range(10))
    assert torch.equal(as_uint8(x, mean, scale), images[y])  # labels travel with their images
    assert torch.equal(collect(small, "none", shuffle=True)[1], y)
    assert not torch.equal(collect(small, "none", seed=1, shuffle=True)[1], y)


def test_flip_really_flips(small) -> None:
    images, _, mean, scale = small
    x, y, _ = collect(small, "flip")
    got = as_uint8(x, mean, scale)
    flipped = torch.tensor([torch.equal(g, images[i].flip(1)) for g, i in zip(got, y, strict=True)])
    kept = torch.tensor([torch.equal(g, images[i]) for g, i in zip(got, y, strict=True)])
    assert (flipped ^ kept).all() and flipped.any() and kept.any()


def test_crop_flip_shifts_within_zero_padding(small) -> None:
    images, _, mean, scale = small
    x, y, out = collect(small, "crop_flip")
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b, _ in out)
    got = as_uint8(x, mean, scale)
    padded = torch.nn.functional.pad(images, (0, 0, 4, 4, 4, 4))
    found = []
    for g, i in zip(got, y, strict=True):
        crops = {
            (dy, dx, flip): padded[i, dy : dy + 64, dx : dx + 64]
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
        }
        matches = [
            key for key, crop in crops.items() if torch.equal(g, crop.flip(1) if key[2] else crop)
        ]
        assert len(matches) == 1
        found.append(matches[0])
    assert len({(dy, dx) for dy, dx, _ in found}) > 3 and {f for *_, f in found} == {False, True}
    again = collect(small, "crop_flip")[0]
    assert torch.equal(again, x)  # same seed, same crops
    assert not torch.equal(collect(small, "crop_flip", seed=5)[0], x)


def test_rrc_crops_inside_the_image_at_the_epochs_side(small) -> None:
    images, _, mean, scale = small
    x, y, out = collect(small, "rrc", size=40, crop_scale=0.25)
    assert x.shape == (10, 3, 40, 40)
    assert all(b.is_contiguous(memory_format=torch.channels_last) for b, _ in out)
    assert torch.equal(collect(small, "rrc", size=40, crop_scale=0.25)[0], x)  # seeded
    assert not torch.equal(collect(small, "rrc", seed=5, size=40, crop_scale=0.25)[0], x)
    # a crop never reaches past the image: every output pixel lies in its image's value range
    normalized = (images.permute(0, 3, 1, 2).float() - mean) / scale
    low, high = normalized.amin((2, 3))[y], normalized.amax((2, 3))[y]
    assert (x.amin((2, 3)) >= low - 1e-4).all() and (x.amax((2, 3)) <= high + 1e-4).all()
    boxes = data.crop_boxes(
        1000, 0.25, {"generator": torch.Generator().manual_seed(0), "device": "cpu"}
    )
    cx, cy, w, h = boxes.T
    area = w * h
    assert (cx - w / 2 >= 0).all() and (cx + w / 2 <= 1 + 1e-6).all() and (cy - h / 2 >= 0).all()
    assert area.min() >= 0.25 * 0.74 and area.max() <= 1 and area.mean() > 0.5
    assert ((w / h) - 1).abs().max() < 4 / 3


def test_a_whole_image_box_is_the_image() -> None:
    x = torch.rand(2, 3, 64, 64)
    whole = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    assert torch.allclose(data._resized_crop(x, whole, 64), x, atol=1e-5)
    # the top-left quarter at 32 px lands each output pixel on an input pixel's centre
    quarter = torch.tensor([[0.25, 0.25, 0.5, 0.5]] * 2)
    assert torch.allclose(data._resized_crop(x, quarter, 32), x[..., :32, :32], atol=1e-5)


def test_batches_leave_the_generator_alone_without_augmentation(small) -> None:
    images, labels, mean, scale = small
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    list(data.batches(images, labels, 4, mean=mean, scale=scale, generator=generator))
    assert torch.equal(generator.get_state(), state)


# ----------------------------------------------------------------------------- real data
@pytest.mark.real_data
def test_real_archive(real_archive, real_cache) -> None:
    counts = {"train": 90_000, "val": 10_000, "test": 10_000, "challenge": 10_000}
    splits = {name: data.load_split(name, cache_dir=real_cache) for name in data.SPLITS}
    assert {name: len(s.labels) for name, s in splits.items()} == counts
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert len(train.wnids) == 200 and np.bincount(train.labels).tolist() == [450] * 200
    assert np.bincount(val.labels).tolist() == [50] * 200
    assert np.bincount(test.labels).tolist() == [50] * 200
    assert train.names[train.wnids.index("n01443537")] == "goldfish"
    assert train.names[train.wnids.index("n02123045")] == "tabby"
    with zipfile.ZipFile(real_archive) as zf:
        root = "tiny-imagenet-200/"
        lines = zf.read(root + "val/val_annotations.txt").decode().splitlines()
        for line in lines[:: len(lines) // 20]:
            file, wnid = line.split("\t")[:2]
            assert test.wnids[test.labels[test.files.index(file)]] == wnid
        for split, folder in ((test, "val/images/"), (train, None)):
            file = split.files[1234]
            path = folder + file if folder else f"train/{file.split('_')[0]}/images/{file}"
            assert np.array_equal(split.images[1234], pil_rgb(zf.read(root + path)))
    stats = data.load_stats(real_cache)
    assert stats["mean_image"].shape == (64, 64, 3)
    assert np.all((stats["mean_channel"] > 90) & (stats["mean_channel"] < 130))
    assert np.all((stats["std_channel"] > 50) & (stats["std_channel"] < 80))


def test_cache_decoding_is_pil_without_a_deprecation_warning() -> None:
    # torchvision.io's decoders warn since torchvision 0.29; the cache's decode must not
    blobs = [jpeg_bytes(tiny_image(i, seed=i), mode) for i, mode in enumerate(["RGB", "L", "CMYK"])]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images = data._decode(blobs, ["rgb.JPEG", "gray.JPEG", "cmyk.JPEG"], "x.zip")
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    for image, blob in zip(images, blobs, strict=True):
        np.testing.assert_array_equal(image, pil_rgb(blob))
