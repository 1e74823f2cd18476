"""A space's scheduler as a Ray Tune scheduler, with budgets in the trial's own units.

A trial's budget is what its own config trains on: under ``time_attr: samples_seen``, its
steps x its batch size x its grad_accum x its workers. ASHA's ``max_t`` is the largest budget
any trial of the space can have, so no trial is cut because another configuration would have
finished there; rungs stay in samples, which are comparable across batch sizes.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from raytrain_eff.tune import space as space_mod
from raytrain_eff.tune.reported import BUDGETED

if TYPE_CHECKING:
    from raytrain_eff.tune.space import SweepSpec

BUDGET_KEYS = (
    "run.steps",
    "data.batch_size",
    "train.grad_accum",
    "scaling.num_workers",
    "run.report_interval",
)


def trial_budget(values: dict, time_attr: str) -> float | None:
    """The full run of one trial in ``time_attr`` units (None: unknown before it runs)."""
    steps = values["run.steps"]
    if time_attr == "samples_seen":
        return float(
            steps
            * values["data.batch_size"]
            * values["train.grad_accum"]
            * max(values["scaling.num_workers"], 1)
        )
    if time_attr == "step":
        return float(steps)
    if time_attr == "training_iteration":  # one report per interval, and the last step's
        return float(math.ceil(steps / values["run.report_interval"]))
    assert time_attr not in BUDGETED
    return None


def budget_range(spec: SweepSpec, base: dict) -> tuple[float, float] | None:
    """(smallest, largest) trial budget over the space: the ends of every searched factor."""
    choices = []
    for key in BUDGET_KEYS:
        at_base = space_mod.base_value(base, key)
        entry = next((e for e in spec.entries if e.key == key), None)
        values = (
            [at_base] if entry is None else entry.extremes() + ([at_base] if entry.when else [])
        )
        choices.append((min(values), max(values)))
    budgets = [
        trial_budget(dict(zip(BUDGET_KEYS, combo, strict=True)), spec.scheduler.time_attr)
        for combo in itertools.product(*choices)
    ]
    if budgets[0] is None:
        return None
    return min(b for b in budgets if b is not None), max(b for b in budgets if b is not None)


def planned_steps(base: dict, sample: dict) -> int:
    """The step a trial ends at: its run.steps, or its run.stop_after if earlier."""
    steps = space_mod.sample_value(base, sample, "run.steps")
    stop = space_mod.sample_value(base, sample, "run.stop_after")
    return int(min(steps, stop or steps))


def scheduler(spec: SweepSpec, base: dict):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler
    low, high = budget_range(spec, base) or (None, None)
    if s.type == "asha":
        max_t = s.max_t or high
        assert max_t is not None  # space.load requires max_t where no budget is known
        # Ray annotates max_t and grace_period as int, but time_attr may be fractional (wall_s)
        # and ASHA's rung arithmetic is in floats anyway
        return ASHAScheduler(
            time_attr=s.time_attr,
            max_t=max_t,  # type: ignore[arg-type]
            grace_period=s.grace_period or max((low or max_t) / 8, 1),  # type: ignore[arg-type]
            reduction_factor=s.reduction_factor,
        )
    if s.type == "pbt":
        from raytrain_eff.tune.sweep import _domain

        mutations = {
            e.key: e.args if e.kind == "choice" else _domain(e)
            for e in spec.entries
            if e.kind != "grid"
        }
        interval = s.perturbation_interval or (low or 0) / 4
        return FinishingPBT(
            base=base,
            time_attr=s.time_attr,
            hyperparam_mutations=mutations,
            perturbation_interval=interval,
            quantile_fraction=s.quantile_fraction,
            synch=s.synch,
        )
    return FIFOScheduler()


class FinishingPBT(PopulationBasedTraining):
    """PBT that leaves a trial's final report alone.

    Exploiting there would restart the trial from the donor's last checkpoint with no steps
    left, so it would end on the donor's metric; pausing it there (synchronous PBT) would
    restart it for zero steps. A finished trial still donates if it is in the upper quantile.
    """

    SAVED = ("orig_tag", "last_score", "last_perturbation_time", "last_train_time", "last_result")

    def __init__(self, *, base: dict, **kwargs):
        super().__init__(**kwargs)
        self._base = base
        self._saved: dict[str, dict] = {}  # trial id -> its state when the sweep stopped

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        for attr, value in self._saved.get(trial.trial_id, {}).items():
            setattr(self._trial_state[trial], attr, value)

    def _final(self, trial: Trial, result: dict | None) -> bool:
        return (result or {}).get("step", 0) >= planned_steps(self._base, trial.config)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch:
            self._unblock_sync(tune_controller)
        if self._final(trial, result) and trial.status != Trial.PAUSED:
            return TrialScheduler.CONTINUE
        return decision

    def _unblock_sync(self, tune_controller) -> None:
        """Ray moves the next synchronisation point at most to the furthest trial's time; when
        every trial already stands there, none may run again. That happens when reports jump
        by more than an interval (reports sparser than perturbations, or a resume whose saved
        state is older than the trials' checkpoints). Move the point one interval past them."""
        times = [self._trial_state[t].last_train_time for t in tune_controller.get_live_trials()]
        if times and min(times) >= self._next_perturbation_sync:
            self._next_perturbation_sync = max(times) + self._perturbation_interval

    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
        if self._final(trial, self._trial_state[trial].last_result) and not (
            trial in upper_quantile and trial.status == Trial.RUNNING
        ):
            return
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)


def state_callbacks(sched) -> list:
    """Callbacks that save what a resumed sweep's scheduler must remember."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    if isinstance(sched, AsyncHyperBandScheduler):
        return [RungState(sched)]
    return [PBTState(sched)] if isinstance(sched, FinishingPBT) else []


class RungState(Callback):
    """ASHA's rungs, saved with the experiment's state.

    Tune saves its callbacks' state but not its scheduler's, so a resumed ASHA would compare
    the remaining trials with none of the finished ones. This callback refers to the scheduler
    itself: Tune pickles both into one ``tuner.pkl``, so after a restore it still refers to
    the scheduler Tune uses, and refills its rungs before any trial reports.
    """

    def __init__(self, asha):
        self.asha = asha

    def get_state(self) -> dict:
        return {
            "rungs": [
                [(milestone, dict(recorded)) for milestone, recorded in b._rungs]
                for b in self.asha._brackets
            ]
        }

    def set_state(self, state: dict) -> None:
        for bracket, rungs in zip(self.asha._brackets, state["rungs"], strict=True):
            for (milestone, recorded), (saved_at, saved) in zip(bracket._rungs, rungs, strict=True):
                assert milestone == saved_at, "the space's budget changed since the sweep began"
                recorded.update(saved)


class PBTState(Callback):
    """PBT's per-trial times and scores and its next synchronisation point, saved with the
    experiment like ``RungState``; without them a resumed PBT would perturb every trial at
    its first report, off the schedule."""

    def __init__(self, pbt: FinishingPBT):
        self.pbt = pbt

    def get_state(self) -> dict:
        return {
            "next_sync": self.pbt._next_perturbation_sync,
            "trials": {
                t.trial_id: {a: getattr(s, a) for a in FinishingPBT.SAVED}
                for t, s in self.pbt._trial_state.items()
            },
        }

    def set_state(self, state: dict) -> None:  # before Tune adds the restored trials
        self.pbt._next_perturbation_sync = state["next_sync"]
        self.pbt._saved = state["trials"]
