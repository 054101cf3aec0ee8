"""Filter and neuron pruning with real removal: rank each group's channels, keep the best, shrink
every layer that produces, normalizes or reads them. The record lists the kept channels, so it
replays."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from trainers.blocks import PruneGroup

CRITERIA = ("l1", "l2", "gradient")
NEURON_CRITERIA = ("activation", "l1")


def gradient_importance(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batches: int = 4, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """First-order Taylor scores `|w * dL/dw|` summed over each filter, from a few batches."""
    model.zero_grad(set_to_none=True)
    model.train()
    for i in range(min(batches, max(1, len(x) // batch_size))):
        chunk = slice(i * batch_size, (i + 1) * batch_size)
        F.cross_entropy(model(x[chunk]), y[chunk]).backward()
    scores = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear) and module.weight.grad is not None:
            scores[name] = (module.weight * module.weight.grad).abs().flatten(1).sum(1).detach()
    model.zero_grad(set_to_none=True)
    return scores


def _filter_scores(module: nn.Module, criterion: str, gradients) -> torch.Tensor:
    if criterion == "gradient":
        return gradients[module]
    weight = module.weight.detach().flatten(1)
    return weight.abs().sum(1) if criterion == "l1" else weight.pow(2).sum(1).sqrt()


def group_importance(model: nn.Module, group: PruneGroup, criterion: str, gradients=None):
    """One score per channel: the sum over the group's producing layers (a depthwise conv counts
    as a producer too)."""
    modules = dict(model.named_modules())
    by_name = {modules[n]: gradients[n] for n in gradients} if gradients else None
    scores = [_filter_scores(modules[n], criterion, by_name) for n in group.out + group.depthwise]
    return torch.stack(scores).sum(0)


def _unsafe(modules: Mapping[str, nn.Module], group: PruneGroup) -> str | None:
    names = group.out + group.norm + group.depthwise + group.inp
    missing = [n for n in names if n not in modules]
    if missing:
        return f"layers not in the model: {missing}"
    if not group.out:
        return "no layer produces these channels"
    for n in group.out + group.inp:
        if getattr(modules[n], "groups", 1) != 1:
            return f"{n} is a grouped convolution outside the group's depthwise layers"
    return None


def _channels(modules, group: PruneGroup) -> int:
    return modules[group.out[0]].weight.shape[0]


def _cut(tensor: torch.Tensor | None, keep: torch.Tensor, dim: int):
    return None if tensor is None else tensor.detach().index_select(dim, keep).clone()


def _set(module: nn.Module, name: str, value: torch.Tensor | None):
    if value is None:
        return
    if isinstance(getattr(module, name), nn.Parameter):
        setattr(module, name, nn.Parameter(value))
    else:
        setattr(module, name, value)


def shrink(model: nn.Module, group: PruneGroup, keep: torch.Tensor) -> None:
    """Keep channels `keep` (sorted indices) of `group` in every layer it names."""
    modules = dict(model.named_modules())
    keep = keep.to(next(model.parameters()).device)
    size = len(keep)
    for name in group.out:
        m = modules[name]
        _set(m, "weight", _cut(m.weight, keep, 0))
        _set(m, "bias", _cut(m.bias, keep, 0))
        _rename(m, out=size)
    for name in group.depthwise:
        m = modules[name]
        _set(m, "weight", _cut(m.weight, keep, 0))
        _set(m, "bias", _cut(m.bias, keep, 0))
        m.groups = size
        _rename(m, out=size, inp=size)
    for name in group.norm:
        m = modules[name]
        for attr in ("weight", "bias", "running_mean", "running_var"):
            _set(m, attr, _cut(getattr(m, attr), keep, 0))
        m.num_features = size
    for name in group.inp:
        m = modules[name]
        _set(m, "weight", _cut(m.weight, keep, 1))
        _rename(m, inp=size)


def _rename(module: nn.Module, *, out: int | None = None, inp: int | None = None):
    if isinstance(module, nn.Linear):
        module.out_features = out or module.out_features
        module.in_features = inp or module.in_features
    else:
        module.out_channels = out or module.out_channels
        module.in_channels = inp or module.in_channels


def prune(
    model: nn.Module,
    *,
    ratio: float | Mapping[str, float],
    criterion: str = "l1",
    gradients: Mapping[str, torch.Tensor] | None = None,
) -> dict:
    """Remove the lowest-ranked `floor(ratio * channels)` channels of every group of
    `model.prune_groups`, in place. `ratio` is one number or a ratio per stage key (missing
    stages are left alone); `gradients` are `gradient_importance`'s scores, needed for the
    `gradient` criterion. Returns the JSON record `apply_record` replays."""
    if criterion not in CRITERIA:
        raise ValueError(f"prune_criterion {criterion!r}: allowed {list(CRITERIA)}")
    if criterion == "gradient" and not gradients:
        raise ValueError("the gradient criterion needs gradient_importance(model, x, y) scores")
    ratios = ratio if isinstance(ratio, Mapping) else None
    for value in ratios.values() if ratios else [ratio]:
        check_ratio("prune_ratio", value)
    record = {"step": "prune", "criterion": criterion, "ratio": ratio, "groups": [], "skipped": []}

    def share(group):
        return float(ratios.get(group.stage, 0.0) if ratios else ratio)

    def scores(group):
        return group_importance(model, group, criterion, gradients)

    _remove(model, model.prune_groups, share, scores, record)
    return record


def check_ratio(key: str, value) -> None:
    """A `ValueError` naming `key` unless `value` is a number in `[0, 1)`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{key} {value!r}: allowed a number in [0, 1)")


def check_neurons(*, ratio, criterion: str = "activation") -> None:
    """A `ValueError` naming the config key unless `neuron_ratio` is in `[0, 1)` and
    `neuron_criterion` in `NEURON_CRITERIA`."""
    check_ratio("neuron_ratio", ratio)
    if criterion not in NEURON_CRITERIA:
        raise ValueError(f"neuron_criterion {criterion!r}: allowed {list(NEURON_CRITERIA)}")


def _remove(model, groups, share, scores, record) -> None:
    """Shrink each safe group by `floor(share(group) * channels)` of its lowest `scores(group)`,
    logging kept channels and skipped groups in `record`."""
    modules = dict(model.named_modules())
    for group in groups:
        reason = _unsafe(modules, group)
        if reason:
            record["skipped"].append({"group": group.name, "reason": reason})
            continue
        channels = _channels(modules, group)
        remove = min(int(share(group) * channels), channels - 1)
        if remove == 0:
            continue
        ranked = torch.argsort(scores(group), descending=True)
        keep = torch.sort(ranked[: channels - remove]).values
        shrink(model, group, keep)
        record["groups"].append({"group": group.name, "channels": channels, "keep": keep.tolist()})


def neuron_groups(model: nn.Module) -> list[PruneGroup]:
    """The groups whose channels a linear layer produces or reads: an MLP's hidden units, and in
    the chain and nb201 the pooled channels the classifier reads (the classifier's own outputs,
    the classes, are never pruned)."""
    modules = dict(model.named_modules())
    return [
        group
        for group in model.prune_groups
        if any(isinstance(modules.get(n), nn.Linear) for n in group.out + group.inp)
    ]


@torch.no_grad()
def activation_importance(
    model: nn.Module, groups: list[PruneGroup], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per group, one score per neuron: its mean `|activation|` over `x` as a linear layer reads
    it, times the L2 norm of that layer's weights from it (`E|a_j| * ||W[:, j]||`), summed over
    the group's linear readers; groups with none score by their producers' L1 norms."""
    modules = dict(model.named_modules())
    readers = {n for g in groups for n in g.inp if isinstance(modules.get(n), nn.Linear)}
    seen = {}

    def hook(name):
        def record(module, inputs):
            seen[name] = inputs[0].detach().abs().flatten(1).mean(0)

        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in readers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    scores = {}
    for group in groups:
        linear = [n for n in group.inp if n in readers]
        if not linear:
            scores[group.name] = group_importance(model, group, "l1")
            continue
        columns = [seen[n] * modules[n].weight.detach().norm(dim=0) for n in linear]
        scores[group.name] = torch.stack(columns).sum(0)
    return scores


def prune_neurons(
    model: nn.Module,
    *,
    ratio: float,
    criterion: str = "activation",
    x: torch.Tensor | None = None,
) -> dict:
    """Remove the lowest-ranked `floor(ratio * n)` neurons of every `neuron_groups` group in place:
    rows of the layers producing them, columns of the layers reading them. `criterion`:
    `activation` (`activation_importance` over inputs `x`) or `l1` (the producers' weights).
    Returns the JSON record `apply_record` replays."""
    check_neurons(ratio=ratio, criterion=criterion)
    if criterion == "activation" and x is None:
        raise ValueError("the activation criterion needs inputs x")
    groups = neuron_groups(model)
    ranked = activation_importance(model, groups, x) if criterion == "activation" else {}
    record = {
        "step": "neuron_prune",
        "criterion": criterion,
        "ratio": ratio,
        "groups": [],
        "skipped": [],
    }

    def scores(group):
        return ranked[group.name] if ranked else group_importance(model, group, "l1")

    _remove(model, groups, lambda group: float(ratio), scores, record)
    return record


def apply_record(model: nn.Module, record: Mapping) -> None:
    """Replay a `prune` or `neuron_prune` record on a freshly built model of the same config."""
    groups = {g.name: g for g in model.prune_groups}
    for entry in record["groups"]:
        shrink(model, groups[entry["group"]], torch.tensor(entry["keep"], dtype=torch.long))
