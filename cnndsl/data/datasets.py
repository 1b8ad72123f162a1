"""Datasets as arrays: `load_dataset(source, data_dir=None)` -> `Dataset` (numpy arrays, NHWC). Which sources
exist, and which go through the input pipeline instead, is `cnndsl.data.sources`.

Sources:
    digits                 the 8x8 handwritten digits shipped with cnndsl, a fixed 1,438 / 359 train/test split
    mnist, fashion-mnist   the official IDX files (gzip), 60,000 / 10,000
    cifar10, cifar100      the official *binary* archives (no pickle is ever read), 50,000 / 10,000
    npz:PATH               arrays x, y and optionally x_val, y_val, x_test, y_test (else a fixed 20% is the test split)
    folder:PATH            one subfolder of PNG/JPEG images per class (or PATH/train, PATH/test, PATH/val so)
    shapes, masks:PATH     per-pixel labels (segmentation): cnndsl.data.segmentation, dispatched by cnndsl.data.loading
    records:DIR            a folder written by `cnndsl data pack` (ArrayRecord shards; see cnndsl.data.records)
    synthetic[:N]          N random 8-bit images of the spec's input shape with random labels of its classes
                           (default: as many as fit 64 MB, at most 10,000): throughput without I/O

Every source has three splits: train, val (model selection) and test (reported only). A source without
a validation split of its own gets a fixed 10% (`val_fraction`) of its training images.

Official files are looked up in `data_dir`, then in the cache (`$CNNDSL_CACHE`, default
~/.cache/cnndsl), and downloaded into the cache when absent: to a `.part` file, checked against the
published MD5, then renamed, so a broken download never leaves a file that looks complete.
`$CNNDSL_DATA_MIRROR` replaces the download base URL (a local mirror; the tests serve one on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import stat
import struct
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnndsl.data.errors import DataError
from cnndsl.data.examples import FileExamples
from cnndsl.data.images import ImageError, decode
from cnndsl.lang.outputs import cache_dir

TEST_FRACTION = 0.2  # held out when a source has no test split of its own
VAL_FRACTION = 0.1  # of the training data, held out for validation when a source has no validation split
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Dataset:
    """Images as (N, H, W, C) arrays with integer labels, in three splits: train (fitting), val (model
    selection: the best checkpoint) and test (reported, never used to choose). `scale` is the pixel value
    that means full intensity in the stored units (255 for 8-bit images, 16 for the digits): what an
    image file's 255 becomes, and what training divides by before normalizing."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    scale: float
    classes: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class Remote:
    """An official file: its name, where it is published, and its published MD5."""

    name: str
    url: str
    md5: str


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_TORONTO = "https://www.cs.toronto.edu/~kriz/"
#: The official files of each downloadable dataset (names, URLs and MD5s as their publishers give them).
REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": (Remote("train-images-idx3-ubyte.gz", _MNIST, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              Remote("train-labels-idx1-ubyte.gz", _MNIST, "d53e105ee54ea40749a09fcbcd1e9432"),
              Remote("t10k-images-idx3-ubyte.gz", _MNIST, "9fb629c4189551a2d022fa330f9573f3"),
              Remote("t10k-labels-idx1-ubyte.gz", _MNIST, "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion-mnist": (Remote("train-images-idx3-ubyte.gz", _FASHION, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                      Remote("train-labels-idx1-ubyte.gz", _FASHION, "25c81989df183df01b3e8a0aad5dffbe"),
                      Remote("t10k-images-idx3-ubyte.gz", _FASHION, "bef4ecab320f06d8554ea6380940ec79"),
                      Remote("t10k-labels-idx1-ubyte.gz", _FASHION, "bb300cfdad3c16e7a12a480ee83cd310")),
    "cifar10": (Remote("cifar-10-binary.tar.gz", _TORONTO, "c32a1d4ab5d03f1284b67883e8d87530"),),
    "cifar100": (Remote("cifar-100-binary.tar.gz", _TORONTO, "03b5dce01913d631647c71ecec9e9cb8"),),
}
#: The image shape (H, W, C) and class count of each built-in dataset, as published.
BUILTIN_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "digits": ((8, 8, 1), 10), "mnist": ((28, 28, 1), 10), "fashion-mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
    "shapes": ((32, 32, 3), 4),  # per-pixel labels: cnndsl.data.segmentation
}
SYNTHETIC_BYTES = 64 << 20  # the default synthetic dataset's size
SYNTHETIC_MAX = 1_000_000  # images


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(dataset: str, remote: Remote, data_dir: Path | None, download: bool = True,
          progress: Callable[[str], None] | None = None) -> Path:
    """The local path of an official file: found in `data_dir` or the cache, else downloaded and verified."""
    for folder in ([data_dir] if data_dir else []) + [cache_dir() / dataset]:
        candidate = folder / remote.name
        if candidate.is_file():
            found = _md5(candidate)
            if found != remote.md5:
                raise DataError(f"{candidate}: checksum mismatch (MD5 {found}, the published file has "
                                f"{remote.md5}); the file is corrupt or not the official one: delete it to download "
                                "it again")
            return candidate
    if not download:
        raise DataError(f"{remote.name} of {dataset} is not in {data_dir or cache_dir() / dataset}; "
                        "put the official file there or allow the download")
    target_dir = cache_dir() / dataset
    target_dir.mkdir(parents=True, exist_ok=True)
    target, part = target_dir / remote.name, target_dir / (remote.name + ".part")
    url = (os.environ.get("CNNDSL_DATA_MIRROR") or remote.url).rstrip("/") + "/" + remote.name
    if progress:
        progress(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:  # noqa: S310
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DataError(f"cannot download {url}: {reason}; without network access, put {remote.name} into a "
                        f"folder and pass --data-dir FOLDER") from None
    got = _md5(part)
    if got != remote.md5:
        part.unlink()
        raise DataError(f"{url}: checksum mismatch after download (MD5 {got}, expected {remote.md5}); "
                        "the download was corrupted or the mirror serves another file; nothing was kept")
    part.replace(target)
    return target


# ---- readers for the official formats ----------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX array (MNIST's format), gzip-compressed or not; uint8 data only, as the datasets use."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: not a readable gzip file ({err}); it is truncated or corrupt") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    kind, ndim = raw[2], raw[3]
    if kind != 0x08:
        raise DataError(f"{path}: IDX element type 0x{kind:02x} is not unsigned bytes (0x08)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw):,} bytes, the header promises {expected:,} for shape "
                        f"{'x'.join(map(str, dims))}; the file is truncated or corrupt")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _checked_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: label {int(labels.min())} is negative; labels are class numbers 0, 1, 2, ...")
    if labels.size and labels.max() >= num_classes:
        raise DataError(f"{where}: label {int(labels.max())} is out of range for {num_classes} classes "
                        f"(0..{num_classes - 1})")
    return labels.astype(np.int32)


def _idx_dataset(name: str, data_dir: Path | None, download: bool, progress: Callable[[str], None] | None,
                 ) -> Dataset:
    paths = [fetch(name, r, data_dir, download, progress) for r in REMOTES[name]]
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for images, labels, (pi, pl) in ((x_train, y_train, paths[:2]), (x_test, y_test, paths[2:])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{pi} and {pl}: {len(images)} images of shape {images.shape[1:]} but "
                            f"{len(labels)} labels")
        _checked_labels(labels, 10, str(pl))
    x_train = x_train[..., None]
    return Dataset(name, x_train, y_train.astype(np.int32), *no_val(x_train), x_test[..., None],
                   y_test.astype(np.int32), 10, 255.0)


def _cifar_dataset(name: str, data_dir: Path | None, download: bool,
                   progress: Callable[[str], None] | None) -> Dataset:
    (remote,) = REMOTES[name]
    archive = fetch(name, remote, data_dir, download, progress)
    if name == "cifar10":
        folder, train, test, label_bytes, classes = "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in
                                                                              range(1, 6)], ["test_batch.bin"], 1, 10
    else:
        folder, train, test, label_bytes, classes = "cifar-100-binary", ["train.bin"], ["test.bin"], 2, 100
    record = label_bytes + 32 * 32 * 3
    try:
        with tarfile.open(archive, "r:gz") as tar:
            def read(member: str) -> tuple[np.ndarray, np.ndarray]:
                try:
                    handle = tar.extractfile(f"{folder}/{member}")
                except KeyError:
                    handle = None
                if handle is None:
                    raise DataError(f"{archive}: {folder}/{member} is missing from the archive")
                raw = handle.read()
                if len(raw) % record:
                    raise DataError(f"{archive}: {member} has {len(raw):,} bytes, not a whole number of "
                                    f"{record}-byte records; the archive is truncated or corrupt")
                rows = np.frombuffer(raw, np.uint8).reshape(-1, record)
                labels = _checked_labels(rows[:, label_bytes - 1].astype(np.int32), classes, f"{archive}: {member}")
                images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planar CHW -> HWC
                return images, labels

            parts_train = [read(m) for m in train]
            parts_test = [read(m) for m in test]
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{archive}: not a readable .tar.gz archive ({err}); it is truncated or corrupt") from None
    x_train = np.concatenate([p[0] for p in parts_train])
    y_train = np.concatenate([p[1] for p in parts_train])
    x_test = np.concatenate([p[0] for p in parts_test])
    y_test = np.concatenate([p[1] for p in parts_test])
    x_train = np.ascontiguousarray(x_train)
    return Dataset(name, x_train, y_train, *no_val(x_train), np.ascontiguousarray(x_test), y_test, classes, 255.0)


def _digits() -> Dataset:
    """The 8x8 digits shipped with cnndsl (cnndsl/builtin/README.md), with their fixed test split."""
    from importlib import resources

    with resources.files("cnndsl").joinpath("builtin/digits.npz").open("rb") as stream, np.load(stream) as data:
        x = data["images"].astype(np.float32)[..., None]  # values 0..16
        y = data["labels"].astype(np.int32)
    x, y, x_test, y_test = held_out(x, y, TEST_FRACTION)  # the fixed split, the same on every machine
    return Dataset("digits", x, y, *no_val(x), x_test, y_test, 10, 16.0, tuple(map(str, range(10))))


def held_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(kept x, kept y, held-out x, held-out y): a fixed `fraction` of the examples, chosen by a seeded
    permutation, so the split is the same on every machine and every run."""
    order = np.random.default_rng(seed).permutation(len(x))
    cut = min(len(x) - 1, max(1, round(len(x) * fraction))) if fraction > 0 and len(x) > 1 else 0
    return x[order[cut:]], y[order[cut:]], x[order[:cut]], y[order[:cut]]


def no_val(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An empty validation split for images like `x` (the source has none of its own)."""
    return x[:0], np.zeros((0,), np.int32)


def white_level(x: np.ndarray) -> float:
    """The pixel value meaning full intensity, from the dtype and range of the training images: 255 for
    8-bit data (and float data in 0..255), 1 for float data in 0..1, 65535 for 16-bit data; otherwise
    the largest value seen."""
    top = float(x.max()) if x.size else 0.0
    if np.issubdtype(x.dtype, np.integer):
        return 255.0 if top <= 255 else (65535.0 if top <= 65535 else top)
    return 1.0 if top <= 1.0 else (255.0 if top <= 255.0 else top)


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4) or x.shape[0] == 0:
        raise DataError(f"{where}: expected images as an array N x H x W (x C), got shape "
                        f"{'x'.join(map(str, x.shape))}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}")
    return x


def regular_file(path: Path) -> Path:
    """`path` if it is a regular file; a DataError otherwise (a pipe would block the reader forever, a
    device never end, a folder is not an image)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a pipe, socket or device)"
        raise DataError(f"{path}: {kind}; give a file")
    return path


#: The most data one .npy image array given to `predict` or `cnndsl run` may hold (checked from its header,
#: before anything is allocated): a 7,000 x 7,000 RGB photo in uint8 is 147 MB, a batch of 400 224x224x3
#: float32 images 241 MB.
MAX_NPY_BYTES = 256 << 20


def npy_header(stream: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from an open .npy file's header, leaving the stream at its data; a
    ValueError for a file that is not one (the header itself is read up to 10,000 bytes)."""
    version = np.lib.format.read_magic(stream)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(stream, max_header_size=10_000)


def read_npy(path: Path) -> np.ndarray:
    """An .npy array of numbers (never unpickled) of at most MAX_NPY_BYTES, whose images have at most
    MAX_IMAGE_PIXELS pixels, both checked from its header; a DataError naming the file otherwise."""
    from cnndsl.data.images import MAX_IMAGE_PIXELS

    regular_file(path)
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = npy_header(f)
            start = f.tell()
            size = os.fstat(f.fileno()).st_size
            if dtype.hasobject or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
                raise DataError(f"{path}: the images must be numbers, got an array of {dtype}")
            count = int(np.prod(shape, dtype=object))
            if count * dtype.itemsize > MAX_NPY_BYTES:
                raise DataError(f"{path}: its header declares {'x'.join(map(str, shape))} of {dtype} "
                                f"({count * dtype.itemsize:,} bytes), more than cnndsl reads from one .npy "
                                f"({MAX_NPY_BYTES:,}); resize the images or split the batch")
            height, width = (shape[-3:-1] if len(shape) >= 3 else shape) if len(shape) >= 2 else (1, 1)
            if height * width > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: images of {'x'.join(map(str, shape))} have more pixels than cnndsl reads "
                                f"({MAX_IMAGE_PIXELS:,}); resize them first")
            if size - start < count * dtype.itemsize:
                raise DataError(f"{path}: the file is truncated ({size - start:,} bytes of data, its header "
                                f"declares {count * dtype.itemsize:,})")
            array = np.fromfile(f, dtype=dtype, count=count)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, TypeError) as err:
        raise DataError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from None
    return array.reshape(shape, order="F" if fortran else "C")


def check_finite(images: np.ndarray, where: str) -> None:
    """A DataError naming `where` if float images hold NaN or infinity (they would train to NaN)."""
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        bad = np.argwhere(~np.isfinite(images))[0]
        raise DataError(f"{where}: NaN or infinite pixel values (the first at index {tuple(int(i) for i in bad)})")


def _npz(path: Path) -> Dataset:
    regular_file(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz archive ({err})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array {' and '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'}); "
                        "an npz dataset holds x, y and optionally x_val, y_val and x_test, y_test")
    pairs = [("x", "y")] + [(f"x_{split}", f"y_{split}") for split in ("val", "test")
                            if f"x_{split}" in arrays and f"y_{split}" in arrays]
    for images_key, labels_key in pairs:
        images, labels = _as_images(arrays[images_key], f"{path}: {images_key}"), arrays[labels_key]
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: {images_key} has {len(images)} images but {labels_key} has shape "
                            f"{labels.shape} and dtype {labels.dtype}; labels must be N integers")
        arrays[images_key] = images
    for images_key, labels_key in pairs:  # before the split: a negative label names its own array
        _checked_labels(arrays[labels_key], np.iinfo(np.int32).max, f"{path}: {labels_key}")
        check_finite(arrays[images_key], f"{path}: {images_key}")
    x, y = arrays["x"], arrays["y"]
    if "x_test" in arrays and "y_test" in arrays:
        x_test, y_test = arrays["x_test"], arrays["y_test"]
    else:
        x, y, x_test, y_test = held_out(x, y, TEST_FRACTION)
    x_val, y_val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays and "y_val" in arrays else no_val(x)
    for name, images in (("x_val", x_val), ("x_test", x_test)):
        if len(images) and images.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x images are {x.shape[1:]}, {name} images {images.shape[1:]}")
    num_classes = int(max(y.max(), y_test.max(), y_val.max(initial=0))) + 1
    y, y_val, y_test = (_checked_labels(labels, num_classes, f"{path}: {name}")
                        for name, labels in (("y", y), ("y_val", y_val), ("y_test", y_test)))
    return Dataset(f"npz:{path}", x, y, x_val, y_val, x_test, y_test, num_classes, white_level(x))


def read_image(path: Path) -> np.ndarray:
    """One PNG/JPEG image as an (H, W, C) uint8 array (C = 1 for grayscale, else 3).

    The size is checked from the header before decoding: empty images and images of more than
    `images.MAX_IMAGE_PIXELS` pixels are a DataError, as is any file Pillow cannot decode."""
    regular_file(path)
    try:
        return decode(path, str(path))
    except ImageError as err:
        raise DataError(str(err)) from None


def _regular(entry: os.DirEntry[str]) -> bool:
    """Whether a folder entry is a regular file (links followed); a link to nowhere or a link loop is not."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _folder_files(root: Path, classes: list[str] | None = None) -> FileExamples:
    """The image files of a folder of class folders (regular files with an image suffix, sorted), labelled by
    the class folders' sorted names (or `classes`, the training split's)."""
    names = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DataError(f"{root}: no class folders; a folder dataset has one subfolder of images per class")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        with os.scandir(folder) if folder.is_dir() else contextlib.nullcontext([]) as entries:
            # regular files only: a pipe named x.jpg would block its reader forever
            files = sorted(e.path for e in entries if Path(e.name).suffix.lower() in IMAGE_SUFFIXES and _regular(e))
        if not files:
            raise DataError(f"{folder}: class {name!r} has no PNG or JPEG images")
        paths += files
        labels += [label] * len(files)
    return FileExamples(paths, np.asarray(labels, np.int32), tuple(names))


def folder_splits(root: Path) -> tuple[FileExamples, FileExamples | None, FileExamples, tuple[str, ...]]:
    """(train, val or None, test, classes) of a folder dataset: a folder of class folders (a fixed 20% held out
    as the test split), or `train/` with `test/` and optionally `val/`. `train/` with `val/` and no `test/` is
    ImageNet's layout, whose `val/` is the evaluation set: it is the test split."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    try:
        return _folder_splits(root)
    except OSError as err:  # a folder it may not list (/proc), a link to nowhere, a file gone while listing
        where = err.filename or root
        raise DataError(f"{where}: cannot be read while listing the dataset ({err.strerror or err}); give a "
                        "folder of class folders of images you may read") from None


def _folder_splits(root: Path) -> tuple[FileExamples, FileExamples | None, FileExamples, tuple[str, ...]]:
    splits = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in splits and ("test" in splits or "val" in splits):
        train = _folder_files(splits["train"])
        names = list(train.classes)
        test = _folder_files(splits.get("test", splits.get("val")), names)
        val = _folder_files(splits["val"], names) if "test" in splits and "val" in splits else None
        return train, val, test, tuple(names)
    everything = _folder_files(root)
    kept, _, held, _ = held_out(np.arange(len(everything)), everything.labels, TEST_FRACTION)
    return everything.subset(kept), None, everything.subset(held), everything.classes


def _decoded_split(examples: FileExamples) -> tuple[np.ndarray, np.ndarray]:
    images, first = [], None
    for index in range(len(examples)):
        image = read_image(examples.image(index))
        if first is None:
            first = (examples.name(index), image.shape)
        elif image.shape[:2] != first[1][:2]:
            raise DataError(f"{examples.name(index)}: {image.shape[0]}x{image.shape[1]}, but {first[0]} is "
                            f"{first[1][0]}x{first[1][1]}; the images of a folder dataset must have one size "
                            "(or train with --stream or --augment resized-crop, which crop each image to the input)")
        images.append(image)
    channels = max(i.shape[-1] for i in images)
    stacked = np.stack([np.repeat(i, channels, axis=-1) if i.shape[-1] != channels else i for i in images])
    return stacked, examples.labels


def _folder(root: Path) -> Dataset:
    """A folder dataset decoded into arrays (every image must have one size; see `folder_splits`)."""
    train, val, test, names = folder_splits(root)
    x, y = _decoded_split(train)
    x_test, y_test = _decoded_split(test)
    x_val, y_val = _decoded_split(val) if val is not None else no_val(x)
    for split, images in (("test", x_test), ("val", x_val)):
        if len(images) and images.shape[-1] != x.shape[-1]:
            raise DataError(f"{root}: the train images have {x.shape[-1]} channels, the {split} images "
                            f"{images.shape[-1]}")
    return Dataset(f"folder:{root}", x, y, x_val, y_val, x_test, y_test, len(names), 255.0, tuple(names))


def load_dataset(source: str, data_dir: str | Path | None = None, download: bool = True,
                 progress: Callable[[str], None] | None = None, val_fraction: float = VAL_FRACTION,
                 shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> Dataset:
    """Load a dataset by source name (see the module docstring); raises DataError naming what is wrong.

    A source without a validation split of its own gets one: `val_fraction` of its training images,
    held out by a fixed permutation (the same on every machine), none when it is 0. `shape` (H, W, C) and
    `num_classes` are the network's, which `synthetic` data takes."""
    folder = Path(data_dir) if data_dir else None
    kind, _, rest = source.partition(":")
    if source == "digits":
        data = _digits()
    elif source in ("mnist", "fashion-mnist"):
        data = _idx_dataset(source, folder, download, progress)
    elif source in ("cifar10", "cifar100"):
        data = _cifar_dataset(source, folder, download, progress)
    elif kind == "npz" and rest:
        data = _npz(Path(rest))
    elif kind == "folder" and rest:
        data = _folder(Path(rest))
    elif kind == "synthetic":
        data = _synthetic(rest, shape, num_classes)
    elif kind == "records" and rest:
        raise DataError(f"{source}: records are read through the input pipeline (cnndsl.data.pipeline.open_images), "
                        "not loaded as arrays")
    else:
        raise ValueError(f"unknown data source {source!r}")
    return with_validation(data, val_fraction)


def with_validation(data: Dataset, val_fraction: float) -> Dataset:
    """`data` with a validation split: its own, or `val_fraction` of its training examples held out by a fixed
    permutation (none when it is 0)."""
    if len(data.x_val) or not val_fraction:
        return data
    x, y, x_val, y_val = held_out(data.x_train, data.y_train, val_fraction, seed=1)
    return dataclasses.replace(data, x_train=x, y_train=y, x_val=x_val, y_val=y_val)


def synthetic_count(text: str, shape: tuple[int, ...]) -> int:
    """The N of `synthetic:N` (a DataError unless a whole number from 2 to SYNTHETIC_MAX), or the default."""
    if not text:
        return int(max(256, min(10_000, SYNTHETIC_BYTES // max(1, int(np.prod(shape))))))
    if not text.isdigit() or not 2 <= int(text) <= SYNTHETIC_MAX:
        raise DataError(f"synthetic:{text}: the number of images must be a whole number from 2 to {SYNTHETIC_MAX:,}")
    return int(text)


def _synthetic(count: str, shape: tuple[int, ...] | None, num_classes: int | None) -> Dataset:
    """Random 8-bit images and labels (seeded: the same on every machine and process). The training split
    has N images; the test split a tenth as many (at least one)."""
    if shape is None or num_classes is None:
        raise DataError("synthetic data takes its image shape and classes from the network: train a spec with it")
    n = synthetic_count(count, shape)
    rng = np.random.default_rng(0)
    test = max(1, n // 10)
    x = rng.integers(0, 256, (n + test, *shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, n + test).astype(np.int64)
    empty_x, empty_y = x[:0], y[:0]
    return Dataset(f"synthetic:{n}", x[:n], y[:n], empty_x, empty_y, x[n:], y[n:], num_classes, 255.0,
                   tuple(str(k) for k in range(num_classes)))


def missing_classes(data: Dataset) -> list[str]:
    """The classes that occur in the validation or test split but never in the training split."""
    seen = set(np.unique(data.y_train).tolist())
    others = np.unique(np.concatenate([data.y_val.ravel(), data.y_test.ravel()]))
    absent = sorted(set(others[others < data.num_classes].tolist()) - seen)  # masks' 255 (ignore) is no class
    return [data.classes[c] if c < len(data.classes) else str(c) for c in absent]
