"""The cost table of a supernet, measured on the deployment runtime by differences of networks,
and the expected cost of the mixed network it gives (FBNet, ProxylessNAS).

Each choice's cost is measured in context: the reference network takes every choice's first
label; a choice's label (a chain stage's block pair with each depth, jointly) costs what the
reference network with that label swapped in costs more than the reference itself. The expected
cost is `base + sum over groups of sum over labels of P(labels) * delta(labels)`, with `P` the
product of the groups' softmax probabilities: for a one-hot mix, the table's estimate of the
discrete network's cost (exact for additive costs such as `params` and `macs`; for latency as
good as the runtime is additive over operations). `within_bound` derives under a bound by it,
`derive_checked` checks that derivation by measurement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping

import torch

from trainers import deploy
from trainers.cost import count_macs, count_params, deployed_latency, measure, size_bytes
from trainers.models import build_model
from trainers.settings import COST_METRICS, CostSettings
from trainers.supernet.base import SuperNet
from trainers.supernet.chain import ChainSuper

TABLE_METRICS = tuple(m for m in COST_METRICS if m != "peak_mem_bytes")  # additive over ops
ENUMERATED = 1 << 16  # `within_bound` scores every architecture of a space this small
FRONT_WIDTH = 4096  # beyond, it keeps at most this many partial architectures a group


def groups(supernet: SuperNet) -> list[tuple[str, ...]]:
    """The choices whose labels are costed jointly: each NB201 edge alone; a chain stage's block
    pair with its depth (a stage's cost is its pair times its depth)."""
    if isinstance(supernet, ChainSuper):
        return [(f"s{i}_block", f"s{i}_depth") for i in range(len(supernet.stages))]
    return [(name,) for name in supernet.choices]


def _builder(kind: str, *, in_shape, num_classes: int, options=None):
    def build(config: Mapping):
        torch.manual_seed(0)
        return build_model(
            kind, config, in_shape=in_shape, num_classes=num_classes, options=options
        )

    return build


def measurer(
    metric: str, kind: str, *, in_shape, num_classes: int, options=None, cost=None, rounds=3
) -> Callable[[list[Mapping]], list[float]]:
    """`f(arch_configs) -> costs` of the discrete networks for the cost table, `metric` one of
    `TABLE_METRICS`. Latency as a trial times its model (`cost`: its `CostSettings`): on ONNX
    Runtime here, each graph exported once and timed in `rounds` interleaved rounds, keeping
    each one's fastest median (a shared machine's load comes and goes); on another runtime or a
    device server, once each. The table only estimates: `checker` measures a derived net."""
    if metric not in TABLE_METRICS:
        raise ValueError(f"supernet cost metric {metric!r}: allowed {list(TABLE_METRICS)}")
    cost = cost or CostSettings()
    timing = cost.timing()
    runtime, source = timing.pop("runtime"), timing.pop("source")
    build = _builder(kind, in_shape=in_shape, num_classes=num_classes, options=options)

    def measure_all(configs: list[Mapping]) -> list[float]:
        models = [build(c) for c in configs]
        if metric != "latency_ms":
            counts = {
                "params": count_params,
                "size_bytes": lambda m: size_bytes(m, in_shape, runtime=runtime),
                "macs": lambda m: count_macs(m, in_shape),
            }
            return [float(counts[metric](m)) for m in models]
        if runtime != "onnxruntime" or source is not None:
            where = {"runtime": runtime, "source": source}
            return [float(deployed_latency(m, in_shape, **timing, **where)) for m in models]
        graphs = [deploy.runtime_graph(m, in_shape) for m in models]
        best = [math.inf] * len(graphs)
        for _ in range(rounds):
            for i, graph in enumerate(graphs):
                best[i] = min(best[i], deploy.onnx_latency(graph, in_shape, **timing))
        return best

    return measure_all


def checker(
    kind: str, *, example: torch.Tensor, num_classes: int, options=None, cost=None
) -> Callable[[Mapping], dict]:
    """`f(arch_config) -> costs`: a discrete network's costs measured exactly as a trial's row
    measures its model (`trainers.cost.measure` with `cost`'s timing, `example` its calibration
    batch), of the network built with seeded weights (a float network's costs are those of its
    architecture); what a derivation is checked by and its row then reports."""
    timing = (cost or CostSettings()).timing()
    in_shape = tuple(example.shape[1:])
    build = _builder(kind, in_shape=in_shape, num_classes=num_classes, options=options)
    return lambda config: measure(build(config), example, **timing)


def measure_table(
    supernet: SuperNet, measure: Callable[[list[Mapping]], list[float]], metric: str
) -> dict:
    """The JSON cost table: `{"metric", "base", "reference", "groups": [{"names", "deltas":
    {"label|label": cost}}]}`."""
    reference = {name: labels[0] for name, labels in supernet.choices.items()}
    probes = [(None, None, reference)]
    for g, names in enumerate(groups(supernet)):
        for combo in itertools.product(*(supernet.choices[n] for n in names)):
            if any(reference[n] != v for n, v in zip(names, combo)):
                probes.append((g, _key(combo), {**reference, **dict(zip(names, combo))}))
    costs = measure([supernet.config_of(labels) for _, _, labels in probes])
    base = costs[0]
    table = {"metric": metric, "base": base, "reference": reference, "groups": []}
    for names in groups(supernet):
        combos = itertools.product(*(supernet.choices[n] for n in names))
        table["groups"].append({"names": list(names), "deltas": {_key(c): 0.0 for c in combos}})
    for (g, key, _), value in zip(probes[1:], costs[1:]):
        table["groups"][g]["deltas"][key] = value - base
    return table


def _key(combo) -> str:
    return "|".join(str(v) for v in combo)


def expected_cost(supernet: SuperNet, table: Mapping) -> torch.Tensor:
    """The mixed network's expected cost (differentiable in the architecture parameters)."""
    probs = supernet.probabilities()
    total = torch.tensor(float(table["base"]))
    for group in table["groups"]:
        names = group["names"]
        for combo in itertools.product(*(range(len(supernet.choices[n])) for n in names)):
            labels = [supernet.choices[n][i] for n, i in zip(names, combo)]
            p = torch.ones(())
            for name, i in zip(names, combo):
                p = p * probs[name][i]
            total = total + p * float(group["deltas"][_key(labels)])
    return total


def table_cost(table: Mapping, labels: Mapping) -> float:
    """The table's estimate for one discrete architecture (`labels` per choice)."""
    return float(table["base"]) + sum(
        float(g["deltas"][_key([labels[n] for n in g["names"]])]) for g in table["groups"]
    )


def within_bound(supernet: SuperNet, table: Mapping, bound: float):
    """The most probable architecture (sum of log-probabilities over the choices) whose table
    cost is at most `bound` and which `supernet.valid` accepts, as labels per choice; None when
    the table prices every valid architecture above the bound. Every architecture is scored
    when there are at most `ENUMERATED`; beyond, only a Pareto front of partial architectures
    is kept over the groups (dominated ones dropped, thinned evenly to `FRONT_WIDTH`)."""
    probs = {name: p.detach().log().tolist() for name, p in supernet.probabilities().items()}
    every = math.prod(len(labels) for labels in supernet.choices.values()) <= ENUMERATED
    front = [(0.0, float(table["base"]), {})]  # (log-probability, cost, labels)
    for group in table["groups"]:
        names = group["names"]
        grown = [
            (
                logp + sum(probs[n][supernet.choices[n].index(v)] for n, v in zip(names, combo)),
                cost + float(group["deltas"][_key(combo)]),
                {**labels, **dict(zip(names, combo))},
            )
            for logp, cost, labels in front
            for combo in itertools.product(*(supernet.choices[n] for n in names))
        ]
        front = grown if every else _pareto(grown, FRONT_WIDTH)
    fits = [(logp, labels) for logp, cost, labels in front if cost <= bound]
    fits = [(logp, labels) for logp, labels in fits if supernet.valid(labels)]
    return max(fits, key=lambda pair: pair[0])[1] if fits else None


def derive_checked(
    supernet: SuperNet,
    table: Mapping,
    bound: float,
    measure: Callable[[list[Mapping]], list[float]],
    *,
    tries: int = 3,
) -> tuple[dict, list[dict]]:
    """The labels to derive under `bound`: the argmax, or `within_bound`'s when the table prices
    the argmax above it; then measured (`measure`: a trial, `checker`'s costs) since the table only
    estimates a latency: while the measurement is over `bound`, derived again under the lower
    of the target and that net's table cost, scaled by bound / measured, at most `tries`
    measurements. Returns the labels last measured (over the bound when no try met it; the
    argmax, unmeasured, when the table fits nothing under it) and each try's `{"labels",
    "table", "measured"}`."""
    labels, target, checks = supernet.derive(), bound, []
    while len(checks) < tries:
        if table_cost(table, labels) > target:
            fitting = within_bound(supernet, table, target)
            if fitting is None:
                break
            labels = fitting
        cost = table_cost(table, labels)
        measured = measure([supernet.config_of(labels)])[0]
        checks.append({"labels": labels, "table": cost, "measured": measured})
        if measured <= bound:
            break
        target = min(target, cost) * bound / measured  # below this net's cost: a new net
    return labels, checks


def _pareto(points: list, width: int) -> list:
    """The points no other beats on both log-probability (higher) and cost (lower), by cost;
    at most `width` of them, evenly spaced, the cheapest and the most probable kept."""
    kept, best = [], -math.inf
    for point in sorted(points, key=lambda p: (p[1], -p[0])):
        if point[0] > best:
            kept.append(point)
            best = point[0]
    if len(kept) > width:
        step = (len(kept) - 1) / (width - 1)
        kept = [kept[round(i * step)] for i in range(width)]
    return kept
