"""Datasets held in memory as tensors: digits (embedded), NumPy files, image folders, CIFAR-10."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SPLIT_SEED = 0  # the train/val/test split is fixed, whatever the trial's seed


@dataclass(frozen=True)
class Dataset:
    """Splits as tensors: `x_*` is `(n, C, H, W)` float32, `y_*` is `(n,)` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> Dataset:
        splits = [f"{v}_{s}" for s in ("train", "val", "test") for v in "xy"]
        moved = {k: getattr(self, k).to(device) for k in splits}
        return Dataset(self.name, num_classes=self.num_classes, **moved)


def _split(name: str, x: np.ndarray, y: np.ndarray, *, val: float = 0.2, test: float = 0.2):
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test, n_val = round(len(x) * test), round(len(x) * val)
    parts = np.split(order, [n_test, n_test + n_val])
    xs = [torch.as_tensor(x[p], dtype=torch.float32) for p in parts]
    ys = [torch.as_tensor(y[p], dtype=torch.int64) for p in parts]
    mean, std = xs[2].mean(), xs[2].std().clamp_min(1e-8)  # statistics of the training split
    xs = [(v - mean) / std for v in xs]
    classes = int(y.max()) + 1
    return Dataset(name, xs[2], ys[2], xs[1], ys[1], xs[0], ys[0], classes)


def digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): 60/20/20, seed 0."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _split("digits", bunch.images[:, None].astype(np.float32), bunch.target)


def numpy_file(path: str | Path) -> Dataset:
    """An `.npz` with `x` `(n, C, H, W)` or `(n, features)` and `y` `(n,)` integer labels."""
    path = _existing(path)
    with np.load(path, allow_pickle=False) as arrays:
        missing = {"x", "y"} - set(arrays.files)
        if missing:
            raise ValueError(f"{path}: needs arrays 'x' and 'y', has {sorted(arrays.files)}")
        x, y = arrays["x"], arrays["y"]
    if x.ndim == 2:
        x = x[:, None, None, :]
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"{path}: x must be (n, C, H, W) or (n, features) with n = len(y)")
    return _split(path.stem, x.astype(np.float32), y.astype(np.int64))


def _torchvision_images(name: str, dataset) -> tuple[np.ndarray, np.ndarray]:
    xs = np.stack([np.asarray(img, dtype=np.float32).transpose(2, 0, 1) for img, _ in dataset])
    ys = np.asarray([label for _, label in dataset])
    return xs / 255.0, ys


def image_folder(path: str | Path) -> Dataset:
    """A folder of class sub-folders of images (torchvision's `ImageFolder`), loaded in memory."""
    datasets = _torchvision("image folders").datasets
    path = _existing(path)
    x, y = _torchvision_images(path.name, datasets.ImageFolder(str(path)))
    return _split(path.name, x, y)


def cifar10(path: str | Path) -> Dataset:
    """CIFAR-10 from a folder holding `cifar-10-batches-py` (never downloaded)."""
    datasets = _torchvision("CIFAR-10").datasets
    path = _existing(path)
    parts = [datasets.CIFAR10(str(path), train=t, download=False) for t in (True, False)]
    x, y = zip(*(_torchvision_images("cifar10", p) for p in parts))
    return _split("cifar10", np.concatenate(x), np.concatenate(y), val=0.1, test=1 / 6)


def _torchvision(what: str):
    try:
        import torchvision
    except ImportError as error:
        raise ValueError(f"{what} need torchvision: pip install 'paretune[vision]'") from error
    return torchvision


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"dataset path {str(path)!r} does not exist")
    return path


DATASETS = {"digits": digits, "numpy": numpy_file, "folder": image_folder, "cifar10": cifar10}


def load_dataset(name: str = "digits", path: str | Path | None = None) -> Dataset:
    """`DATASETS[name]`, with `path` for every one but digits."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {sorted(DATASETS)}")
    if name == "digits":
        return digits()
    if path is None:
        raise ValueError(f"dataset {name!r} needs a path")
    return DATASETS[name](path)
