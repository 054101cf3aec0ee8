"""Datasets from a user's path: NumPy files, image folders, CIFAR-10; each checked (finite
values, labels 0..k-1, enough samples) before a trial trains on it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from trainers.dataset import SPLIT_SEED, Dataset, normalized, split


def numpy_file(path: str | Path) -> Dataset:
    """An `.npz` with `x` `(n, C, H, W)`, `(n, C, L)` (1-D) or `(n, features)` (loaded as
    `(n, 1, 1, features)`), finite numbers, and `y` `(n,)` integer labels 0..k-1 (whole floats
    too); anything else is refused with a `ValueError` naming it."""
    path = existing(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            start = file.read(16)
        kind = "a single .npy array" if start.startswith(b"\x93NUMPY") else "not a zip archive"
        raise ValueError(
            f"{path}: {kind} (starts {start!r}); the numpy dataset is an .npz archive of arrays "
            "'x' and 'y' (np.savez(path, x=x, y=y))"
        )
    with np.load(path, allow_pickle=False) as arrays:
        missing = {"x", "y"} - set(arrays.files)
        if missing:
            raise ValueError(f"{path}: needs arrays 'x' and 'y', has {sorted(arrays.files)}")
        x, y = arrays["x"], arrays["y"]
    if x.ndim == 2:
        x = x[:, None, None, :]
    if x.ndim not in (3, 4) or len(x) != len(y):
        raise ValueError(
            f"{path}: x must be (n, C, H, W), (n, C, L) or (n, features) with n = len(y); "
            f"got x {x.shape} and y {y.shape}"
        )
    return split(path.stem, _finite(path, x), _labels(path, y))


def _finite(path: Path, x: np.ndarray) -> np.ndarray:
    """`x` as float32, refused unless it holds finite numbers."""
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{path}: x must hold numbers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # values past float32's range: infinite, refused below
        x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        samples = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        raise ValueError(
            f"{path}: x holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} "
            f"infinite values (in {len(samples)} of {len(x)} samples, first at sample "
            f"{samples[0]}; also as float32, which x is trained in); drop or fill them"
        )
    return x


def _labels(path: Path, y: np.ndarray) -> np.ndarray:
    """`y` as int64, refused unless its labels are whole numbers 0..k-1."""
    whole = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.isfinite(y).all() and (y == np.round(y)).all()
    )
    if not whole:
        shown = ", ".join(map(repr, np.unique(y)[:5].tolist()))
        raise ValueError(
            f"{path}: y must hold whole-number labels 0..k-1, got dtype {y.dtype} ({shown}, ...); "
            "map them first: names, y = np.unique(y, return_inverse=True)"
        )
    labels = np.unique(y).astype(np.int64)
    if len(labels) and (labels[0] < 0 or labels[-1] != len(labels) - 1):
        shown = labels.tolist() if len(labels) <= 10 else [*labels[:10].tolist(), "..."]
        raise ValueError(
            f"{path}: y must hold labels 0..k-1 (each a class), got {len(labels)} distinct labels "
            f"{shown}; map them first: names, y = np.unique(y, return_inverse=True)"
        )
    return y.astype(np.int64)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "I", "I;16")


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:
        raise ValueError("image folders need Pillow: pip install 'paretune[vision]'") from error
    return Image, UnidentifiedImageError


def _class_files(path: Path) -> dict[str, list[Path]]:
    """Each class sub-folder (sorted by name, as torchvision's `ImageFolder` numbers them) and
    its image files (sorted)."""
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{path}: no class sub-folders (one folder of images per class)")
    files = {}
    for folder in folders:
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        files[folder.name] = images
    return files


def image_folder(path: str | Path) -> Dataset:
    """A folder of class sub-folders of images (torchvision's `ImageFolder` layout) of one size,
    read with Pillow into memory: 1 channel when every image is grayscale, else RGB (alpha
    dropped); pixels scaled to [0, 1]; split 60/20/20 as `numpy` is."""
    image, unreadable = _pillow()
    path = existing(path)
    files = _class_files(path)
    pictures, labels = [], []
    for label, names in enumerate(files.values()):
        for name in names:
            try:
                with image.open(name) as picture:
                    picture.load()
                    pictures.append((name, picture))
            except (unreadable, OSError) as error:
                raise ValueError(f"{name}: not a readable image ({error})") from error
            labels.append(label)
    gray = all(p.mode in GRAY_MODES for _, p in pictures)
    size = pictures[0][1].size
    arrays = []
    for name, picture in pictures:
        if picture.size != size:
            raise ValueError(
                f"{name}: {picture.size[0]}x{picture.size[1]} pixels where "
                f"{pictures[0][0]} has {size[0]}x{size[1]}: every image must have one size"
            )
        pixels = np.asarray(picture.convert("L" if gray else "RGB"), dtype=np.float32)
        arrays.append(pixels[None] if gray else pixels.transpose(2, 0, 1))
    return split(path.name, np.stack(arrays) / 255.0, np.asarray(labels, np.int64))


CIFAR_RECORD = 1 + 3 * 32 * 32  # a label byte, then 1,024 red, 1,024 green, 1,024 blue bytes
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"


def _cifar_folder(path: Path) -> Path:
    """The folder of CIFAR-10's binary batches: `path`, or its `cifar-10-batches-bin`."""
    for folder in (path, path / "cifar-10-batches-bin"):
        if (folder / CIFAR_TEST).exists() or (folder / CIFAR_TRAIN[0]).exists():
            return folder
    if (path / "cifar-10-batches-py").exists() or (path / "data_batch_1").exists():
        raise ValueError(
            f"{path} holds CIFAR-10's Python version (pickled batches, which paretune does not "
            "unpickle); use its binary version: cifar-10-batches-bin with data_batch_1.bin ... "
            "data_batch_5.bin and test_batch.bin (cifar-10-binary.tar.gz)"
        )
    raise ValueError(
        f"{path}: no CIFAR-10 binary batches (cifar-10-batches-bin/{CIFAR_TRAIN[0]} ... "
        f"{CIFAR_TEST}, or those files in this folder)"
    )


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`(x (n, 3, 32, 32) uint8, y (n,) int64)` of one binary batch file."""
    if not path.exists():
        raise ValueError(f"CIFAR-10 batch {path} is missing")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise ValueError(
            f"{path}: {raw.size} bytes is not a whole number of {CIFAR_RECORD}-byte records "
            "(1 label byte + 3,072 pixel bytes)"
        )
    records = raw.reshape(-1, CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise ValueError(f"{path}: label {labels.max()} is not a CIFAR-10 class (0 to 9)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def cifar10(path: str | Path) -> Dataset:
    """CIFAR-10 from its binary batches (never downloaded, never unpickled): a folder holding
    `cifar-10-batches-bin` (or its files). The five training batches split 90/10 into train
    and validation (`SPLIT_SEED`), the test batch is the test split; pixels scaled to [0, 1]."""
    folder = _cifar_folder(existing(path))
    batches = [_cifar_batch(folder / name) for name in CIFAR_TRAIN]
    x, y = (np.concatenate(parts) for parts in zip(*batches))
    x_test, y_test = _cifar_batch(folder / CIFAR_TEST)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    val, train = np.split(order, [round(0.1 * len(x))])
    scaled = [(x[i].astype(np.float32) / 255, y[i]) for i in (train, val)]
    parts = [*scaled, (x_test.astype(np.float32) / 255, y_test)]
    return normalized("cifar10", parts, classes=10)


def existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"dataset path {str(path)!r} does not exist")
    return path
