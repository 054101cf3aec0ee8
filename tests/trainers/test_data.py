import random

import numpy as np
import pytest
import torch

from trainers.data import load_dataset, mnist1d


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


@pytest.mark.parametrize("shape", [(50, 2, 12), (50, 3, 4, 5)])
def test_numpy_file_of_signals_or_images(tmp_path, shape):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", x=rng.normal(size=shape), y=rng.integers(0, 4, 50))
    data = load_dataset("numpy", tmp_path / "x.npz")
    assert data.in_shape == shape[1:] and data.num_classes == 4


def test_mnist1d_is_the_standard_split_generated_here():
    from mnist1d.data import get_dataset_args, make_dataset

    data = load_dataset("mnist1d")
    assert data.in_shape == (1, 40) and data.num_classes == 10
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (3200, 800, 1000)
    assert abs(data.x_train.mean().item()) < 1e-5  # normalized by the training split
    again = load_dataset("mnist1d")  # from memory
    assert torch.equal(again.x_val, data.x_val) and torch.equal(again.y_train, data.y_train)
    assert again.x_train is not data.x_train
    standard = make_dataset(get_dataset_args())  # the 4,000/1,000 split of seed 42
    x_test = torch.as_tensor(standard["x_test"][:, None], dtype=torch.float32)

    def standardized(x):  # equal up to the training split's normalization
        return (x - x.mean()) / x.std()

    assert torch.allclose(standardized(data.x_test), standardized(x_test), atol=1e-4)
    assert torch.equal(data.y_test, torch.as_tensor(standard["y_test"]))
    train = {tuple(r.tolist()) for r in data.x_train.flatten(1)}
    assert not train & {tuple(r.tolist()) for r in data.x_val.flatten(1)}
    assert len(train) == 3200


def test_mnist1d_is_seeded_and_leaves_the_global_generators_alone():
    state = random.getstate(), np.random.get_state()
    other = mnist1d(seed=7)  # generated now: the package seeds `random` and `np.random`
    assert random.getstate() == state[0]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), state[1]))
    assert not torch.equal(other.x_test, mnist1d().x_test)
    assert torch.equal(other.x_test, mnist1d(seed=7).x_test)


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
    np.savez(tmp_path / "flat.npz", x=np.zeros(3), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"\(n, C, L\) or \(n, features\) .* got x \(3,\)"):
        load_dataset("numpy", tmp_path / "flat.npz")


def test_folders_without_torchvision_say_what_to_install(tmp_path):
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match=r"paretune\[vision\]"):
        load_dataset("folder", tmp_path)
