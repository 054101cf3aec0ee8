"""Any paretune searcher as a `ray.tune.search.Searcher`."""

from __future__ import annotations

import json
from pathlib import Path

from cluster.raytune.recorder import Recorder
from search.base import Exhausted
from spaces.util import write_json


def tune_searcher(recorder: Recorder):
    from ray.tune.search import Searcher as TuneSearcherBase

    class TuneSearcher(TuneSearcherBase):
        """Asks on `suggest`; reports and completions go to the `Recorder`; `save`/`restore`
        hold the searcher's JSON state."""

        def __init__(self):
            metric, mode = recorder.study.objectives[0]
            super().__init__(metric=metric, mode=mode)
            self.recorder = recorder  # not `.searcher`: Tune walks that attribute
            self.max_concurrent = 0  # 0: no limit of its own

        def set_search_properties(self, metric, mode, config, **spec):
            return True

        def set_max_concurrency(self, max_concurrent: int) -> bool:
            self.max_concurrent = max_concurrent
            return True  # Tune then needs no ConcurrencyLimiter around it

        def suggest(self, trial_id):
            if self.max_concurrent and len(self.recorder.ids) >= self.max_concurrent:
                return None  # Tune asks again when a trial ends
            try:
                trial = self.recorder.ask(trial_id)
            except Exhausted:
                trial = None
            return TuneSearcherBase.FINISHED if trial is None else dict(trial.config)

        def on_trial_result(self, trial_id, result):
            self.recorder.result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.recorder.complete(trial_id, result, error=error)

        def get_state(self) -> dict:
            return {"searcher": self.recorder.searcher.state_dict()}

        def set_state(self, state: dict) -> None:
            self.recorder.searcher.load_state_dict(state["searcher"])

        def save(self, checkpoint_path):
            write_json(Path(checkpoint_path), self.recorder.searcher.state_dict())

        def restore(self, checkpoint_path):
            self.recorder.searcher.load_state_dict(json.loads(Path(checkpoint_path).read_text()))

    return TuneSearcher()
