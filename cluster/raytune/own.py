"""A study's own trainable (`trainable: "package.module:function"`) as a Ray Tune trial: the
`Report` it is handed, its result checked, and its end turned into a study's final row."""

from __future__ import annotations

import json
import math
import numbers
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cluster.raytune.trainable import bound, short_error

# Columns a study's rows hold of their own: a trainable may not report these names.
RESERVED = {"study", "trial", "status", "final", "step", "time", "elapsed_s", "node", "config"}
RESERVED |= {"records", "violations", "error", "traceback", "trained_with", "metric_names"}


class ReportError(ValueError):
    """A trainable broke the `Report` interface; the message names it and what is wrong."""


class Infeasible(Exception):
    """Raised by `Report.measure` before the first step when a cost breaks a constraint."""

    def __init__(self, costs: dict):
        super().__init__(f"over a constraint: {costs}")
        self.costs = costs


@dataclass(frozen=True)
class OwnSettings:
    """What a trial of a study's own trainable needs besides its config."""

    trainable: str
    folder: str | None = None
    shipped: bool = False  # the trainable's package ships to the workers (`runtime_env`)
    objectives: tuple[str, ...] = ()
    constraints: Mapping[str, float] = field(default_factory=dict)
    cost: Mapping = field(default_factory=dict)  # trainers.measure's: CostSettings.timing()

    @classmethod
    def of(cls, study) -> OwnSettings:
        from cluster.study.custom import shipped

        return cls(
            trainable=study.trainable,
            folder=study.trainable_path,
            shipped=bool(shipped(study.trainable, study.trainable_path)),
            objectives=tuple(m for m, _ in study.objectives),
            constraints=dict(study.constraints),
            cost=bound(study).cost.timing(),
        )


class Report:
    """What a study's trainable gets as its second argument:

        def train(config: dict, report) -> dict | None:
            model = Net(config["width"])
            report.measure(model, x[:64])  # costs; over a constraint now: `infeasible`, untrained
            for epoch in range(config["epochs"]):
                ...
                report(val_acc=acc, loss=loss)  # one step, one row; a scheduler may stop it here
            report.measure(model, x[:64])  # the trained model's costs join the final row
            return {"val_acc": acc}  # the final result (None: the steps' latest metrics)

    Values are numbers (`int`, `float`, numpy or one-element torch values); anything else,
    or a final result without every objective, fails the trial with a message naming the
    function and the metric. `report.steps` counts the steps so far, `report.metrics` holds
    the latest value of each metric reported and `report.costs` the last measured costs."""

    def __init__(self, send: Callable[[dict], None], settings: OwnSettings):
        self.send, self.settings = send, settings
        self.steps = 0
        self.metrics: dict[str, float] = {}  # the latest value of every metric reported
        self.costs: dict[str, float] = {}

    def __call__(self, metrics: Mapping | None = None, /, **more) -> None:
        values = self._numbers({**(metrics or {}), **more}, "reported")
        self.steps += 1
        self.metrics.update(values)
        self.send({**values, "step": self.steps, "final": False, "metric_names": list(values)})

    def measure(self, model, example) -> dict:
        """`trainers.measure(model, example)` on the study's runtime (`deploy:`, its
        `latency_*` trial settings, a device server under `latency:`); the costs join the final
        row. Before the first step, a cost over a study's constraint ends the trial
        `infeasible` (it raises `Infeasible`, which the study catches)."""
        from trainers.cost import measure

        costs = measure(model, example, **self.settings.cost)
        self.costs.update(costs)
        bounds = self.settings.constraints
        if self.steps == 0 and any(costs.get(k, -math.inf) > v for k, v in bounds.items()):
            raise Infeasible(dict(self.costs))
        return costs

    def final(self, returned) -> dict:
        """The final result: the latest steps' metrics, the costs, then what was returned."""
        if returned is not None and not isinstance(returned, Mapping):
            raise ReportError(
                f"{self.settings.trainable} returned a {type(returned).__name__}: return a "
                "dict of metrics, or None to end with the metrics last reported"
            )
        result = {**self.metrics, **self.costs, **self._numbers(returned or {}, "returned")}
        missing = [m for m in self.settings.objectives if m not in result]
        if missing:
            reported = sorted(result) or "nothing"
            raise ReportError(
                f"{self.settings.trainable} never reported the objective {missing[0]!r} "
                f"(it reported {reported})"
            )
        return result

    def _numbers(self, values: Mapping, verb: str) -> dict[str, float]:
        out = {}
        for key, value in values.items():
            if not isinstance(key, str) or key in RESERVED:
                raise ReportError(
                    f"{self.settings.trainable} {verb} {key!r}: a metric needs a name of its "
                    f"own (not one of {sorted(RESERVED)})"
                )
            number = value.item() if hasattr(value, "item") and callable(value.item) else value
            if isinstance(number, bool) or not isinstance(number, numbers.Real):
                raise ReportError(f"{self.settings.trainable} {verb} {key}={value!r}: not a number")
            out[key] = float(number)
        return out


def run_own(config: dict, settings: OwnSettings, *, send: Callable[[dict], None]) -> None:
    """Run the trainable on `config`, each step sent as a row (`final: False`), then the final
    row (`final: True`): `completed` with its result, `infeasible` with the costs that broke a
    constraint, or `failed` with one line of why (the trainable raised, broke the interface,
    or cannot be imported) and the traceback; the study goes on."""
    from cluster.study.custom import load_trainable
    from cluster.study.errors import ConfigError
    from search import Objective

    report = Report(send, settings)
    try:
        function = load_trainable(settings.trainable, settings.folder, shipped=settings.shipped)
        final = {**report.final(function(dict(config), report)), "status": "completed"}
    except Infeasible as outcome:  # rejected before training, as the built-in trainer does
        over = Objective.build("-", "max", settings.constraints).violations(outcome.costs)
        final = {**outcome.costs, "status": "infeasible", "violations": json.dumps(over)}
    except (ReportError, ConfigError) as error:  # the message names function and problem
        final = {"status": "failed", "error": str(error)}
    except Exception as error:  # the study goes on; the row keeps the reason
        final = {"status": "failed", "error": short_error(error)}
        final["traceback"] = traceback.format_exc()
    names = sorted(k for k in final if k not in RESERVED)
    send({**final, "step": report.steps, "final": True, "metric_names": names})


def own_trainable(config: dict, settings: OwnSettings) -> None:
    """The Ray Tune function of a study's own trainable: `run_own` reporting to Tune."""
    import ray
    from ray import tune

    node = ray.get_runtime_context().get_node_id()
    run_own(config, settings, send=lambda metrics: tune.report({**metrics, "node": node}))
