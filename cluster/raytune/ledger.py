"""What `ParetuneSearch` drives: a `Ledger` maps Tune's trials to the searcher's and tells the
searcher how each ended. `TunerLedger` is the one a user's own Tuner gets; the study runner's
`Recorder` (Parquet rows, the study's store) is another."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import search
from cluster.study.resume import rung_of, told_as


@runtime_checkable
class Ledger(Protocol):
    """Tune's trial ids mapped to the searcher's (`ids`), each report of a trial and its end."""

    searcher: search.Searcher
    ids: dict[str, str]  # Tune's trial id -> the searcher's

    def ask(self, tune_id: str) -> search.Trial | None:
        """A new trial of the searcher, run under Tune's `tune_id`; None when the study's
        budget is taken (`search.Exhausted` when the searcher has nothing left)."""

    def result(self, tune_id: str, result: Mapping) -> None:
        """A report of a running trial."""

    def complete(self, tune_id: str, result: Mapping | None, *, error: bool) -> None:
        """The trial ended (`error`: its worker failed; `result` None and no error: Tune removed
        it before it ran): the searcher is told."""

    def state(self) -> dict:
        """What it keeps besides the searcher, as JSON (at least `ids`)."""

    def restore(self, state: Mapping) -> None:
        """Back to a `state()`."""


class TunerLedger:
    """What `ParetuneSearch` keeps in a user's own Tuner: Tune's trial ids mapped to the
    searcher's, the last training iteration each trial reported, and the tell at its end."""

    def __init__(self, searcher: search.Searcher, *, max_t: int | None = None):
        self.searcher, self.max_t = searcher, max_t
        self.ids: dict[str, str] = {}  # Tune's trial id -> the searcher's
        self.seen: dict[str, int] = {}  # the searcher's trial id -> last iteration told

    def ask(self, tune_id: str) -> search.Trial:
        trial = self.searcher.ask()
        self.ids[tune_id] = trial.id
        return trial

    def result(self, tune_id: str, result: Mapping) -> None:
        if tune_id in self.ids:
            trial = self.ids[tune_id]
            self.seen[trial] = result.get("training_iteration", 0)
            rung = rung_of(result, self.searcher)  # a rung result (with a `max_fidelity`)
            if rung is not None and trial in self.searcher.pending:
                self.searcher.report(trial, rung[0], fidelity=rung[1])

    def complete(self, tune_id: str, result: Mapping | None, *, error: bool) -> None:
        trial = self.ids.pop(tune_id, None)
        if trial is None:
            return
        seen = self.seen.pop(trial, None)
        if result is None and not error:  # removed before it ran
            self.searcher.discard(trial)
            return
        status = self.status(result or {}, error=error, seen=seen)
        metrics, told = told_as(dict(result or {}), status, self.searcher.objective.names)
        self.searcher.tell(trial, metrics, **told)

    def state(self) -> dict:
        return {"ids": dict(self.ids), "seen": dict(self.seen)}

    def restore(self, state: Mapping) -> None:
        self.ids, self.seen = dict(state["ids"]), dict(state.get("seen", {}))

    def status(self, result: Mapping, *, error: bool, seen: int | None) -> str:
        """`failed` for an error; `completed` when the function ended on its own (Tune ends
        it on the last result it already showed the searcher), reported `final`, or reached
        `max_t`; else `stopped`: a scheduler or stopper ended it on a result it never showed."""
        if error:
            return "failed"
        iteration = result.get("training_iteration")
        ended = iteration is not None and (iteration == seen or iteration >= (self.max_t or 1e18))
        return "completed" if ended or result.get("final") else "stopped"
