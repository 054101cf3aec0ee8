"""A dataset in memory: its splits as tensors, and how arrays become one (split at random,
normalized by the training split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0  # the train/val/test split is fixed, whatever the trial's seed


@dataclass(frozen=True)
class Dataset:
    """Splits as tensors: `x_*` is `(n, C, H, W)` (images), `(n, C, L)` (1-D signals) or
    `(n, 1, 1, features)` float32, normalized by the training split (`(x - mean) / std` of the
    loader's values: pixels scaled to [0, 1] for images); `y_*` is `(n,)` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: float = 0.0
    std: float = 1.0

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> Dataset:
        splits = [f"{v}_{s}" for s in ("train", "val", "test") for v in "xy"]
        moved = {k: getattr(self, k).to(device) for k in splits}
        kept = {"num_classes": self.num_classes, "mean": self.mean, "std": self.std}
        return Dataset(self.name, **kept, **moved)


def split(name: str, x: np.ndarray, y: np.ndarray, *, val: float = 0.2, test: float = 0.2):
    """`x` and `y` (labels 0..k-1) split train/val/test at random (`SPLIT_SEED`); refused
    (`ValueError`) with fewer than 2 classes, or fewer than 2 samples in a split (as many as
    classes in the training split)."""
    classes = int(y.max()) + 1 if len(y) else 0
    n_test, n_val = round(len(x) * test), round(len(x) * val)
    sizes = {"train": len(x) - n_test - n_val, "validation": n_val, "test": n_test}
    if classes < 2:
        raise ValueError(f"{name}: {classes} class(es); a classifier needs at least 2")
    if min(sizes.values()) < 2 or sizes["train"] < classes:
        split = ", ".join(f"{n} {part}" for part, n in sizes.items())
        raise ValueError(
            f"{name}: {len(x)} samples split {split}: each split needs at least 2 samples, "
            f"the training split one per class ({classes})"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test_part, val_part, train_part = np.split(order, [n_test, n_test + n_val])
    parts = [(x[p], y[p]) for p in (train_part, val_part, test_part)]
    return normalized(name, parts, classes=classes)


def normalized(name: str, parts, *, classes: int) -> Dataset:
    """The dataset of `(x, y)` train, val and test arrays, normalized by the training split."""
    xs = [torch.as_tensor(x, dtype=torch.float32) for x, _ in parts]
    ys = [torch.as_tensor(y, dtype=torch.int64) for _, y in parts]
    mean, std = xs[0].mean(), xs[0].std().clamp_min(1e-8)
    xs = [(v - mean) / std for v in xs]
    splits = (xs[0], ys[0], xs[1], ys[1], xs[2], ys[2])
    return Dataset(name, *splits, classes, mean=mean.item(), std=std.item())
