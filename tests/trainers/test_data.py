import numpy as np
import pytest
import torch

from trainers.data import load_dataset


def test_digits_split_is_fixed_and_disjoint(data):
    again = load_dataset("digits")
    assert data.in_shape == (1, 8, 8) and data.num_classes == 10
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1079, 359, 359)
    assert torch.equal(data.x_val, again.x_val) and torch.equal(data.y_test, again.y_test)
    rows = {tuple(r.tolist()) for r in data.x_train.flatten(1)}
    assert not rows & {tuple(r.tolist()) for r in data.x_test.flatten(1)}
    assert abs(data.x_train.mean().item()) < 1e-5  # normalized by the training split


def test_numpy_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=rng.normal(size=(50, 6)), y=rng.integers(0, 3, 50))
    data = load_dataset("numpy", path)
    assert data.in_shape == (1, 1, 6) and len(data.x_train) == 30 and data.num_classes == 3


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("numpy", tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="allowed"):
        load_dataset("mnist")
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="'x' and 'y'"):
        load_dataset("numpy", tmp_path / "bad.npz")


def test_folders_without_torchvision_say_what_to_install(tmp_path):
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"paretune\[vision\]"):
        load_dataset("folder", tmp_path)
