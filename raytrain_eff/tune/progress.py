"""Tune trial progress for Prometheus: Ray's Tune exports nothing of its own."""
from __future__ import annotations

from ray.tune import Callback


class TrialProgressCallback(Callback):
    def __init__(self, sweep: str, monitor: dict, metric: str, mode: str):
        from raytrain_eff.monitor.push import TuneProgress
        self.progress = TuneProgress(run=sweep, host=monitor["host"], port=monitor["port"])
        self.metric, self.sign, self.best = metric, (1 if mode == "min" else -1), None

    def _update(self, trials) -> None:
        states = [t.status for t in trials]
        self.progress.update(trials_total=len(trials),
                             trials_running=states.count("RUNNING"),
                             trials_terminated=states.count("TERMINATED"),
                             trials_errored=states.count("ERROR"), best_metric=self.best)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is not None and (self.best is None or self.sign * value < self.sign * self.best):
            self.best = value
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trials)
