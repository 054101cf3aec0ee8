"""The contract every searcher passes: inherit `SearcherContract` in a pytest class and set
`searcher_name` (and `options`, `budget`, `seed_sensitive` where the defaults do not fit).

    class TestRandom(SearcherContract):
        searcher_name = "random"
"""

from __future__ import annotations

import json
import math

import numpy as np

import search
from spaces import Choice, Float, Int, Space

PLAIN_TYPES = (str, int, float, bool, type(None))


def mixed_space() -> Space:
    """Floats (linear and log), an int, a choice and a conditional float."""
    return Space(
        {
            "x": Float(-2.0, 2.0),
            "lr": Float(1e-4, 1e-1, log=True),
            "n": Int(1, 8),
            "act": Choice(("relu", "gelu", "silu")),
            "use_t": Choice((False, True)),
            "t": Float(1.0, 10.0, when={"use_t": True}),
        }
    )


def toy_metrics(config: dict) -> dict:
    """A smooth objective with its best at x=0.5, lr=1e-2, act=gelu; `cost` grows with n."""
    score = -((config["x"] - 0.5) ** 2) - (math.log10(config["lr"]) + 2.0) ** 2 / 4
    score += 0.3 * (config["act"] == "gelu") - 0.05 * config["n"]
    if config["use_t"]:
        score -= 0.01 * config["t"]
    return {"score": score, "cost": float(config["n"])}


PRICED_BOUND = 3.0  # `toy_price`'s bound: n in 1..3 fits, 4..8 does not


def toy_price(config: dict) -> dict:
    """`toy_metrics`'s cost, known before training: it depends on `n` alone."""
    return {"cost": float(config["n"])}


def record_changes(searcher: search.Searcher, steps: int, metrics=toy_metrics) -> list[dict]:
    """Every kind of change (asks; rung reports; tells completed, failed and stopped, at a
    fidelity; revise, discard, add, reserve_ids) made through `searcher.record`, `steps`
    rounds; returns the events as read back from JSON. A revised config is drawn from the
    space (for darts: the supernet's derivation)."""
    events, draws = [], np.random.default_rng(0)

    def change(name, *args, **kwargs):
        result, event = searcher.record(name, *args, **kwargs)
        events.append(json.loads(json.dumps(event, default=search.plain)))
        return result

    for step in range(steps):
        first, second = change("ask"), change("ask")
        if step % 3 == 0:
            change("revise", first.id, searcher.space.sample(draws))
        told = None if step % 4 == 2 else metrics(searcher.pending[first.id])
        change("tell", first.id, told)
        if step % 3 == 1:
            change("discard", second.id)
        else:
            status = "stopped" if step % 2 else None
            change("report", second.id, metrics(searcher.pending[second.id]), fidelity=1 + step % 3)
            fidelity = 4 if status and step % 4 == 1 else None  # else its highest rung
            told = metrics(searcher.pending[second.id])
            change("tell", second.id, told, status=status, fidelity=fidelity)
    config = searcher.space.sample(draws)
    change("add", config, metrics(config), status="completed")
    change("reserve_ids", searcher.next_id + 5)
    return events


def check_replay(make, *, steps: int, metrics=toy_metrics) -> None:
    """The replay contract: the events of `record_changes`, applied to a fresh searcher (as the
    recorded one started) or to one of another seed loaded from the state taken halfway, leave
    the state the changes left, and it goes on identically. `make(seed=...)` creates one."""
    original = make(seed=5)
    first = record_changes(original, steps // 2, metrics)
    halfway = json.loads(json.dumps(original.state_dict(), default=search.plain))
    rest = record_changes(original, steps - steps // 2, metrics)
    replayed, resumed = make(seed=5), make(seed=98)
    resumed.load_state_dict(halfway)
    for searcher, events in ((replayed, first + rest), (resumed, rest)):
        for event in events:
            searcher.apply(event)
    state = json.loads(json.dumps(original.state_dict(), default=search.plain))
    nexts = [original.ask().config for _ in range(3)]
    for searcher in (replayed, resumed):
        assert json.loads(json.dumps(searcher.state_dict(), default=search.plain)) == state
        assert [searcher.ask().config for _ in range(3)] == nexts


class SearcherContract:
    searcher_name: str = ""
    options: dict = {}
    budget: int = 12
    seed_sensitive: bool = True

    def make(self, space=None, **kwargs) -> search.Searcher:
        args = {"metric": "score", "mode": "max", "seed": 0, **self.options, **kwargs}
        return search.create(self.searcher_name, space or mixed_space(), **args)

    def run(self, searcher, steps: int) -> list[dict]:
        configs = []
        for _ in range(steps):
            trial = searcher.ask()
            configs.append(trial.config)
            searcher.tell(trial.id, toy_metrics(trial.config))
        return configs

    def test_configs_are_valid_and_plain(self):
        searcher = self.make()
        for config in self.run(searcher, self.budget):
            searcher.space.validate(config)
            assert all(isinstance(v, PLAIN_TYPES) for v in config.values()), config
            assert json.loads(json.dumps(config)) == config

    def test_same_seed_same_configs(self):
        assert self.run(self.make(seed=3), self.budget) == self.run(self.make(seed=3), self.budget)

    def test_other_seed_other_configs(self):
        if self.seed_sensitive:
            assert self.run(self.make(seed=3), self.budget) != self.run(
                self.make(seed=4), self.budget
            )

    def test_state_round_trip_continues_identically(self):
        original = self.make(seed=5)
        self.run(original, self.budget // 2)
        pending = original.ask()
        state = json.loads(json.dumps(original.state_dict()))
        resumed = self.make(seed=99)
        resumed.load_state_dict(state)
        for searcher in (original, resumed):
            searcher.tell(pending.id, toy_metrics(pending.config))
        assert self.run(resumed, self.budget // 2) == self.run(original, self.budget // 2)

    def test_a_state_dict_is_a_copy_later_changes_leave_alone(self):
        searcher = self.make()
        self.run(searcher, self.budget // 2)
        state = searcher.state_dict()
        before = json.dumps(state, default=search.plain)
        self.run(searcher, self.budget // 2)
        assert json.dumps(state, default=search.plain) == before

    def test_recorded_changes_replay_exactly(self):
        check_replay(self.make, steps=self.budget // 2)

    def test_rung_results_replay_exactly(self):
        check_replay(lambda seed: self.make(seed=seed, max_fidelity=8), steps=self.budget // 2)

    def test_rungs_are_kept_but_never_a_result(self):
        searcher = self.make(max_fidelity=8)
        self.run(searcher, 3)
        trial = searcher.ask()
        rung = {"score": 1e6, "cost": 1.0}  # better than any full result
        assert searcher.report(trial.id, rung, fidelity=2)["metrics"]["score"] == 1e6
        record = searcher.tell(trial.id, rung, status="stopped")
        assert record["fidelity"] == 2 and record["rungs"][0]["fidelity"] == 2
        assert trial.id not in {o["id"] for o in searcher.usable()}
        assert searcher.best()["metrics"]["score"] < 1e6
        for bad in (0, -1, 9, float("nan"), "2"):
            other = searcher.ask()
            try:
                searcher.report(other.id, rung, fidelity=bad)
            except ValueError as err:
                assert "fidelity" in str(err)
            else:
                raise AssertionError(f"fidelity {bad!r} must raise")

    def test_failed_and_nonfinite_results_are_failures(self):
        searcher = self.make()
        self.run(searcher, 2)
        for bad in (None, {"score": float("nan")}, {"score": float("inf")}):
            trial = searcher.ask()
            assert searcher.tell(trial.id, bad)["status"] == "failed"
        self.run(searcher, 3)
        failed = [o for o in searcher.observations if o["status"] == "failed"]
        assert len(failed) == 3
        best = searcher.best()
        assert best is not None and math.isfinite(best["metrics"]["score"])

    def test_pending_configs_differ(self):
        small = Space({"a": Choice(("p", "q", "r", "s")), "b": Choice((1, 2))})
        searcher = self.make(small)
        configs = [searcher.ask().config for _ in range(8)]
        assert len({json.dumps(c, sort_keys=True) for c in configs}) == 8

    def test_bad_tells_raise(self):
        searcher = self.make()
        trial = searcher.ask()
        for wrong in ("no-such-id",):
            try:
                searcher.tell(wrong, {"score": 1.0})
            except ValueError as err:
                assert "unknown" in str(err)
            else:
                raise AssertionError("telling an unknown id must raise")
        try:
            searcher.tell(trial.id, {"other": 1.0})
        except ValueError as err:
            assert "score" in str(err)
        else:
            raise AssertionError("telling without the metric must raise")
        searcher.tell(trial.id, {"score": 1.0})
        try:
            searcher.tell(trial.id, {"score": 1.0})
        except ValueError as err:
            assert "already told" in str(err)
        else:
            raise AssertionError("telling the same id twice must raise")

    def test_constraint_bookkeeping(self):
        searcher = self.make(constraints={"cost": 4.0})
        statuses = {}
        for _ in range(self.budget):
            trial = searcher.ask()
            metrics = toy_metrics(trial.config)
            statuses[trial.id] = "completed" if metrics["cost"] <= 4.0 else "infeasible"
            record = searcher.tell(trial.id, metrics)
            assert record["status"] == statuses[trial.id]
            assert (record["violation"] > 0) == (statuses[trial.id] == "infeasible")
        best = searcher.best()
        if best is not None:
            assert best["metrics"]["cost"] <= 4.0
            feasible = [o["metrics"]["score"] for o in searcher.usable(feasible_only=True)]
            assert best["metrics"]["score"] == max(feasible)

    def test_a_priced_ask_never_proposes_a_config_over_a_bound(self):
        searcher = self.make(constraints={"cost": PRICED_BOUND}, price=toy_price)
        ids = set()
        for _ in range(self.budget):
            trial = searcher.ask()
            assert trial.config["n"] <= PRICED_BOUND, trial.config
            assert trial.costs == toy_price(trial.config)
            for refusal in trial.refused:
                assert refusal["costs"]["cost"] > PRICED_BOUND and refusal["priced"]
                assert refusal["status"] == "infeasible" and refusal["metrics"] is None
                assert refusal in searcher.observations
            ids |= {trial.id} | {r["id"] for r in trial.refused}
            searcher.tell(trial.id, toy_metrics(trial.config))
        assert ids == {o["id"] for o in searcher.observations}  # one id each, none twice
        assert searcher.trained() == self.budget
        assert all(o["status"] == "completed" for o in searcher.usable())

    def test_a_priced_searcher_replays_its_refusals(self):
        check_replay(
            lambda seed: self.make(seed=seed, constraints={"cost": PRICED_BOUND}, price=toy_price),
            steps=self.budget // 2,
        )

    def test_several_objectives_keep_a_front(self):
        searcher = self.make(metric=["score", "cost"], mode=["max", "min"])
        self.run(searcher, self.budget)
        front = searcher.front()
        assert front
        points = np.array([[-o["metrics"]["score"], o["metrics"]["cost"]] for o in front])
        for p in points:
            assert not np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))
