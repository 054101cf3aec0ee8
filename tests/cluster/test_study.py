import subprocess
import sys

import pytest

from cluster import cli
from cluster.study.config import ConfigError, Study, read
from cluster.study.defaults import default_study, measured_default
from trainers.compress_keys import check_compress
from trainers.settings import SWITCH_NEEDS, CompressionSettings


def test_default_study_is_valid_and_joint():
    study = default_study()
    keys = set(study.space().params)
    assert {"train.lr", "train.weight_decay", "compress.prune", "compress.quant_mode"} <= keys
    assert study.dataset == "mnist1d" and study.space()["compress.act_bits"].options == (8,)
    assert any(k.startswith("arch.s2_") for k in keys) and study.scheduler == "moasha"
    measured = measured_default()
    assert measured.constraints["latency_ms"] > 0 and measured.constraints["size_bytes"] > 1000


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"searcher": "bayes"}, r"'bayes' is not allowed.*allowed: \["),
        ({"scheduler": "ashaa"}, "did you mean 'asha'"),
        ({"trails": 5}, "unknown key 'trails' \\(did you mean 'trials'\\?\\)"),
        ({"trials": "5"}, "trials: expected int"),
        ({"trials": 0}, "must be positive"),
        ({"dataset": "numpy"}, "needs data_path"),
        ({"dataset": "numpy", "data_path": "/no/such.npz"}, "does not exist"),
        ({"constraints": {"latency": 5}}, "did you mean 'latency_ms'"),
        ({"searcher_options": {"n_init": 3}}, "did you mean 'n_initial'"),
        (
            {"trial": {"epoch": 3}},
            r"trial: unknown key 'epoch' \(did you mean 'epochs'\?\); allowed: \[",
        ),
        ({"trial": {"seed": 3}}, "trial: unknown key 'seed'"),  # the study's own seed sets it
        ({"objectives": {"val_acc": "up"}}, "'max' or 'min'"),
        ({"arch_options": {"stage": 2}}, "arch_options for 'chain'"),
        ({"train": {"lr": [0.1]}}, r"train.lr: expected \[low, high\]"),
        ({"trial": {"epochs": "one"}}, "trial: trial setting 'epochs' must be a whole number"),
        ({"trial": {"finetune_epochs": -1}}, "trial: trial setting 'finetune_epochs' must be a"),
        ({"trial": {"qat_epochs": "two"}}, "trial: trial setting 'qat_epochs' must be a whole"),
        ({"trial": {"epochs": "3"}}, r"got '3' \(the text '3': write it as a number"),
        ({"trial": {"finetune_epochs": "2"}}, r"got '2' \(the text '2': write it as a number"),
        ({"trial": {"teacher_width": "2.5"}}, r"must be a number, got '2.5' \(the text"),
        (
            {"objectives": {"val_accc": "max"}},
            "unknown metric 'val_accc' \\(did you mean 'val_acc'",
        ),
        ({"latency": "remote://device"}, "'local' or 'remote://host:port'"),
        ({"scheduler": "pbt", "train": False}, "pbt perturbs training hyperparameters"),
        ({"compress": {"weight_bit": 8}}, "compress: unknown key 'weight_bit' \\(did you mean"),
        ({"compress": {"prune_ratio": [0.2, 0.22]}}, "compress.prune_ratio: Float: step"),
        ({"compress": "int8"}, "compress: true, false or a mapping"),
        ({"fixed": {"arch.s0_width": 7}}, "fixed.arch.s0_width: 7 is not allowed"),
        ({"fixed": {"arch.s9_width": 8}}, "fixed: unknown key 'arch.s9_width'"),
        ({"constraints": {"latency_ms": "5e-1"}}, r"got '5e-1' \(the text '5e-1': write it"),
    ],
)
def test_bad_study_names_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        Study.from_dict(raw)


def test_compress_and_fixed_narrow_the_space():
    study = Study(compress={"weight_bits": [4, 8], "prune_ratio": [0.2, 0.4]}, train=False)
    study = Study.from_dict({**study.to_dict(), "fixed": {"arch.s0_width": 32}})
    params = study.space().params
    compress = {k: v for k, v in params.items() if k.startswith("compress.")}
    # the switches the named knobs need are held on, in the full space's order
    assert list(compress) == [
        f"compress.{k}" for k in ("prune", "prune_ratio", "quantize", "weight_bits")
    ]
    assert params["compress.quantize"].options == (True,) and params["compress.prune"].options == (
        True,
    )
    assert (params["compress.prune_ratio"].low, params["compress.prune_ratio"].step) == (0.2, 0.05)
    assert params["arch.s0_width"].options == (32,)
    config = study.space().sample(__import__("numpy").random.default_rng(0))
    assert config["arch.s0_width"] == 32 and config["compress.quantize"] is True


def test_trial_settings_group_the_flat_keys(tmp_path):
    raw = {"dir": str(tmp_path), "seed": 4, "constraints": {"params": 1e4}}
    raw["trial"] = {"epochs": 3, "latency_repeats": 4, "teacher_epochs": 8, "model": "mlp"}
    settings = Study.from_dict(raw).trial_settings()
    assert settings.schedule.epochs == 3 and settings.teacher.epochs == 8
    assert settings.cost.latency_repeats == 4 and settings.cost.constraints == {"params": 1e4}
    assert settings.teacher.cache_dir == str(tmp_path.resolve() / "cache")
    assert (settings.model, settings.seed, settings.data.dataset) == ("mlp", 4, "digits")


def test_yaml_and_toml(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: y\narch: mlp\ntrials: 3\nobjectives: {val_acc: max, latency_ms: min}\n"
    )
    (tmp_path / "s.toml").write_text('name = "t"\narch = "nb201"\ncompress = false\n')
    study = read(tmp_path / "s.yaml")
    assert study.objectives == (("val_acc", "max"), ("latency_ms", "min"))
    assert not any(k.startswith("compress.") for k in read(tmp_path / "s.toml").space().params)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read(tmp_path / "bad.yaml")


def test_cli_bad_input_exits_2_before_ray(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("scheduler: pbtt\n")
    assert cli.main(["run", str(tmp_path / "s.yaml")]) == 2
    assert "did you mean 'pbt'" in capsys.readouterr().err
    assert cli.main(["resume", str(tmp_path / "nothing")]) == 2
    assert cli.main(["run", str(tmp_path / "missing.yaml")]) == 2
    blocked = tmp_path / "file"
    blocked.write_text("")
    (tmp_path / "ok.yaml").write_text(f"dir: {blocked}/study\n")
    assert cli.main(["run", str(tmp_path / "ok.yaml")]) == 2
    assert "not writable" in capsys.readouterr().err
    code = (
        "import ray, sys; from cluster import cli;"
        f"rc = cli.main(['run', {str(tmp_path / 's.yaml')!r}]);"
        "print(rc, ray.is_initialized())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"]  # refused before Ray started


def test_train_takes_ranges_options_and_fixed_values():
    study = Study.from_dict(
        {"train": {"lr": 0.01, "weight_decay": [1e-5, 1e-3], "optimizer": ["sgd", "adamw"]}}
    )
    space = study.space()
    assert space["train.lr"].options == (0.01,)  # fixed: a choice of one, never searched
    assert space["train.weight_decay"].log and space["train.optimizer"].options == ("sgd", "adamw")
    import numpy as np

    drawn = {space.sample(np.random.default_rng(i))["train.lr"] for i in range(5)}
    assert drawn == {0.01}


def test_relative_paths_resolve_from_where_the_command_runs(tmp_path, monkeypatch):
    import numpy as np

    np.savez(tmp_path / "data.npz", x=np.zeros((10, 4)), y=np.arange(10) % 2)
    monkeypatch.chdir(tmp_path)
    study = Study.from_dict({"dataset": "numpy", "data_path": "data.npz"})
    assert study.data_path == str(tmp_path.resolve() / "data.npz")
    monkeypatch.chdir("/")
    assert Study.from_dict(study.to_dict()).data_path == study.data_path  # resume elsewhere


def test_a_named_switch_brings_only_the_knob_it_needs():
    study = Study(compress={"neuron_prune": [False, True]}, train=False)
    params = study.space().params
    assert params["compress.neuron_ratio"].when == {"compress.neuron_prune": (True,)}
    assert (params["compress.neuron_ratio"].low, params["compress.neuron_ratio"].high) == (
        0.1,
        0.75,
    )
    assert "compress.neuron_criterion" not in params  # run_trial's default: never dragged in
    off = Study(compress={"neuron_prune": False}, train=False).space().params
    assert "compress.neuron_ratio" not in off  # a switch held off gates nothing
    criterion = Study(compress={"prune_criterion": "l2"}).space().params  # implies prune on
    named = [k for k in criterion if k.startswith("compress.")]
    assert named == [f"compress.{k}" for k in ("prune", "prune_ratio", "prune_criterion")]


@pytest.mark.parametrize(("switch", "knob"), sorted(SWITCH_NEEDS.items()))
def test_each_switch_brings_the_knob_the_trial_needs_with_it(switch, knob):
    params = Study(compress={switch: [False, True]}, train=False).space().params
    assert [k for k in params if k.startswith("compress.")] == [
        f"compress.{switch}",
        f"compress.{knob}",
    ]
    with pytest.raises(ValueError, match=f"compress.{switch} is on but compress.{knob} is miss"):
        check_compress({switch: True}, CompressionSettings())


def test_yaml_reads_exponents_as_numbers_and_text_gets_a_hint(tmp_path):
    (tmp_path / "s.yaml").write_text("train: {lr: [3e-4, 3e-2], weight_decay: 1E-5}\n")
    space = read(tmp_path / "s.yaml").space()
    assert (space["train.lr"].low, space["train.weight_decay"].options) == (3e-4, (1e-5,))
    (tmp_path / "q.yaml").write_text("train: {lr: ['3e-4', 3e-2]}\n")
    with pytest.raises(ConfigError, match=r"train.lr: bounds must be numbers, got '3e-4' \(the"):
        read(tmp_path / "q.yaml")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"lr": "fast"}}, r"train.lr: expected a finite number, got 'fast'; allowed:"),
        ({"train": {"lr": "1e-3"}}, r"got '1e-3'; allowed: a number from 0.0001 to 0.3 \(the"),
        ({"train": {"lr": 5.0}}, r"train.lr: 5.0 is outside \[0.0001, 0.3\]"),
        ({"train": {"optimizer": "adam"}}, r"'adam' is not allowed; options are \['adamw'"),
        ({"train": {"batch_size": [32, "64"]}}, r"train.batch_size: '64' is not allowed"),
        ({"compress": {"weight_bits": "8"}}, r"compress.weight_bits: '8' is not allowed; opt"),
        ({"compress": {"quant_mode": "qta"}}, r"compress.quant_mode: 'qta' is not allowed"),
        ({"compress": {"prune_ratio": 0.9}}, r"compress.prune_ratio: 0.9 is outside"),
        ({"compress": {"prune": "yes"}}, r"compress.prune: 'yes' is not allowed"),
        ({"arch_options": {"stages": "3"}}, r"arch_options.stages: expected a positive whole"),
        ({"arch_options": {"widths": [8, "16"]}}, r"arch_options.widths: expected a list of"),
        ({"arch_options": {"widths": 16}}, r"arch_options.widths: expected a list"),
        ({"arch_options": {"depth": [1, 2.5]}}, r"arch_options.depth: expected \[low, high\]"),
        ({"arch": "mlp", "arch_options": {"layers": [3, 1]}}, "arch_options for 'mlp': Int"),
        ({"arch_options": {"stage": 2}}, r"unknown key 'stage' \(did you mean 'stages'"),
    ],
)
def test_fixed_values_are_checked_against_the_space(raw, message):
    with pytest.raises(ConfigError, match=message):
        Study.from_dict(raw)


def test_a_study_searches_exactly_what_it_names(tmp_path):
    assert not any(
        k.startswith(("train.", "compress.")) for k in Study.from_dict({}).space().params
    )
    named = {"quantize": True, "weight_bits": 8, "act_bits": 8, "quant_mode": "ptq"}
    params = Study.from_dict({"compress": named}).space().params
    assert [k for k in params if not k.startswith("arch.")] == [f"compress.{k}" for k in named]
    optimizer = Study.from_dict({"train": {"optimizer": ["sgd", "adamw"]}}).space().params
    assert "train.momentum" not in optimizer  # gated by a named switch, still not named
    with pytest.raises(ConfigError, match="pbt perturbs training hyperparameters"):
        Study.from_dict({"scheduler": "pbt"})  # no train: section, nothing to perturb
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="empty.yaml' is empty: name what to search"):
        read(tmp_path / "empty.yaml")


def test_the_default_study_searches_what_it_names():
    from cluster.study.defaults import COMPRESS, TRAIN

    params = default_study().space().params
    assert {k for k in params if k.startswith("train.")} == {f"train.{k}" for k in TRAIN}
    assert {k for k in params if k.startswith("compress.")} == {f"compress.{k}" for k in COMPRESS}
    assert len(params["compress.quant_scheme"].options) == 2  # still a joint search


def test_relative_paths_in_a_study_file_resolve_from_its_folder(tmp_path, monkeypatch):
    import numpy as np

    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "data.npz", x=np.zeros((10, 4)), y=np.arange(10) % 2)
    np.savez(tmp_path / "data.npz", x=np.ones((10, 4)), y=np.arange(10) % 2)  # not this one
    (tmp_path / "sub" / "token").write_text("t\n")
    (tmp_path / "sub" / "s.yaml").write_text(
        "dataset: numpy\ndata_path: data.npz\nlatency: remote://h:1\nlatency_token_file: token\n"
    )
    monkeypatch.chdir(tmp_path)
    study = read("sub/s.yaml")
    assert study.data_path == str(tmp_path.resolve() / "sub" / "data.npz")
    assert study.latency_token_file == str(tmp_path.resolve() / "sub" / "token")


def test_darts_without_a_scheduler_runs_fifo():
    assert Study.from_dict({"searcher": "darts", "arch": "nb201"}).scheduler == "fifo"
    with pytest.raises(ConfigError, match="scheduler must be fifo, got 'asha'"):
        Study.from_dict({"searcher": "darts", "arch": "nb201", "scheduler": "asha"})


def test_a_bad_dataset_is_refused_before_ray(tmp_path, capsys):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(40, 4))
    x[6, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 2)
    (tmp_path / "s.yaml").write_text(f"dataset: numpy\ndata_path: nan.npz\ndir: {tmp_path}/s\n")
    assert cli.main(["run", str(tmp_path / "s.yaml")]) == 2
    assert "dataset 'numpy': " in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_a_study_parses_its_trial_settings_once_and_the_runner_binds_its_latency_source():
    from cluster.raytune.trainable import bound
    from cluster.remote.device_client import RemoteLatency

    study = Study.from_dict({"latency": "remote://device:50051", "trial": {"epochs": 3}})
    assert study.trial_settings() is study.trial_settings()  # built once, by `validate`
    assert study.trial_settings().schedule.epochs == 3
    assert study.trial_settings().cost.latency_source is None  # reading a study dials nothing
    settings = bound(study)
    assert settings.cost.latency_source == RemoteLatency("device:50051", None, retry_s=60.0)
    assert settings.schedule == study.trial_settings().schedule
    assert bound(Study()).cost.latency_source is None
