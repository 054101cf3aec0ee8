"""What the driver does with each report of a trial: a Parquet row, then on its end a tell."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import replace
from pathlib import Path

from ray.tune import Callback

import search
from cluster.raytune.trainable import MODEL, PRICED
from cluster.study import judge, price, warm
from cluster.study.config import Study
from cluster.study.errors import ConfigError
from cluster.study.results import PRICE
from cluster.study.resume import rung_of, told_as
from cluster.study.rows import make_row, unprefixed
from cluster.study.store import StudyStore
from spaces.util import write_atomic
from trainers.export import model_file
from trainers.outcome import noted


class Progress:
    """One live line: trials done, running, failed, best feasible so far."""

    def __init__(self, study: Study):
        self.study = study  # writes to sys.stderr as it is when it prints (Tune pickles this)
        self.interactive = sys.stderr.isatty()
        self.last = 0.0

    def show(self, searcher: search.Searcher, *, done: int, running: int, force=False):
        now = time.monotonic()
        if not force and (now - self.last < (0.5 if self.interactive else 15)):
            return
        self.last = now
        failed = sum(o["status"] == "failed" for o in searcher.observations)
        metric, mode = self.study.objectives[0]
        feasible = [o["metrics"][metric] for o in searcher.usable(feasible_only=True)]
        best = (max if mode == "max" else min)(feasible) if feasible else None
        line = (
            f"[{self.study.name}] {done}/{self.study.trials} done, {running} running, "
            f"{failed} failed, best feasible {metric}: "
            + ("none yet" if best is None else f"{best:.4g}")
            + _pricing(searcher)
        )
        end = "" if self.interactive and not force else "\n"
        print(("\r" if self.interactive else "") + line, end=end, file=sys.stderr, flush=True)


def _pricing(searcher: search.Searcher) -> str:
    """`, priced 40 configs in 3.1 s, 12 refused` for a priced searcher, else nothing."""
    if searcher.price is None:
        return ""
    stats, refused = searcher.pricing, len(searcher.observations) - searcher.trained()
    return f", priced {stats['calls']} configs in {stats['seconds']:.1f} s, {refused} refused"


class Recorder:
    """A `cluster.raytune.ledger.Ledger` for the study runner: writes every report of a trial to
    Parquet, each a rung result the searcher learns from, and tells the searcher when it ends
    (a trial a scheduler ended is `stopped` at its last rung); the searcher's JSON state is
    saved after every change. Tune trial ids map to the study's own trial ids. Writing a row
    never changes the searcher's configs: a config that population-based training swapped in
    is carried by the rows and given to the searcher only with the tell. `pricer`: the
    `cluster.raytune.pricer.RayPricer` that measures the searcher's price (None: the driver)."""

    def __init__(self, store: StudyStore, *, study: Study, writer, done, progress, pricer=None):
        self.store, self.study, self.writer = store, study, writer
        self.ids: dict[str, str] = {}
        self.asked: dict[str, dict] = {}  # the config each trial was asked with
        self.started: dict[str, float] = {}
        self.last: dict[str, dict] = {}  # each running trial's last epoch report
        self.models: dict[str, object] = {}  # Tune's trial id -> its final report's checkpoint
        self.done, self.progress = done, progress
        self.pricing: dict[str, dict] = {}  # each trial's ask's pricing calls and seconds
        self.stop: str | None = None  # why the searcher's price stopped the study
        self.pricer = pricer

    @property
    def searcher(self) -> search.Searcher:
        return self.store.searcher

    def ask(self, tune_id: str):
        """A new trial from the searcher (`priced_ask`), or None when the study's budget is
        taken. Its config carries its priced costs (`PRICED`): the trial does not estimate
        them again."""
        trial = self.priced_ask()
        if trial is None:
            return None
        self.adopt(tune_id, trial.id, trial.config)
        costs = price.priced_costs(trial, self.study.constraints)
        return trial if costs is None else replace(trial, config={**trial.config, PRICED: costs})

    def priced_ask(self) -> search.Trial | None:
        """`searcher.ask()` under the store's lock and claimed, or None when the study's budget
        is taken. Refusals are written as rows; `AskLater` is raised after the block (its
        refusals kept); when the price stops the study (`ask_within_refusals`) `stop` says why
        and `search.NothingFits` is raised."""
        later = None
        with self.store.locked() as searcher:
            taken = warm.counted(searcher, self.study.dir)  # warm rows are free
            if taken >= self.study.trials:
                return None
            before = searcher.pricing  # each ask's price budget is its own:
            each = self.pricer and functools.partial(self.pricer.ask, searcher.price.seconds)
            try:
                trial = price.ask_within_refusals(
                    searcher, asked=taken, study=self.study, refused=self._refused, each=each
                )
            except price.AskLater as error:
                later = error
            except search.NothingFits as error:
                self.stop = str(price.stopped(error, study=self.study))
            except ConfigError as error:
                self.stop = str(error)
            else:
                self.store.claim(trial.id)
                self.pricing[trial.id] = price.spent(before, searcher.pricing)
                return trial
        raise later or search.NothingFits(self.stop)

    def _refused(self, refused) -> None:
        node = "driver" if self.pricer is None else self.pricer.node  # where it was priced
        for row in price.refusal_rows(refused, study=self.study, node=node):
            self.writer.add(row)
        if refused:
            self.writer.flush()  # before the searcher's state that holds them is saved

    def state(self) -> dict:
        return {"ids": dict(self.ids)}

    def restore(self, state) -> None:
        self.ids = dict(state["ids"])

    def adopt(self, tune_id: str, trial: str, config: dict) -> None:
        """A trial asked beforehand (a population member) starts under `tune_id`."""
        self.ids[tune_id] = trial
        self.asked.setdefault(trial, dict(config))
        self.started.setdefault(trial, time.time())

    def _config(self, trial: str, result: dict, config) -> dict:
        """The config that trained what `result` measures (its `trained_with`, else `config`,
        else Tune's): population-based training may have swapped it."""
        ran = result.get("trained_with") or unprefixed(result, "trained_with/")  # Tune flattened it
        ran = ran or config or result.get("config")
        asked = self.asked.get(trial, {})
        if not isinstance(ran, dict) or ran == asked:
            return asked
        space = self.searcher.space
        active = {k: v for k, v in ran.items() if k in space.params}
        return {k: v for k, v in active.items() if space.is_active(k, active)}

    def _row(self, trial: str, result: dict, status: str, config: dict) -> dict:
        elapsed = time.time() - self.started.get(trial, time.time())
        return make_row(
            {**result, **self.pricing.get(trial, {})},
            study=self.study.name,
            trial=trial,
            status=status,
            config=config,
            elapsed_s=elapsed,
        )

    def result(self, tune_id: str, result: dict, config=None) -> None:
        if tune_id in self.ids and not result.get("final"):
            trial = self.ids[tune_id]
            self.last[trial] = result
            ran = self._config(trial, result, config)
            self.writer.add(self._row(trial, result, "running", ran))
            self._report(trial, result, ran)
        self.show()

    def _report(self, trial: str, result: dict, ran: dict) -> None:
        """Every epoch's report is a rung result the searcher learns from (`rung_of`), under
        the store's lock and journaled (a line per epoch: ASHA's rungs and the median rule's
        epochs are all among them); not while population-based training runs another config."""
        rung = rung_of(result, self.searcher)
        if rung is None or ran != self.asked.get(trial):
            return
        with self.store.locked() as searcher:
            if searcher.pending.get(trial) == ran:
                searcher.report(trial, rung[0], fidelity=rung[1])

    def retried(self, tune_id: str, *, why: str) -> None:
        """Tune runs the trial again (its worker failed, `why`): the failed attempt's last
        report is written again as `failed`, not `final`, its error `retried: <why>`, so no
        reader takes it for `running`; the retry's reports, and its final row, follow."""
        trial = self.ids.get(tune_id)
        last = self.last.get(trial)  # kept: a retry a scheduler stops before it reports ends on it
        if last is not None:
            row = {**last, "final": False, "error": f"retried: {why}"}
            ran = self._config(trial, row, None)
            self.writer.add(self._row(trial, row, "failed", ran), flush=True)

    def complete(self, tune_id: str, result: dict | None, *, error: bool, config=None) -> None:
        trial = self.ids.pop(tune_id, None)
        if trial is None:
            return
        last = self.last.pop(trial, {})
        # a paused trial a scheduler stopped ends with no result: its last report stands
        result = dict(result or ({} if error else last))
        if error:
            status = "failed"
            result.setdefault("error", "the trial's Ray worker failed (see the Ray logs)")
        elif result.get("final"):  # a trainable that did not judge its costs is judged here
            result.setdefault("status", "completed")
            status = result["status"] = judge.status_of(result, self.study.constraints)
            if status == "infeasible" and not result.get("violations"):
                result["violations"] = judge.violations(result, self.study.constraints)
        else:
            status = "stopped"
        result["final"] = True
        result.setdefault("step", last.get("step"))
        self._log_traceback(trial, result)
        ran = self._config(trial, result, config)
        noted(result, self._file(self.models.pop(tune_id, None), ran))
        with self.store.locked() as searcher:
            if ran != searcher.pending.get(trial, ran):
                searcher.revise(trial, ran)
            result[PRICE] = searcher.asked_costs.get(trial)  # its raw price, as the tell keeps it
            self.writer.add(self._row(trial, result, status, ran), flush=True)
            metrics, status_told = told_as(result, status, searcher.objective.names)
            searcher.tell(trial, metrics, **status_told)
        self.asked.pop(trial, None)
        self.pricing.pop(trial, None)
        self.done += 1
        self.show()

    def _file(self, checkpoint, config: dict) -> str | None:
        """The trial's model from its final checkpoint to `STUDY/models` (`model_file` of the
        config its row holds, as `paretune export` reads it); None, or why it was not filed."""
        if checkpoint is None:
            return None
        try:
            with checkpoint.as_directory() as folder:
                source = Path(folder) / MODEL
                if not source.exists():  # the trial kept none (its save failed: noted)
                    return None
                path = model_file(Path(self.study.dir) / "models", config)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, source.read_bytes())
        except Exception as error:  # the row keeps the trial's metrics
            return f"model not filed: {type(error).__name__}: {error}"
        return None

    def _log_traceback(self, trial: str, result: dict) -> None:
        """A failed trial's full traceback goes to `STUDY/logs/trial-<id>.txt`; its row keeps
        the one-line reason and where to read the rest."""
        trace = result.pop("traceback", None)
        if not trace:
            return
        path = Path(self.study.dir) / "logs" / f"trial-{trial}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(trace)
        result["error"] = f"{result.get('error', '')} (traceback: logs/{path.name})"

    def show(self, *, force: bool = False) -> None:
        running = len(self.ids)
        self.progress.show(self.searcher, done=self.done, running=running, force=force)


class TrialEvents(Callback):
    """What Tune tells no searcher, given to the recorder on the driver: each trial's final
    checkpoint (its model) as Tune persists it, before the trial's end reaches
    `Recorder.complete`, and each retry of a trial whose worker failed."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        if (trial.last_result or {}).get("final"):
            self.recorder.models[trial.trial_id] = checkpoint

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        why = f"its Ray worker failed (attempt {trial.num_failures} of {trial.max_failures + 1})"
        self.recorder.retried(trial.trial_id, why=why)
