"""Run a search space on Ray Tune: every trial is a full engine run (Train inside Tune).

Each trial's Tune function builds the engine's TorchTrainer with ``TuneReportCallback``, so
trials report exactly what training runs report (``samples_seen``, ``val_loss``, ...) and
keep their own ``metrics.parquet`` under ``<sweep>/trials/<sweep>-<trial id>``. Trials
evaluate at every report so schedulers compare fresh metrics. Their rank 0s send progress to
one ``ProgressSink`` on the sweep's driver (``engine/console.py``), so each line shows once.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from ray.train.v2.api.callback import UserCallback

from raytrain_eff import config as config_mod
from raytrain_eff.engine import (
    checkpoint,
    console,
    launch,
    resources,
    shared_storage,
    storage,
    trials,
)
from raytrain_eff.engine.checkpoint_manager import StartPoint
from raytrain_eff.tune import reported, schedulers
from raytrain_eff.tune import space as space_mod
from raytrain_eff.tune.space import Entry, SweepSpec
from raytrain_eff.typed import ConfigError, nearest


def param_space(spec: SweepSpec) -> dict:
    """Plain Tune domains only: Tune stores their draws in the trial's config, while a
    ``sample_from`` function is drawn again when a sweep is restored. A conditional entry is
    drawn in every trial and masked where its condition fails (``space.effective``)."""
    from ray import tune

    out = {}
    for e in spec.entries:
        if e.kind == "grid" and not e.when:
            out[e.key] = tune.grid_search(e.args)
        else:
            out[e.key] = _domain(e)
    return out


def _domain(e: Entry):
    """A non-grid entry as a Ray Tune search domain (a conditional grid draws like a choice)."""
    from ray import tune

    if e.kind in ("choice", "grid"):
        return tune.choice(e.args)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[
        e.kind
    ](*e.args)


def trial_config(base: dict, sample: dict, name: str) -> config_mod.ExperimentConfig:
    raw = config_mod.apply_overrides(base, space_mod.overrides_for(sample))
    cfg = config_mod.from_dict(raw, where=f"trial {name}")
    run = cfg.run
    run = dataclasses.replace(run, name=name, eval_interval=run.report_interval)
    return config_mod.replace(cfg, run=run)


@dataclasses.dataclass(frozen=True)
class Shown:
    """How trials reach the sweep's console: ``progress``, the sweep's one ``ProgressSink``
    (every trial's rank 0 sends its lines there); ``quiet``, Ray's logs go to files."""

    progress: object
    quiet: bool


def make_trainable(
    base: dict,
    sweep_name: str,
    trials_dir: str,
    pbt: bool,
    conditions: dict[str, dict] | None = None,
    shown: Shown | None = None,
):
    shown = shown or Shown(progress=None, quiet=False)

    def run_trial(sample: dict) -> None:
        from ray import tune

        sample = space_mod.effective(conditions or {}, sample)
        trial_id = tune.get_context().get_trial_id()
        donor = tune.get_checkpoint()
        if donor is not None:  # a PBT exploit: continue from the donor trial's weights
            step = checkpoint.read_manifest(pathlib.Path(donor.path))["step"]
            name = trials.segment_name(f"{sweep_name}-{trial_id}", step)
        else:
            name = f"{sweep_name}-{trial_id}"
        cfg = trial_config(base, sample, name)
        storage.write_bytes(
            storage.join(trials_dir, name, launch.CONFIG_FILE), config_mod.dump(cfg).encode()
        )
        if shown.quiet:  # this trial's own Ray loggers (its TorchTrainer's) into its logs/
            console.ray_logs_to_file(console.driver_log(storage.join(trials_dir, name), name))
        if pbt:
            _fit_reporting_checkpoints(cfg, name, trial_id, trials_dir, donor, shown)
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            _trainer(cfg, name, trial_id, trials_dir, shown, TuneReportCallback()).fit()

    return run_trial


def _trainer(
    cfg,
    name: str,
    trial_id: str,
    trials_dir: str,
    shown: Shown,
    callback,
    start: StartPoint | None = None,
):
    """The trial's TorchTrainer: ``callback`` hands its reports to Tune; its progress and
    failures go to the sweep's console."""
    callbacks = [callback]
    if shown.progress is not None:
        callbacks.append(console.failure_notice(shown.progress, name))
    return launch.build_trainer(
        cfg,
        name,
        trial=trial_id,
        storage_path=trials_dir,
        callbacks=callbacks,
        start=start,
        progress=shown.progress,
        worker_logs=shown.quiet,
    )


class CheckpointRelay(UserCallback):
    """Train controller callback: hands each report and its checkpoint path to the trial.

    ``TuneReportCallback`` passes metrics only; PBT needs Tune checkpoints to copy weights
    from one trial to another, so under PBT the trial reports them itself.
    """

    def __init__(self, queue):
        self.queue = queue

    def after_report(self, run_context, metrics, checkpoint):
        self.queue.put((metrics[0], checkpoint.path if checkpoint else None))


def _fit_reporting_checkpoints(cfg, name, trial_id, trials_dir, donor, shown: Shown) -> None:
    import threading

    from ray import tune
    from ray.util.queue import Empty, Queue

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = _trainer(
        cfg,
        name,
        trial_id,
        trials_dir,
        shown,
        CheckpointRelay(queue),
        start=StartPoint.donor(donor.path) if donor else None,
    )
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_capture(trainer.fit)), daemon=True)
    thread.start()
    while thread.is_alive() or not queue.empty():
        try:
            metrics, path = queue.get(timeout=0.5)
        except Empty:
            continue
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(path) if path else None)
    if outcome and isinstance(outcome[0], BaseException):
        raise outcome[0]


def _capture(fn):
    try:
        return fn()
    except BaseException as err:  # re-raised on the trial's main thread
        return err


def search_algorithm(spec: SweepSpec):
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch()
    if spec.search == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch()
    return None  # random and grid: Tune's own variant generator


def concurrency(spec: SweepSpec, base: dict) -> int:
    """Trials at once: as many as the cluster's CPUs hold, each with its workers, its Tune
    function and, when the task streams a Ray Data dataset, the CPU that its reads and
    map_batches need: trials whose workers held every CPU would each wait for data forever."""
    import ray

    if spec.resources.max_concurrent:
        return spec.resources.max_concurrent
    sc = base["scaling"]
    per_trial = sc["num_workers"] * sc["cpus_per_worker"] + spec.resources.driver_cpus
    if launch.ray_datasets(config_mod.from_dict(base)):
        per_trial += resources.DATA_CPUS
    return max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))


class SweepInterrupted(Exception):
    """Tune stopped (SIGINT) with trials unfinished; the results so far are written."""

    def __init__(self, sweep_dir: str, name: str, unfinished: int, total: int):
        super().__init__(
            f"sweep '{name}' interrupted with {unfinished} of {total} trials "
            f"unfinished; results so far are in {sweep_dir}"
        )
        self.sweep_dir, self.name = sweep_dir, name


def run_sweep(
    space_file: str,
    overrides: list[str] | None = None,
    *,
    name: str | None = None,
    storage_path: str | None = None,
    resume: bool = False,
    address: str | None = None,
    quiet: bool = False,
) -> str:
    """Run (or resume) a sweep; returns its directory, holding results and plots.

    Each trial's progress is shown once, on this driver, beside Tune's trial table; ``quiet``
    (the CLI without --verbose) sends Ray's own output to ``<sweep>/logs/driver.log`` and
    each trial's ``trials/<run>/logs/``. Raises SweepInterrupted, after writing the results
    so far, when Tune stops on SIGINT.
    """
    import time

    from ray import tune

    spec, base = space_mod.load(space_file, overrides)
    reported.check_metric(spec.path, spec.metric, base)
    name = (
        name
        or f"sweep-{os.path.basename(space_file).rsplit('.', 1)[0]}-"
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    )
    root = storage.resolve(storage_path or base["run"]["storage_path"])
    sweep_dir = storage.join(root, name)
    if resume and not tune.Tuner.can_restore(sweep_dir):
        raise ConfigError(
            f"no sweep to resume at {sweep_dir} (--name {name}{nearest(name, _sweeps_in(root))})"
        )
    # Tune's state, not the directory: a sweep that stopped before Tune began left only logs
    if not resume and tune.Tuner.can_restore(sweep_dir):
        raise ConfigError(
            f"sweep '{name}' exists in {root}; resume it with --resume "
            f"--name {name}, or choose another --name"
        )
    if quiet:
        import ray.train  # noqa: F401 - its loggers (and Tune's) exist before the redirect

        console.logs_off_console(
            console.driver_log(sweep_dir, name),
            name,
            f"{console.log_dir(sweep_dir, name)}/, each trial's in "
            f"{storage.join(sweep_dir, 'trials')}/<run>/logs/",
        )
    launch.ensure_ray(address, log_to_driver=not quiet)
    shared_storage.check_storage(config_mod.from_dict(base), storage_path=root)
    shown = console.Console(tty=False)  # plain lines: trials interleave, Tune prints tables
    try:
        tuner = _tuner(spec, base, name, root, resume, Shown(shown.start(), quiet))
        tuner.fit()
    finally:
        shown.close()
    from raytrain_eff.tune import results

    grid = results.saved_grid(sweep_dir, spec)
    results.write_results(grid, spec, base, sweep_dir)
    left = results.unfinished(grid)
    if left:
        raise SweepInterrupted(sweep_dir, name, len(left), len(results.trials_of(grid)))
    return sweep_dir


def _tuner(spec: SweepSpec, base: dict, name: str, root: str, resume: bool, shown: Shown):
    """A new Tuner for the sweep, or the interrupted one restored from ``<root>/<name>``."""
    from ray import tune

    sweep_dir = storage.join(root, name)
    trainable = tune.with_resources(
        make_trainable(
            base,
            name,
            storage.join(sweep_dir, "trials"),
            spec.scheduler.type == "pbt",
            space_mod.conditions(spec),
            shown,
        ),
        {"CPU": spec.resources.driver_cpus},
    )
    if resume:  # Tune keeps trials' draws but not the space; it checks the keys match
        return tune.Tuner.restore(
            sweep_dir,
            trainable=trainable,
            param_space=param_space(spec),
            resume_errored=False,
            restart_errored=False,
            resume_unfinished=True,
        )
    sched = schedulers.scheduler(spec, base)
    return tune.Tuner(
        trainable,
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            scheduler=sched,
            search_alg=search_algorithm(spec),
            max_concurrent_trials=concurrency(spec, base),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=root,
            callbacks=_callbacks(spec, base, name) + schedulers.state_callbacks(sched),
        ),
    )


def resume_command(args, name: str) -> str:
    """The ``raytrain-eff tune`` command line that continues this sweep."""
    import shlex

    words = ["raytrain-eff", "tune", args.space, *args.overrides, "--resume", "--name", name]
    for flag, value in (("--storage-path", args.storage_path), ("--address", args.address)):
        words += [flag, value] if value else []
    return shlex.join(words)


def _sweeps_in(root: str) -> list[str]:
    """Names of the sweeps under a storage path (for a did-you-mean)."""
    path = pathlib.Path(root)
    return [p.parent.name for p in path.glob("*/tuner.pkl")] if path.is_dir() else []


def _callbacks(spec: SweepSpec, base: dict, name: str) -> list:
    if not base["monitor"]["enabled"]:
        return []
    from raytrain_eff.tune.progress import TrialProgressCallback

    return [TrialProgressCallback(name, base["monitor"], spec.metric, spec.mode)]
