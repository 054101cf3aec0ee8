"""Gradient-based architecture search: one weight-sharing supernet trial, then the architecture
it derives trained as ordinary trials."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from search.base import Searcher
from search.errors import Exhausted
from spaces import Space, nb201_edge_names

SUPERNET = "supernet"  # the reserved config key of the supernet trial (`trainers.supernet_trial`)
VARIANTS = ("darts", "gdas")
COST_METRICS = ("latency_ms", "size_bytes", "macs", "params")
# What the supernet trial compresses: nothing. Its row says so with every switch off.
UNCOMPRESSED = {
    f"compress.{switch}": False
    for switch in ("prune", "neuron_prune", "weight_prune", "quantize", "distill")
}


def arch_part(space: Space) -> tuple[str, str, Space]:
    """`(kind, prefix, arch space)`: the NB201 cell or the chain, under `arch.` or alone."""
    prefix = "arch." if any(n.startswith("arch.") for n in space.names) else ""
    names = [n for n in space.names if n.startswith(prefix) and (prefix or "." not in n)]
    arch = Space({n[len(prefix) :]: space[n] for n in names})
    if set(nb201_edge_names()) <= set(arch.names):
        return "nb201", prefix, arch
    if "s0_kernel" in arch.names:
        return "chain", prefix, arch
    raise ValueError(
        f"darts searches the nb201 cell or the chain; the space's architecture keys are "
        f"{sorted(arch.names)}"
    )


class DartsSearcher(Searcher):
    """Gradient-based NAS: a weight-sharing supernet, then the architecture it derives.

    The supernet is of the space's architecture (the NAS-Bench-201 cell or the chain), its
    architecture weights learned by gradient on held-out training batches.

    The first ask is the supernet trial: a config holding only `supernet` (its settings, for
    `trainers.supernet_trial`). Its trial reports under the derived architecture's config (the
    study revises it so) with the training keys it trained the supernet's weights with (AdamW,
    `weight_lr`, its weight decay and batch size, no label smoothing) and every compression
    switch off: it compresses nothing (a space that cannot say so is refused). From then on every
    ask is that architecture with the space's other keys (training, compression) drawn at
    random, and when the space has no other keys the search ends after one. Asks while the
    supernet trains (parallel trials) draw random configs.

    Options: `variant` (`darts`: first-order DARTS, every op mixed by softmax; `gdas`: one op
    per edge sampled by Gumbel-softmax, which resists DARTS's collapse to skip connections),
    `epochs` (of the supernet), `cost_weight` (of the hardware term; 0 leaves it out),
    `cost_metric` (the cost the term prices from a per-op table measured on the deployment
    runtime: `latency_ms`, `size_bytes`, `macs` or `params`; its study constraint, when set,
    is the bound), `cost_mode` (`penalty`: only above the bound; `lagrange`: a multiplier raised
    while above it), `arch_lr` (of the architecture weights), `weight_lr` (of the supernet's
    weights), `samples` (training samples the supernet uses; 0: all), `chain_width` (the
    chain's held stage width when the space leaves it open: `min`, `median` or `max`)."""

    name = "darts"

    def __init__(
        self,
        space,
        *,
        variant: str = "gdas",
        epochs: int = 10,
        cost_weight: float = 0.0,
        cost_metric: str = "latency_ms",
        cost_mode: str = "penalty",
        arch_lr: float = 3e-3,
        weight_lr: float = 3e-3,
        samples: int = 0,
        chain_width: str = "median",
        **common,
    ):
        super().__init__(space, **common)
        self.kind, self.prefix, self.arch = arch_part(space)
        _check("variant", variant, VARIANTS)
        _check("cost_metric", cost_metric, COST_METRICS)
        _check("cost_mode", cost_mode, ("penalty", "lagrange"))
        _check("chain_width", chain_width, ("min", "median", "max"))
        for key, value in (("epochs", epochs), ("samples", samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (key == "epochs"):
                raise ValueError(f"darts: {key} must be a whole number >= {int(key == 'epochs')}")
        for key, value in (
            ("cost_weight", cost_weight),
            ("arch_lr", arch_lr),
            ("weight_lr", weight_lr),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"darts: {key} must be a number >= 0, got {value!r}")
        bound = dict(self.objective.constraints).get(cost_metric)
        self.settings = {
            "kind": self.kind,
            "arch": self.arch.to_dict(),
            "prefix": self.prefix,
            "variant": variant,
            "epochs": epochs,
            "weight_lr": float(weight_lr),
            "weight_decay": 1e-4,
            "batch_size": 64,
            "arch_lr": float(arch_lr),
            "samples": samples,
            "cost_metric": cost_metric,
            "cost_weight": float(cost_weight),
            "cost_mode": cost_mode,
            "bound": None if bound is None else float(bound),
            "chain_width": chain_width,
            "seed": 0 if self.seed is None else int(self.seed),
        }
        arch_names = {self.prefix + n for n in self.arch.names}
        self.rest = [n for n in space.names if n not in arch_names]  # training, compression
        self.applied = self._applied()  # the supernet trial's training and compression keys
        self.supernet_id: str | None = None
        self.derived: dict | None = None  # the derived architecture's keys, prefixed
        self.derived_asks = 0

    def _applied(self) -> dict:
        """The `rest` keys of the supernet trial: what it trains its weights with and the
        compression it does not apply, as the space spells them; `ValueError` when the space
        cannot hold them."""
        applied = UNCOMPRESSED | {
            "train.optimizer": "adamw",
            "train.lr": self.settings["weight_lr"],
            "train.weight_decay": self.settings["weight_decay"],
            "train.batch_size": self.settings["batch_size"],
            "train.label_smoothing": 0.0,
        }
        rest = {k: v for k, v in applied.items() if k in self.rest}
        rest = {k: v for k, v in rest.items() if self.space.is_active(k, rest)}
        drawn = self.space.sample(np.random.default_rng(0))
        try:
            self.space.validate({k: v for k, v in drawn.items() if k not in self.rest} | rest)
        except ValueError as error:
            raise ValueError(
                f"darts: the supernet trial trains with {rest or 'no training keys'} and "
                f"compresses nothing; the space cannot record that: {error}"
            ) from error
        return rest

    def _sample_rest(self) -> dict:
        config = self.space.sample(self.rng)
        return {k: v for k, v in config.items() if k in self.rest}

    def ask(self):
        trial = super().ask()
        if SUPERNET in trial.config:
            self.supernet_id = trial.id
        return trial

    def _propose(self) -> dict:
        if self.derived is not None:
            if not self.rest and self.derived_asks:
                raise Exhausted("darts: the derived architecture is trained (nothing else to vary)")
            self.derived_asks += 1
            return {**self.derived, **self._sample_rest()}
        if self.supernet_id is None:
            return {SUPERNET: {**self.settings, "rest": self.applied}}
        return self.space.sample(self.rng)  # a slot free while the supernet trains

    def _priceable(self, config: dict) -> bool:
        return SUPERNET not in config

    def discard(self, trial_id: str) -> None:
        if trial_id == self.supernet_id:  # its worker was lost: the next ask trains it again
            self.supernet_id = None  # (from its checkpoint)
        super().discard(trial_id)

    def _observe(self, record: dict) -> None:
        if record["id"] != self.supernet_id:
            return
        arch = {k: v for k, v in record["config"].items() if k not in self.rest}
        if SUPERNET in arch or record["status"] == "failed":
            self.supernet_id = None  # not derived (failed, or not revised): ask it again
            return
        self.derived = arch

    def _extra_state(self) -> dict:
        return {
            "supernet_id": self.supernet_id,
            "derived": self.derived,
            "derived_asks": self.derived_asks,
        }

    def _load_extra_state(self, extra: Mapping) -> None:
        self.supernet_id = extra.get("supernet_id")
        self.derived = extra.get("derived")
        self.derived_asks = int(extra.get("derived_asks", 0))


def _check(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"darts: {key} {value!r} is not allowed; allowed: {list(allowed)}")
