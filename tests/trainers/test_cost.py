import pytest
import torch
from torch import nn

from trainers.cost import count_macs, count_params, deployed_latency, measure_latency


def test_macs_and_params_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    )
    assert count_macs(model, (3, 8, 8)) == 64 * 8 * 3 * 9 + 16 * 8 * 9 + 128 * 5
    assert count_params(model) == (8 * 27 + 8) + (8 * 9 + 8) + (128 * 5 + 5)


def test_latency_grows_with_work():
    small = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    large = nn.Sequential(nn.Conv2d(1, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1))
    before = torch.get_num_threads()
    fast = measure_latency(small, (1, 16, 16), batch_size=8, repeats=5)
    slow = measure_latency(large, (1, 16, 16), batch_size=8, repeats=5)
    assert 0 < fast < slow and torch.get_num_threads() == before


def test_deployed_latency_names_the_runtimes_and_keeps_threads():
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.Flatten(), nn.Linear(512, 4))
    with pytest.raises(ValueError, match=r"runtime: 'tflite' is not allowed.*'onnxruntime'"):
        deployed_latency(model, (1, 8, 8), runtime="tflite")
    before = torch.get_num_threads()
    for runtime in ("onnxruntime", "torch"):
        assert deployed_latency(model, (1, 8, 8), runtime=runtime, batch_size=4, repeats=3) > 0
    assert torch.get_num_threads() == before
