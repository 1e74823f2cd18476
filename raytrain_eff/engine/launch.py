"""Ray Train glue: build a TorchTrainer for an experiment, fit it, resume it.

The run directory ``<storage_path>/<name>`` is Ray's own run directory; beside Ray's
checkpoints the engine keeps ``config.yaml`` (what ``--resume`` reads back),
``metrics.parquet`` and ``summary.json``.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING

import yaml

from raytrain_eff import catalog
from raytrain_eff import config as config_mod
from raytrain_eff.config import ExperimentConfig
from raytrain_eff.engine import (
    console,
    failures,
    malloc,
    preflight,
    provenance,
    resources,
    shared_storage,
    startup,
    storage,
)
from raytrain_eff.typed import ConfigError

if TYPE_CHECKING:
    from raytrain_eff.engine.checkpoint_manager import StartPoint

CONFIG_FILE = "config.yaml"
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


@dataclasses.dataclass
class FitResult:
    run_name: str
    run_dir: str
    metrics: dict  # the final report's metrics
    checkpoint_path: str | None


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point on every Ray Train worker (and in local mode)."""
    import ray.train
    import torch
    import torch.distributed as dist

    from raytrain_eff.engine.runner import Runner

    marks = dict(loop_config.get("startup") or {})  # the driver's (engine.startup)
    # a process Ray started before this run (its worker pool) counts from the run's fit
    started = startup.process_started()
    if started is not None:
        startup.mark(marks, "worker_process", max(started, marks.get("fit", started)))
    startup.mark(marks, "train_fn")
    cfg = config_mod.from_dict(loop_config["config"])
    if cfg.scaling.strategy == "fsdp":  # freed all-gather buffers must leave RSS (ddp has none)
        malloc.return_freed_buffers()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    group = dist.group.WORLD if world > 1 and dist.is_initialized() else None
    if cfg.scaling.use_gpu:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    sink = loop_config.get("progress")
    if loop_config.get("worker_logs") and world > 0:
        console.worker_logs_to_file(loop_config["run_dir"], loop_config["run_name"], rank)
    runner = Runner(
        cfg,
        rank=rank,
        world=world,
        group=group,
        device=device,
        run_dir=loop_config["run_dir"],
        run_name=loop_config["run_name"],
        trial=loop_config.get("trial", ""),
        report=ray.train.report,
        log=console.remote_log(sink) if sink is not None else None,
        # Train's local mode keeps no checkpoints of its own: the engine keeps them in run_dir
        get_checkpoint=ray.train.get_checkpoint if cfg.scaling.num_workers else None,
        summary_extra=loop_config.get("summary_extra"),
        start=loop_config.get("start"),
        data_shards={
            name: ray.train.get_dataset_shard(name) for name in loop_config.get("datasets", ())
        },
    )
    runner.marks.update(marks)
    runner.run()


def default_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.preset or cfg.task.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000}"


def run_dir_of(cfg: ExperimentConfig, name: str) -> str:
    return storage.join(storage.resolve(cfg.run.storage_path), name)


def build_trainer(
    cfg: ExperimentConfig,
    name: str,
    *,
    trial: str = "",
    storage_path: str | None = None,
    callbacks=None,
    start: StartPoint | None = None,
    progress=None,
    worker_logs: bool = False,
    datasets: dict | None = None,
    marks: dict[str, float] | None = None,
):
    """The TorchTrainer for ``cfg``; ``storage_path`` overrides the config's (Tune trials).
    ``start``: where the run starts when it has no checkpoint of its own since
    (``checkpoint_manager.StartPoint``; default: its own newest, or fresh).
    ``progress``: a ``console.ProgressSink`` actor that shows rank 0's progress on the driver;
    ``worker_logs``: workers also log to ``<run_dir>/logs/worker-<rank>.log``; ``datasets``:
    ``task_datasets(cfg)`` when already asked ('train' is split between the workers, 'val'
    goes whole to each); ``marks``: the driver's start-up marks so far (``engine.startup``)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    sc = cfg.scaling
    # read by Train when the trainer is made, and passed to its controller: here, so that it
    # reaches the controller from a Tune trial's process and on a cluster too
    os.environ.setdefault(HEALTH_CHECK_ENV, f"{poll_interval_s(sc.num_workers):g}")
    datasets = task_datasets(cfg) if datasets is None else datasets
    base = storage_path or storage.resolve(cfg.run.storage_path)
    backend = {"auto": "nccl" if sc.use_gpu else "gloo"}.get(sc.backend, sc.backend)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "run_name": name,
            "trial": trial,
            "run_dir": storage.join(base, name),
            "start": start,
            "progress": progress,
            "worker_logs": worker_logs,
            "datasets": sorted(datasets),
            "startup": dict(marks or {}),
            "summary_extra": {**provenance.current(), "machine": machine()},
        },
        # ray.train exports Train V2's ScalingConfig (V2 is on by default), but a type checker
        # sees the V1 names of its conditional imports, which lack elastic (min, max) workers
        scaling_config=ScalingConfig(  # type: ignore[call-arg]
            num_workers=(
                sc.num_workers
                if sc.min_workers is None  # type: ignore[arg-type]
                else (sc.min_workers, sc.num_workers)
            ),
            elastic_resize_monitor_interval_s=sc.resize_interval_s,
            use_gpu=sc.use_gpu,
            resources_per_worker={"CPU": sc.cpus_per_worker} if sc.num_workers else None,
            placement_strategy=sc.placement,
        ),
        torch_config=TorchConfig(backend=backend),
        datasets=datasets or None,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=name,
            storage_path=base,
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
        ),
    )


def ray_datasets(cfg: ExperimentConfig) -> dict:
    """The task's Ray Data datasets (``Task.ray_datasets``, built here: building reads no rows)."""
    task = catalog.load_object(catalog.lookup(catalog.TASKS, "task", cfg.task.name).impl)
    return task.ray_datasets(cfg)


def task_datasets(cfg: ExperimentConfig) -> dict:
    """The task's Ray Data datasets (``ray_datasets``, built on the driver); refused when
    the training workers would leave Ray Data no CPU (``resources.check_data_cpus``)."""
    datasets = ray_datasets(cfg)
    if datasets and cfg.scaling.num_workers:
        resources.check_data_cpus(cfg)
    return datasets


def fit(
    cfg: ExperimentConfig,
    *,
    address: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    from_checkpoint: str | None = None,
    marks: dict[str, float] | None = None,
) -> FitResult:
    """Train ``cfg`` on Ray (local or ``address``); with ``resume`` continue ``cfg.run.name``.

    Rank 0's progress is shown once, on the driver. ``quiet`` (the CLI without --verbose)
    keeps Ray's own output off the console: it goes to ``<run_dir>/logs/``. A failure after
    the start raises ``failures.RunFailed``, whose text is one line. ``marks``: start-up
    marks taken before the call (the CLI's ``command``); summary.json gets them all.
    """
    # DCP loads with the manager: after the checks, not before every command
    from raytrain_eff.engine.checkpoint_manager import StartPoint

    marks = {} if marks is None else marks
    name = cfg.run.name or default_name(cfg)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name))
    run_dir = run_dir_of(cfg, name)
    config_uri = storage.join(run_dir, CONFIG_FILE)
    if not resume and storage.exists(config_uri):
        raise ConfigError(
            f"run '{name}' already exists in {run_dir}; continue it with "
            f"`raytrain-eff train --resume {run_dir}` or choose a new run.name"
        )
    if resume and not storage.exists(config_uri):
        raise ConfigError(f"nothing to resume: {config_uri} does not exist")
    if from_checkpoint is not None and not resume:
        raise ConfigError("--from-checkpoint picks where a resumed run starts; add --resume")
    preflight.check(cfg)
    # chosen and verified here, so a bad checkpoint is named on this console in both modes
    start = StartPoint.resumed(run_dir, from_checkpoint) if resume else None
    cfg = _past_the_pause(cfg, start)
    log = console.driver_log(run_dir, name)
    shown = _start(cfg, address, quiet, log, marks)
    datasets = task_datasets(cfg)
    # written once the checks pass: a refused run leaves nothing that --resume would find
    storage.write_bytes(config_uri, config_mod.dump(cfg).encode())
    from ray.train import TrainingFailedError

    try:
        sink = shown.start() if shown else None
        startup.mark(marks, "fit")
        trainer = build_trainer(
            cfg,
            name,
            progress=sink,
            worker_logs=quiet,
            start=start,
            datasets=datasets,
            callbacks=[console.failure_notice(sink, name)] if sink else None,
            marks=marks,
        )
        result = trainer.fit()
        startup.mark(marks, "fit_returned")
    except TrainingFailedError as err:
        raise failures.run_failed(
            err, name=name, run_dir=run_dir, log=log, max_failures=cfg.run.max_failures
        ) from err
    finally:
        if shown is not None:
            shown.close()
    _record_startup(run_dir, marks)
    ckpt = result.checkpoint.path if result.checkpoint is not None else None
    return FitResult(
        run_name=name, run_dir=run_dir, metrics=dict(result.metrics or {}), checkpoint_path=ckpt
    )


def _record_startup(run_dir: str, marks: dict[str, float]) -> None:
    """The driver's start-up marks beside rank 0's in summary.json (rank 0 wrote it before
    ``fit`` returned; a run that stopped before its last step has none)."""
    from raytrain_eff.engine import records

    summary = records.read_summary(run_dir)
    if summary is None:
        return
    summary[startup.KEY] = startup.account({**startup.recorded_marks(summary), **marks})
    records.write_summary(run_dir, summary)


def _past_the_pause(cfg: ExperimentConfig, start: StartPoint | None) -> ExperimentConfig:
    """A run paused at ``run.stop_after`` and resumed goes on to ``run.steps``: the pause it
    was given is behind it (a later ``run.stop_after=N`` on resume pauses it again)."""
    from raytrain_eff.engine import checkpoint

    pause = cfg.run.stop_after
    if start is None or start.kind != "chosen" or pause is None:
        return cfg
    if checkpoint.order(start.path or "")[0] < pause:
        return cfg
    print(
        f"run.stop_after={pause} was reached; continuing to run.steps={cfg.run.steps}",
        file=sys.stderr,
    )
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, stop_after=None))


def _start(
    cfg: ExperimentConfig, address: str | None, quiet: bool, log: str, marks: dict[str, float]
) -> console.Console | None:
    """Ray started and checked before training (workers placeable, storage shared, exporters
    up); returns the console that shows rank 0's progress (None in local mode: it prints)."""
    if quiet:
        import ray.train  # noqa: F401 - its loggers exist before they are redirected

        console.logs_off_console(log, cfg.run.name or "", f"{os.path.dirname(log)}/")
    if cfg.scaling.num_workers == 0:
        return None
    startup.mark(marks, "ray_init")
    local_ray = ensure_ray(address, log_to_driver=not quiet)
    startup.mark(marks, "ray_ready")
    resources.check(cfg)
    shared_storage.check_storage(cfg)
    if cfg.monitor.enabled:
        _start_exporters(cfg)
    if local_ray:
        atexit.register(_end_local_ray, file_sd=cfg.monitor.enabled, now=quiet)
    return console.Console()


def _end_local_ray(*, file_sd: bool, now: bool) -> None:
    """A Ray started here ends with this process, and its exporters with it: their file_sd
    goes first, so no Prometheus scrapes a later exporter on that address through it. ``now``
    (workers' output goes to files): Ray ends without the half second its own exit hook waits
    for workers' last lines to reach this console."""
    import ray

    if not ray.is_initialized():
        return
    if file_sd:
        from raytrain_eff.monitor import discovery

        discovery.stop_file_sd()
    if now:
        ray.shutdown()


def _start_exporters(cfg: ExperimentConfig) -> None:
    """One exporter per node before workers start, and the file_sd that follows the cluster
    (written on this node, which is where a Prometheus of the head reads it)."""
    from raytrain_eff.monitor import discovery

    addresses = discovery.ensure_exporters(cfg.monitor.host, cfg.monitor.port)
    file_sd = discovery.start_file_sd(cfg.monitor.host, cfg.monitor.port)
    urls = ", ".join(a.get("url", str(a)) for a in addresses)
    print(f"[{cfg.run.name}] metrics: {urls} (Prometheus file_sd: {file_sd})", flush=True)


def load_run_config(run: str, storage_path: str | None = None) -> ExperimentConfig:
    """A run directory (or a run name under ``storage_path``) -> its saved config."""
    candidates = (
        [run] if storage_path is None else [storage.join(storage.resolve(storage_path), run), run]
    )
    for candidate in candidates:
        data = storage.read_bytes(storage.join(storage.resolve(candidate), CONFIG_FILE))
        if data is not None:
            return config_mod.from_dict(yaml.safe_load(data), where=f"{candidate}/{CONFIG_FILE}")
    raise ConfigError(
        f"no run found at {' or '.join(candidates)} (expected {CONFIG_FILE} in the run directory)"
    )


def ensure_ray(
    address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True
) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a local Ray pinned to itself.
    ``log_to_driver=False`` keeps workers' output off this process's console. True when this
    call started a local Ray (it ends with this process)."""
    import ray

    if ray.is_initialized():
        ray_train_settings(local=False)
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray_train_settings(local=False)
        ray.init(address=address, log_to_driver=log_to_driver)
        return False
    ray_train_settings(local=True)
    # The dashboard serves the State API that Train's clean-up and `ray job` rely on. Train's
    # clean-up actor looks the cluster up without an address: with another Ray instance on
    # the machine it fails ("Found multiple active Ray instances") and leaks the trial's CPUs,
    # unless the address is pinned in the environment the cluster's processes inherit.
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        num_cpus=num_cpus,
        log_to_driver=log_to_driver,
        # Ray would start one idle worker process per CPU for this driver; Train's actors
        # carry their own runtime env and never use them, so on a small machine they only
        # take cores from the run's own start
        _system_config={"prestart_worker_first_driver": False},
    )
    return True


def ray_train_settings(*, local: bool) -> None:
    """Ray Train's settings the engine chooses for the Ray it runs on; the environment's own
    values win. On a Ray this process starts, no preemption watcher: it is one more actor
    process at every worker-group start, watching for node preemptions that a single local
    node never reports."""
    if local:
        os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")


def poll_interval_s(workers: int) -> float:
    """How often Train's controller polls its workers (one call to each a poll): it notices
    a finished or failed worker group that much later. 0.25 s up to 8 workers, then growing
    with the group to Ray's default, 2 s, at 64."""
    return min(2.0, max(0.25, workers / 32))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict:
    import platform

    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
