import copy
import functools
import multiprocessing
import time
from pathlib import Path

import pytest
import torch

from tests.trainers.conftest import SMALL_CHAIN
from trainers.data import load_dataset
from trainers.distill import Distiller, cached_teacher
from trainers.models import build_model


def _chain(width_mult=1.0, seed=0, in_shape=(1, 8, 8)):
    torch.manual_seed(seed)
    options = {"width_mult": width_mult}
    return build_model("chain", SMALL_CHAIN, in_shape=in_shape, num_classes=10, options=options)


def _inputs(dataset, data):
    """16 validation samples of digits `(1, 8, 8)` or MNIST-1D `(1, 40)`."""
    return (data if dataset == "digits" else load_dataset(dataset)).x_val[:16]


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_loss_is_zero_when_student_equals_teacher(loss, dataset, data):
    x = _inputs(dataset, data)
    student = _chain(in_shape=x.shape[1:]).eval()
    teacher = copy.deepcopy(student)
    distill = Distiller(
        student, teacher, layer="blocks", teacher_layer="blocks", sample=x, loss=loss
    )
    assert isinstance(distill.adapter, torch.nn.Identity)
    assert distill(x, student(x)).item() == pytest.approx(0.0, abs=1e-5)  # float32 round-off
    other = _chain(seed=1, in_shape=x.shape[1:]).eval()
    distill = Distiller(other, teacher, layer="blocks", teacher_layer="blocks", sample=x, loss=loss)
    assert distill(x, other(x)).item() > 1e-3


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_wider_teacher_gets_an_adapter_and_gradients_reach_it(dataset, data):
    x = _inputs(dataset, data)
    student = _chain(in_shape=x.shape[1:])
    teacher = _chain(width_mult=2.0, seed=1, in_shape=x.shape[1:])
    distill = Distiller(student, teacher, layer="blocks", teacher_layer="blocks", sample=x)
    assert distill.adapter.weight.shape == (32, 16, 1, 1)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert set(distill.parameters()) == {distill.adapter.weight}
    distill(x, student(x)).backward()
    assert distill.adapter.weight.grad is not None
    assert student.stem[0].weight.grad is not None


def test_unknown_layer_is_named(data):
    with pytest.raises(ValueError, match="no layer 'trunk'"):
        Distiller(_chain(), _chain(), layer="trunk", teacher_layer="blocks", sample=data.x_val)


def test_teacher_is_trained_once_and_cached(tmp_path):
    fits = []

    def fit(model):
        fits.append(1)
        with torch.no_grad():
            model.classifier.bias.fill_(0.5)

    first = cached_teacher({"arch": "x"}, _chain, fit, tmp_path)
    second = cached_teacher({"arch": "x"}, _chain, fit, tmp_path)
    assert len(fits) == 1 and torch.equal(second.classifier.bias, first.classifier.bias)
    cached_teacher({"arch": "y"}, _chain, fit, tmp_path)
    assert len(fits) == 2 and len(list(tmp_path.glob("teacher-*.pt"))) == 2


def _fit_slowly_and_count(model, marker):
    with open(marker, "a") as file:
        file.write("fit\n")
    time.sleep(1.0)
    with torch.no_grad():
        model.classifier.bias.fill_(0.25)


def _teacher_in_a_process(folder):
    fit = functools.partial(_fit_slowly_and_count, marker=Path(folder) / "fits.txt")
    teacher = cached_teacher({"arch": "shared"}, _chain, fit, Path(folder))
    return float(teacher.classifier.bias[0])


def test_parallel_trials_train_the_teacher_once(tmp_path):
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        biases = pool.map(_teacher_in_a_process, [str(tmp_path)] * 2)
    assert biases == [0.25, 0.25]
    assert (tmp_path / "fits.txt").read_text() == "fit\n"  # one trained, the other waited
