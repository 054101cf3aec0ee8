"""A study's price measured where its trials run: the trial's own cost function on a Ray actor,
so the driver's CPU is not what is timed and pricing never holds Tune's event loop for long."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import uuid

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cluster.study.price import measure_costs
from search.errors import Unpriced
from search.price import PRICE_SECONDS

NAMESPACE = "paretune"  # the pricers' Ray namespace: `ray list actors`, or `ray.get_actor`


class RayPricer:
    """`measure(config) -> costs` for `cluster.study.price.study_price`: the trial's own cost
    function (`measure_costs`, with the trial's `settings` and the data's `shape`) run on a Ray
    actor that `start` makes once per Tune fit (named `pricer-NAME`, in `NAMESPACE`) and `stop`
    ends. The actor takes no CPU (a price waiting for a CPU that trials hold would stall Tune's
    event loop, which waits on it) and sits on a node with CPUs other than the driver's where
    the cluster has one, else on the driver's: pinned there (node affinity, not soft: Ray's
    soft affinity put it on the driver's node in 5 of 6 tries on a two-node cluster whose
    worker had just run a task); should that node go, the pricer is lost (below) until the
    next fit. It takes no GPU either (one held for a fit is one trial fewer; one waited for
    stalls the ask): it measures on the CPU, which changes no cost but the latency a GPU trial
    times on the `torch` runtime (on its GPU): that one it leaves to the trial.

    Each call waits at most what is left of the ask's `seconds` (`ask` starts them again, as
    `search.Price`'s per-ask budget does); a call past them, a lost actor (every later call then
    unpriced at once) or a failure to measure leaves the config unpriced this once
    (`search.Unpriced`: not cached; its trial measures its costs before training) and is said
    once on stderr. `node`: the Ray node id of the last price measured ("driver" before any)."""

    def __init__(self, study, *, settings, shape):
        gpu = study.gpus_per_trial > 0 and settings.device != "cpu"
        self.drop = {"latency_ms"} if gpu and settings.cost.runtime == "torch" else set()
        self.settings = dataclasses.replace(settings, device="cpu")
        self.study, self.shape = study.name, tuple(shape)
        self.actor, self.node, self.left, self.said = None, "driver", PRICE_SECONDS, set()

    def start(self, name: str) -> None:
        """The actor of one Tune fit, `name` its own (a fit's), placed as above."""
        here = ray.get_runtime_context().get_node_id()
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]
        away = [node for node in nodes if node != here]
        strategy = NodeAffinitySchedulingStrategy((away or [here])[0], soft=False)
        options = {"name": f"pricer-{name}-{uuid.uuid4().hex[:8]}", "namespace": NAMESPACE}
        self.actor = Measurer.options(scheduling_strategy=strategy, **options).remote(
            self.settings, self.shape
        )
        self.said = set()

    def stop(self) -> None:
        if self.actor is not None:
            ray.kill(self.actor)
        self.actor = None

    def ask(self, seconds: float) -> None:
        """A new ask, with `seconds` of pricing."""
        self.left = seconds

    def __call__(self, config: dict) -> dict:
        started = time.perf_counter()
        try:
            return self._measured(config)
        finally:
            self.left -= time.perf_counter() - started

    def _measured(self, config: dict) -> dict:
        if self.actor is None:
            raise Unpriced("the pricer was lost")  # its trials measure their own costs
        if self.left <= 0:
            raise self._unpriced("timeout", "the ask's pricing seconds are spent")
        answer = self.actor.measure.remote(config)
        try:
            self.node, costs = ray.get(answer, timeout=self.left)
        except GetTimeoutError:
            with contextlib.suppress(RayError):
                ray.cancel(answer)  # a price nobody waits for is not measured (when queued)
            why = f"a config took over the {self.left:.1f} s left of its ask's pricing budget"
            raise self._unpriced("timeout", why) from None
        except RayActorError as error:
            self.actor = None
            raise self._unpriced("lost", f"the pricer was lost ({_first_line(error)})") from None
        except RayError as error:
            why = f"a config failed to price ({_first_line(error)})"
            raise self._unpriced("error", why) from None
        return {k: v for k, v in costs.items() if k not in self.drop}

    def _unpriced(self, kind: str, why: str) -> Unpriced:
        if kind not in self.said:
            self.said.add(kind)
            print(
                f"[{self.study}] pricing on Ray: {why}; such configs are unpriced and their "
                "trials measure their costs before training",
                file=sys.stderr,
                flush=True,
            )
        return Unpriced(why)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


@ray.remote(num_cpus=0, max_restarts=0)
class Measurer:
    """The actor of `RayPricer`: `measure(config)` is `(its node id, measure_costs(...))`."""

    def __init__(self, settings, shape):
        import trainers.estimate  # noqa: F401 - torch loads once, before the first price

        self.settings, self.shape = settings, shape
        self.node = ray.get_runtime_context().get_node_id()

    def measure(self, config: dict) -> tuple[str, dict]:
        return self.node, measure_costs(config, settings=self.settings, shape=self.shape)
