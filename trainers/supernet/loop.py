"""The supernet's bilevel training loop and its hardware term (`trainers.supernet.trial`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import torch
from torch.nn import functional as F

from trainers.device import trial_device
from trainers.supernet.cost import expected_cost
from trainers.train import evaluate

SUPERNET = "supernet"  # the reserved config key of a supernet trial (as `search.darts`)
COST_MODES = ("penalty", "lagrange")


@dataclass(frozen=True)
class SupernetSpec:
    """What `search.darts` puts under the `supernet` key of a config."""

    kind: str  # "nb201" or "chain"
    arch: Mapping  # the architecture space, `Space.to_dict()`
    prefix: str = ""  # the architecture keys' prefix in the study's configs ("arch.")
    rest: Mapping = field(default_factory=dict)  # the reported config's training, compression
    variant: str = "gdas"
    epochs: int = 10
    weight_lr: float = 3e-3
    weight_decay: float = 1e-4
    arch_lr: float = 3e-3
    batch_size: int = 64
    samples: int = 0  # training samples used (0: all)
    cost_metric: str = "latency_ms"
    cost_weight: float = 0.0
    cost_mode: str = "penalty"
    bound: float | None = None
    chain_width: str = "median"
    seed: int = 0

    @classmethod
    def of(cls, raw: Mapping) -> SupernetSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"supernet config: unknown keys {unknown}; allowed {sorted(known)}")
        spec = cls(**raw)
        if spec.cost_mode not in COST_MODES:
            raise ValueError(f"supernet cost_mode {spec.cost_mode!r}: allowed {list(COST_MODES)}")
        return spec


def cost_term(expected: torch.Tensor, spec: SupernetSpec, state: dict) -> torch.Tensor:
    """The hardware term of the architecture loss. With a bound `B`: `penalty` is
    `w * relu(E / B - 1)` (nothing below the bound); `lagrange` is `lam * (E / B - 1)` with
    `lam >= 0` raised by `w * (E / B - 1)` after each step (`state["lam"]`). Without a bound,
    `w * E / E0`, `E0` the cost at the start (FBNet's steady pull to cheaper ops)."""
    if spec.cost_weight == 0:
        return expected * 0.0
    if spec.bound is None:
        return spec.cost_weight * expected / state["start_cost"]
    excess = expected / spec.bound - 1.0
    if spec.cost_mode == "penalty":
        return spec.cost_weight * F.relu(excess)
    term = state["lam"] * excess
    state["lam"] = max(0.0, state["lam"] + spec.cost_weight * float(excess))
    return term


def _on_cpu(tree):
    """`tree` (dicts and lists of tensors) with every tensor on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {key: _on_cpu(value) for key, value in tree.items()}
    return [_on_cpu(v) for v in tree] if isinstance(tree, list) else tree


class Loop:
    """The bilevel training loop's state: optimizers, data halves, generator, multiplier. It
    moves `net` and trains it on the device of the trial under way (`trial_device`)."""

    def __init__(self, net, spec: SupernetSpec, data, table, saved: dict | None):
        device = trial_device()
        self.net, self.spec, self.data, self.table = net.to(device), spec, data.to(device), table
        order = torch.randperm(
            len(data.x_train), generator=torch.Generator().manual_seed(spec.seed)
        )
        if spec.samples:
            order = order[: spec.samples]
        half = len(order) // 2
        self.weights_part, self.arch_part = order[:half], order[half:]
        self.opt_w = torch.optim.AdamW(
            net.weight_parameters(), lr=spec.weight_lr, weight_decay=spec.weight_decay
        )
        self.opt_a = torch.optim.Adam(
            net.alphas.parameters(), lr=spec.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3
        )
        self.generator = torch.Generator().manual_seed(spec.seed + 1)
        self.extra = {"lam": 0.0, "start_cost": 1.0}
        self.start = 0
        if table is not None:
            self.extra["start_cost"] = max(expected_cost(net, table).item(), 1e-12)
        if saved:
            net.load_state_dict(saved["model"])
            self.opt_w.load_state_dict(saved["opt_w"])
            self.opt_a.load_state_dict(saved["opt_a"])
            self.generator.set_state(saved["generator"])
            torch.set_rng_state(saved["rng"])
            self.extra, self.start = dict(saved["extra"]), int(saved["epoch"])

    def state(self, epoch: int) -> dict:
        """The loop's state after `epoch`, its tensors on the CPU (it loads on any node)."""
        return {
            "epoch": epoch,
            "model": _on_cpu(self.net.state_dict()),
            "opt_w": _on_cpu(self.opt_w.state_dict()),
            "opt_a": _on_cpu(self.opt_a.state_dict()),
            "generator": self.generator.get_state(),
            "rng": torch.get_rng_state(),
            "extra": dict(self.extra),
            "table": self.table,
        }

    def epoch(self, epoch: int) -> dict:
        net, spec, data = self.net, self.spec, self.data
        steps = math.ceil(len(self.weights_part) / spec.batch_size)
        progress = epoch / max(1, spec.epochs - 1)
        net.tau = 10.0 * (0.1 / 10.0) ** progress  # GDAS: 10 down to 0.1
        lr = 0.5 * spec.weight_lr * (1 + math.cos(math.pi * epoch / spec.epochs))
        for group in self.opt_w.param_groups:
            group["lr"] = lr
        w_order = self.weights_part[
            torch.randperm(len(self.weights_part), generator=self.generator)
        ]
        a_order = self.arch_part[torch.randperm(len(self.arch_part), generator=self.generator)]
        net.train()
        losses = []
        for step in range(steps):
            batch = slice(step * spec.batch_size, (step + 1) * spec.batch_size)
            a_idx = a_order[batch] if len(a_order[batch]) else a_order[: spec.batch_size]
            loss_a = F.cross_entropy(net(data.x_train[a_idx]), data.y_train[a_idx])
            if self.table is not None:
                loss_a = loss_a + cost_term(expected_cost(net, self.table), spec, self.extra)
            self.opt_a.zero_grad(set_to_none=True)
            loss_a.backward()
            self.opt_a.step()
            w_idx = w_order[batch]
            loss_w = F.cross_entropy(net(data.x_train[w_idx]), data.y_train[w_idx])
            if not torch.isfinite(loss_w):
                raise FloatingPointError(
                    f"supernet: the loss became {loss_w.item()} in epoch {epoch}"
                )
            self.opt_w.zero_grad(set_to_none=True)
            loss_w.backward()
            self.opt_w.step()
            losses.append(loss_w.item())
        row = {
            "step": epoch + 1,
            "phase": "supernet",
            "epoch": epoch + 1,
            "train_loss": sum(losses) / len(losses),
            "val_acc": evaluate(net, data.x_val, data.y_val),
        }
        if self.table is not None:
            row["expected_cost"] = expected_cost(net, self.table).item()
        return row
