"""Study files fuzzed: random keys, types, sizes and nesting, given to `Study.from_dict` and
written as YAML for `read`. A refusal is a `ConfigError` whose message names a key of the
file; nothing else escapes, and no case hangs. `benchmarks/fuzz_study.py` counts the cases
with the same strategies."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import search
import spaces
from cluster.study import config
from cluster.study.errors import ConfigError
from trainers.settings import FLAT_KEYS, METRICS

TOP_KEYS = sorted(k for k in config.Study.__dataclass_fields__ if k != "search_space")
TOP_KEYS.append("space")
SECTION_KEYS = {
    "train": list(spaces.training().params),
    "compress": list(spaces.compression().params),
    "arch_options": ["stages", "depth", "widths", "kernels", "expansions", "layers"],
    "trial": sorted(FLAT_KEYS),
    "fixed": ["arch.s0_width", "arch.s0_depth", "train.lr", "compress.prune", "arch.edge0"],
    "constraints": ["latency_ms", "size_bytes", "params", "macs", "peak_mem_bytes"],
    "objectives": list(METRICS),
    "searcher_options": ["n_initial", "acquisition", "kappa", "trees", "population"],
    "scheduler_options": ["max_t", "grace_period", "reduction_factor"],
}
PLAUSIBLE = {
    "arch": ["chain", "nb201", "mlp"],
    "searcher": list(search.SEARCHERS),
    "scheduler": list(config.SCHEDULERS),
    "dataset": ["digits", "mnist", "cifar10"],
    "deploy": ["onnxruntime", "torch"],
    "latency": ["local", "remote://host:1234"],
    "trainable": ["fuzz_no_such_module:run", "fuzz_no_such_module"],  # never a real module
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)


def _nested(keys):
    names = st.sampled_from(keys) | st.text(max_size=10) if keys else st.text(max_size=10)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
        max_leaves=10,
    )


def _value(key: str):
    """A value for top-level `key`: plausible (a known name, a mapping of known keys) or
    anything at all."""
    choices = [_nested(SECTION_KEYS.get(key, []))]
    if key in PLAUSIBLE:
        choices.append(st.sampled_from(PLAUSIBLE[key]))
    if key in SECTION_KEYS:
        choices.append(st.dictionaries(st.sampled_from(SECTION_KEYS[key]), _nested([]), max_size=3))
    if key in ("train", "compress"):
        choices.append(st.booleans())
    return st.one_of(choices)


@st.composite
def study_dicts(draw) -> dict:
    """A study file's top level: known keys with plausible or random values, and unknown ones."""
    known = draw(st.lists(st.sampled_from(TOP_KEYS), max_size=6, unique=True))
    raw = {key: draw(_value(key)) for key in known}
    if draw(st.sampled_from(range(8))) == 7:  # an unknown key, one case in eight
        raw[draw(st.text(max_size=12))] = draw(_nested([]))
    return raw


@st.composite
def _study_files(draw):
    if draw(st.sampled_from(range(5))) == 4:  # a top level that is not a mapping, one in five
        return draw(scalars | st.lists(_nested([]), max_size=3))
    return draw(study_dicts())


study_files = _study_files()


def outcome(raw) -> str | None:
    """None when `raw` is a study, else the refusal's message; anything but a `ConfigError`
    escapes."""
    try:
        config.Study.from_dict(raw)
    except ConfigError as error:
        return str(error)
    return None


def names_a_key(message: str, raw) -> bool:
    """Whether `message` names a key of `raw`, or one a study lacks (`space` with a
    `trainable`), or `study` for the top level itself."""
    keys = [str(k) for k in raw] if isinstance(raw, dict) else []
    return any(k and k in message for k in [*keys, *TOP_KEYS, "study"])


FUZZ = settings(
    max_examples=250,
    derandomize=True,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)


@FUZZ
@given(raw=study_files)
@example(raw={"latency_token_file": [None]})  # found by this test: a TypeError in pathlib
@example(raw={"trainable_path": 3})
@example(raw={"scheduler_options": [1]})
@example(raw={"objectives": [-1, {"val_acc": True}]})  # found: cannot unpack an int
@example(raw={"objectives": "val_acc"})
@example(raw={"objectives": [{"mode": "max"}]})  # a KeyError before
def test_a_random_study_dict_is_a_study_or_a_config_error_naming_its_key(raw):
    message = outcome(raw)
    if message is not None:
        assert message.strip(), raw
        assert names_a_key(message, raw), (message, raw)


@settings(FUZZ, max_examples=60)
@given(raw=study_dicts())
def test_a_random_study_file_reads_as_a_study_or_a_config_error(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        config.read(path)
    except ConfigError as error:
        assert str(error).strip()


def test_a_chain_of_a_million_stages_is_refused_before_building_its_space():
    # found by this test: `stages: 1000000` took 100 s to build (a billion: forever)
    with pytest.raises(ConfigError, match=r"arch_options.stages: .* up to 1000, got 20000"):
        config.Study.from_dict({"arch_options": {"stages": 20000}})


def test_a_refusal_names_the_key_as_the_file_spells_it():
    # found by this test: a `space:` that is not a mapping was refused as `search_space`
    with pytest.raises(ConfigError, match=r"^space: expected Mapping, got 3"):
        config.Study.from_dict({"space": 3})
