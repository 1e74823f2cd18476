"""Tune trial progress for Prometheus: Ray's Tune exports nothing of its own."""

from __future__ import annotations

from ray.tune import Callback


class TrialProgressCallback(Callback):
    """Holds the exporter's address, never its actor handle: Tune pickles its callbacks into
    ``tuner.pkl``, and a handle from a finished Ray session cannot be restored. The handle is
    acquired on first use, so a resumed sweep gets one from its own session."""

    def __init__(self, sweep: str, monitor: dict, metric: str, mode: str):
        self.sweep, self.host, self.port = sweep, monitor["host"], monitor["port"]
        self.metric, self.sign, self.best = metric, (1 if mode == "min" else -1), None
        self._progress = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_progress": None}

    @property
    def progress(self):
        if self._progress is None:
            from raytrain_eff.monitor.push import TuneProgress

            self._progress = TuneProgress(run=self.sweep, host=self.host, port=self.port)
        return self._progress

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        _ = self.progress  # acquired at the start, resumed or not

    def get_state(self) -> dict:
        return {"best": self.best}  # Tune saves it with the experiment: kept on resume

    def set_state(self, state: dict) -> None:
        self.best = state["best"]

    def _update(self, trials) -> None:
        states = [t.status for t in trials]
        self.progress.update(
            trials_total=len(trials),
            trials_running=states.count("RUNNING"),
            trials_terminated=states.count("TERMINATED"),
            trials_errored=states.count("ERROR"),
            best_metric=self.best,
        )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is not None and (self.best is None or self.sign * value < self.sign * self.best):
            self.best = value
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trials)
