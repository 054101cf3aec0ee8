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


def _scale(x: torch.Tensor, raw: np.ndarray) -> tuple[float, float]:
    """`(slope, intercept)` with `x = slope * raw + intercept` (a loader's scaling and the
    training split's normalization) for the same pixels in any order, checked to hold."""
    x, raw = np.sort(x.numpy().ravel()), np.sort(raw.ravel()).astype(np.float64)
    slope, intercept = np.polyfit(raw, x, 1)
    assert slope > 0 and np.allclose(slope * raw + intercept, x, atol=1e-4)
    return slope, intercept


def _as_raw(x: torch.Tensor, slope: float, intercept: float) -> list[tuple]:
    """Each sample of `x` back as the tuple of its written pixel values."""
    pixels = np.rint((x.numpy() - intercept) / slope).astype(int).reshape(len(x), -1)
    return [tuple(r) for r in pixels]


def _cifar_fixture(folder, rng, per_batch=4, tests=3):
    """CIFAR-10's binary layout, a few random records per batch: `(train x, train y, test x,
    test y)` as written, x `(n, 3, 32, 32)` uint8."""
    folder.mkdir(parents=True)
    written = []
    for name, count in [
        *((f"data_batch_{i}.bin", per_batch) for i in range(1, 6)),
        ("test_batch.bin", tests),
    ]:
        y = rng.integers(0, 10, count, dtype=np.uint8)
        x = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([y[:, None], x.reshape(count, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        written.append((x, y))
    train_x = np.concatenate([x for x, _ in written[:5]])
    train_y = np.concatenate([y for _, y in written[:5]])
    return train_x, train_y, *written[5]


def test_cifar10_reads_the_binary_batches_without_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    train_x, train_y, test_x, test_y = _cifar_fixture(tmp_path / "cifar-10-batches-bin", rng)
    data = load_dataset("cifar10", tmp_path)
    assert data.in_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (18, 2, 3)
    assert torch.equal(data.y_test, torch.as_tensor(test_y, dtype=torch.int64))  # in file order
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    scale = _scale(x, np.concatenate([train_x, test_x]))
    assert scale == pytest.approx((1 / (255 * data.std), -data.mean / data.std), rel=1e-4)
    assert _as_raw(data.x_test, *scale) == [tuple(r) for r in test_x.reshape(3, -1).astype(int)]
    written = dict(zip(map(tuple, train_x.reshape(20, -1).astype(int)), train_y.tolist()))
    seen = dict(
        zip(
            _as_raw(torch.cat([data.x_train, data.x_val]), *scale),
            torch.cat([data.y_train, data.y_val]).tolist(),
        )
    )
    assert seen == written  # every record once, its pixels in place, under its label
    assert abs(data.x_train.mean().item()) < 1e-5  # normalized by the training split
    again = load_dataset("cifar10", tmp_path / "cifar-10-batches-bin")  # the folder itself
    assert torch.equal(again.x_val, data.x_val)


def test_cifar10_bad_folders_are_named(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    _cifar_fixture(folder, rng, per_batch=2, tests=2)
    with (folder / "data_batch_3.bin").open("ab") as file:
        file.write(b"\x01\x02")  # a truncated record
    with pytest.raises(ValueError, match=r"data_batch_3.bin: 6148 bytes .* 3073-byte records"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(ValueError, match="data_batch_3.bin is missing"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(ValueError, match="Python version .* cifar-10-batches-bin"):
        load_dataset("cifar10", tmp_path / "py")
    with pytest.raises(ValueError, match="no CIFAR-10 binary batches"):
        load_dataset("cifar10", tmp_path / "py" / "cifar-10-batches-py")


def _write_images(folder, rng, classes, *, count=3, size=(6, 5), mode="RGB", suffix=".png"):
    from PIL import Image

    written = {}
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            pixels = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(folder / name / f"{i}{suffix}")
            chw = pixels.transpose(2, 0, 1) if mode == "RGB" else pixels[None]
            written[tuple(chw.ravel().astype(int))] = label
    return written


def test_image_folder_reads_pngs_and_jpegs_without_torchvision(tmp_path):
    rng = np.random.default_rng(0)
    written = _write_images(tmp_path / "pets", rng, ["cat", "dog"], count=5)
    data = load_dataset("folder", tmp_path / "pets")
    assert data.in_shape == (3, 5, 6) and data.num_classes == 2  # (C, H, W) of 6x5 images
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (6, 2, 2)
    x = torch.cat([data.x_train, data.x_val, data.x_test])
    y = torch.cat([data.y_train, data.y_val, data.y_test])
    scale = _scale(x, np.array(list(written)))
    assert dict(zip(_as_raw(x, *scale), y.tolist())) == written  # pixels in place, labelled
    _write_images(tmp_path / "jpegs", rng, ["a", "b", "c"], count=4, suffix=".jpg")
    jpegs = load_dataset("folder", tmp_path / "jpegs")
    assert jpegs.in_shape == (3, 5, 6) and jpegs.num_classes == 3 and len(jpegs.y_train) == 8


def test_image_folder_of_grayscale_images_has_one_channel(tmp_path):
    rng = np.random.default_rng(2)
    _write_images(tmp_path / "g", rng, ["x", "y"], count=4, mode="L", size=(4, 4))
    data = load_dataset("folder", tmp_path / "g")
    assert data.in_shape == (1, 4, 4) and data.num_classes == 2


def test_image_folder_bad_input_is_named(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset("folder", tmp_path)
    _write_images(tmp_path / "mixed", rng, ["a"], size=(6, 5))
    _write_images(tmp_path / "mixed", rng, ["b"], size=(5, 5))
    with pytest.raises(ValueError, match=r"b/0.png: 5x5 pixels where .* has 6x5"):
        load_dataset("folder", tmp_path / "mixed")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty/a: no images \(.png"):
        load_dataset("folder", tmp_path / "empty")
    (tmp_path / "broken" / "a").mkdir(parents=True)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        load_dataset("folder", tmp_path / "broken")


def _bad(kind: str) -> dict:
    """Arrays `x` (40 samples of 6 features) and `y` (labels 0..3) with one thing wrong."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), np.arange(40) % 4
    if kind == "nan":
        x[[3, 7], 1], x[9, 2] = np.nan, np.inf
    elif kind == "huge":
        x[5, 0] = 1e300  # infinite as float32
    elif kind == "text x":
        x = x.astype(str)
    elif kind == "text labels":
        y = np.array(["cat", "dog"] * 20)
    elif kind == "gaps":
        y = np.array([0, 5, 9, 5] * 10)
    elif kind == "negative":
        y = y - 1
    elif kind == "fractions":
        y = y + 0.5
    elif kind == "one class":
        y = np.zeros(40, int)
    elif kind == "few":
        x, y = x[:4], np.array([0, 1, 0, 1])
    return {"x": x, "y": y}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", r"x holds 2 NaN and 1 infinite values \(in 3 of 40 samples, first at sample 3"),
        ("huge", r"0 NaN and 1 infinite values .* first at sample 5"),
        ("text x", "x must hold numbers, got dtype <U"),
        ("text labels", r"whole-number labels 0..k-1, got dtype <U3 \('cat', 'dog'.*np.unique"),
        ("gaps", r"labels 0..k-1 \(each a class\), got 3 distinct labels \[0, 5, 9\]"),
        ("negative", r"got 4 distinct labels \[-1, 0, 1, 2\]"),
        ("fractions", r"whole-number labels 0..k-1, got dtype float64 \(0.5, 1.5"),
        ("one class", "1 class\\(es\\); a classifier needs at least 2"),
        ("few", "4 samples split 2 train, 1 validation, 1 test: each split needs at least 2"),
    ],
)
def test_a_bad_numpy_dataset_is_refused_naming_what(tmp_path, kind, message):
    np.savez(tmp_path / "d.npz", **_bad(kind))
    with pytest.raises(ValueError, match=message):
        load_dataset("numpy", tmp_path / "d.npz")


def test_whole_float_labels_are_taken_and_a_wrong_file_type_is_named(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 3)), y=(np.arange(20) % 2).astype(float))
    assert load_dataset("numpy", tmp_path / "d.npz").y_train.dtype == torch.int64
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=r"text.npz: not a zip archive \(starts b'x,y.*np.savez"):
        load_dataset("numpy", tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    with pytest.raises(ValueError, match="one.npz: a single .npy array"):
        load_dataset("numpy", tmp_path / "one.npz")
