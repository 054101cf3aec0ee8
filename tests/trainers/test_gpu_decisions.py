"""Where a trial runs and at what precision, decided from plain values (tested on the CPU with
the GPU's capability as an input), and the quantizers' fp32 under autocast."""

import dataclasses

import pytest
import torch
from torch import nn

import spaces
from tests.trainers.conftest import SMALL_MLP
from trainers import FLAT_KEYS, TrialSettings, device, phases, run_trial
from trainers.device import decide_device, memory_fraction, on_trial_device, precision
from trainers.quantize import ActQuantizer, QuantSpec, fake_quantize
from trainers.supernet import build_supernet
from trainers.supernet import loop as supernet_loop
from trainers.train import TrainSettings, train


def _never():
    raise AssertionError("a CPU-only trial asked about CUDA")


def test_a_cpu_only_trial_runs_on_the_cpu_without_asking_about_cuda():
    for asked in ("auto", "cpu"):
        assert decide_device(asked, gpu_share=0.0, cuda_available=_never) == "cpu"


def test_a_cuda_device_without_a_gpu_share_is_refused_by_name():
    with pytest.raises(ValueError, match="gpus_per_trial 0"):
        decide_device("cuda", gpu_share=0.0, cuda_available=lambda: True)
    with pytest.raises(ValueError, match="'device' 'tpu'.*allowed"):
        decide_device("tpu", gpu_share=None, cuda_available=lambda: True)


@pytest.mark.parametrize(
    "ids, visible, wanted",
    [(["3"], "3", "cuda:0"), ([3], "1,3", "cuda:1"), (["2"], None, "cuda:2")],
)
def test_a_gpu_trial_runs_on_its_assigned_gpu_among_the_visible_ones(ids, visible, wanted):
    for asked in ("auto", "cuda", "cuda:5"):  # Ray's assignment wins over an index asked for
        got = decide_device(
            asked, gpu_share=0.5, gpu_ids=ids, visible=visible, cuda_available=lambda: True
        )
        assert got == wanted


def test_a_gpu_trial_may_ask_for_the_cpu_and_a_share_without_a_gpu_is_refused():
    assert decide_device("cpu", gpu_share=1, gpu_ids=["0"], cuda_available=_never) == "cpu"
    with pytest.raises(ValueError, match="sees no GPU"):
        decide_device("auto", gpu_share=0.5, gpu_ids=[], cuda_available=lambda: True)


def test_outside_ray_auto_is_cuda_where_present():
    assert decide_device("auto", gpu_share=None, cuda_available=lambda: True) == "cuda"
    assert decide_device("auto", gpu_share=None, cuda_available=lambda: False) == "cpu"
    assert decide_device("cuda:1", gpu_share=None, cuda_available=_never) == "cuda:1"


@pytest.mark.parametrize(
    "kind, capability, wanted",
    [("cpu", None, "fp32"), ("cuda", (7, 0), "fp16"), ("cuda", (8, 0), "bf16")]
    + [("cuda", (9, 0), "bf16"), ("cuda", (7, 5), "fp16"), ("mps", None, "fp32")],
)
def test_the_precision_is_bf16_where_native_fp16_on_older_gpus_fp32_elsewhere(
    kind, capability, wanted
):
    assert precision(kind, capability) == wanted
    assert precision(kind, capability, asked="fp32") == "fp32"


def test_a_precision_asked_for_is_kept_where_the_device_has_it():
    assert precision("cpu", None, asked="bf16") == "bf16"
    assert precision("cuda", (7, 0), asked="fp16") == "fp16"
    assert precision("cuda", (9, 0), asked="fp16") == "fp16"
    with pytest.raises(ValueError, match=r"compute capability \(7, 0\).*allowed here"):
        precision("cuda", (7, 0), asked="bf16")
    with pytest.raises(ValueError, match="fp16' on cpu"):
        precision("cpu", None, asked="fp16")
    with pytest.raises(ValueError, match="'precision' 'half'"):
        TrialSettings.from_flat({"precision": "half"})


def test_only_a_fraction_of_a_gpu_is_capped():
    assert [memory_fraction(s) for s in (None, 0, 0.25, 0.5, 1, 2)] == [
        None,
        None,
        0.25,
        0.5,
        None,
        None,
    ]


def test_what_ray_assigned_is_no_study_key_and_precision_is():
    assert "precision" in FLAT_KEYS and not {"gpu_share", "gpu_ids"} & FLAT_KEYS


def _trial_probe(config, report=None, *, settings):
    return settings.device, device.trial_device()


def test_a_cpu_trial_touches_no_cuda(monkeypatch):
    for name in ("is_available", "set_per_process_memory_fraction", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: _never())
    settings = TrialSettings(gpu_share=0.0, gpu_ids=())
    assert on_trial_device(_trial_probe)({}, settings=settings) == ("cpu", torch.device("cpu"))


def test_a_fractional_gpu_trial_is_capped_and_its_cache_emptied_at_its_end(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, str(d)))
    )
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("emptied"))
    settings = TrialSettings(gpu_share=0.5, gpu_ids=("6",))
    got = on_trial_device(_trial_probe)({}, settings=settings)
    assert got == ("cuda:0", torch.device("cuda:0"))
    assert calls == [(0.5, "cuda:0"), "emptied"]
    assert device.trial_device() == torch.device("cpu")  # only while the trial runs

    def fails(config, report=None, *, settings):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        on_trial_device(fails)({}, settings=dataclasses.replace(settings, gpu_share=1.0))
    assert calls[-2:] == [(1.0, "cuda:0"), "emptied"]  # a whole GPU: no cap left from before


def _ramp_layer():
    layer = nn.Linear(1, 1)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    return layer


def test_fake_quantization_uses_every_level_inside_bf16_autocast():
    ramp = torch.linspace(-1.0, 1.0, 20_000)[:, None]
    spec = QuantSpec(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        activation = _ramp_layer()(ramp)  # what the next layer gets: bf16
        assert activation.dtype == torch.bfloat16
        out = fake_quantize(activation, spec, lo=-1.0, hi=1.0)
        hook = ActQuantizer(8)
        hook.lo, hook.hi, hook.observing = 0.0, 6.0, False
        wide = hook(None, (torch.linspace(0.0, 6.0, 20_000),))[0]
    # a whole zero point leaves one end level of a symmetric ramp unused: 255 of 256
    assert out.dtype == torch.float32 and len(out.unique()) >= 255
    assert torch.equal(out, fake_quantize(activation.float(), spec, lo=-1.0, hi=1.0))
    assert len(wide.unique()) == 256  # bf16 codes would merge levels: 227 of 256 here


def test_quantization_aware_training_keeps_its_gradient_through_fp32():
    x = torch.linspace(-1, 1, 64).bfloat16().requires_grad_()
    out = fake_quantize(x, QuantSpec(8))
    out.sum().backward()
    assert out.dtype == torch.float32  # quantized in fp32, whatever the input's dtype
    assert x.grad.dtype == torch.bfloat16 and torch.all(x.grad == 1)


class _Probe(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer, self.dtypes = nn.Linear(4, 3), set()

    def forward(self, x):
        out = self.layer(x)
        self.dtypes.add(out.dtype)
        return out.float()


def _fit(**options):
    model, x = _Probe(), torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    data = type("D", (), {"x_train": x, "y_train": torch.arange(32) % 3})
    data.x_val, data.y_val = x, data.y_train
    train(model, data, TrainSettings(epochs=1, batch_size=16), **options)
    return model.dtypes


def test_a_cpu_trial_trains_without_autocast_unless_asked():
    assert _fit() == {torch.float32}
    assert _fit(precision="bf16") == {torch.float32, torch.bfloat16}  # evaluation: fp32


def test_a_trial_trains_at_its_precision_and_quantization_aware_training_at_fp32(monkeypatch):
    asked = []

    def spy(model, data, fit, **options):
        asked.append((options.get("phase", "teacher"), options["precision"]))
        return train(model, data, fit, **options)

    monkeypatch.setattr(phases, "train", spy)
    config = {f"arch.{k}": v for k, v in SMALL_MLP.items()} | {
        "compress.quantize": True,
        "compress.weight_bits": 8,
        "compress.act_bits": 8,
        "compress.quant_mode": "qat",
    }
    flat = {"epochs": 1, "qat_epochs": 1, "precision": "bf16", "latency_repeats": 2}
    result = run_trial(config, settings=TrialSettings.from_flat(flat))
    assert result["status"] == "completed"
    assert asked == [("train", "bf16"), ("qat", "fp32")]


def test_the_supernet_trains_on_the_trials_device(monkeypatch, data):
    monkeypatch.setattr(supernet_loop, "trial_device", lambda: torch.device("meta"))
    arch = spaces.chain(stages=2, depth=(1, 2), widths=(4, 8), kernels=(3,), expansions=(1,))
    net = build_supernet("chain", arch, in_shape=data.in_shape, num_classes=10, mode="gdas")
    spec = supernet_loop.SupernetSpec(kind="chain", arch=arch.to_dict())
    loop = supernet_loop.Loop(net, spec, data, None, None)
    assert {p.device.type for p in loop.net.parameters()} == {"meta"}
    assert loop.data.x_train.device.type == "meta"
