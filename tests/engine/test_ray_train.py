"""The engine on real Ray Train worker groups (2 gloo workers on the shared Ray session)."""

import json
import os
import pathlib
import signal
import threading
import time

import pyarrow.parquet as pq
import pytest
import torch
from timeouts import scaled

from raytrain_eff import config
from raytrain_eff.engine import launch, startup

pytestmark = pytest.mark.usefixtures("ray_session")


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def test_two_workers_train_and_leave_records(run_cfg):
    cfg = run_cfg(
        "digits-adamw",
        "run.steps=60",
        "run.eval_interval=30",
        "run.report_interval=10",
        "run.checkpoint_interval=30",
    )
    result = launch.fit(cfg)
    table = _table(result.run_dir)
    assert table["step"].tolist() == list(range(60))
    assert (table["samples"] == 2 * 64).all()  # both workers' batches counted
    summary = json.loads((pathlib.Path(result.run_dir) / "summary.json").read_text())
    assert summary["world_size"] == 2
    phases = summary["startup"]["phases_s"]  # where the start-up went (engine.startup)
    assert list(phases) == [name for name, _, _ in startup.PHASES[1:]]  # no command: no imports
    assert all(seconds >= 0 for seconds in phases.values()), phases
    assert table["loss"].iloc[-5:].mean() < table["loss"].iloc[:5].mean()
    assert result.checkpoint_path and "checkpoint_step00000060" in result.checkpoint_path


def test_resume_on_two_workers_matches_the_straight_run(run_cfg):
    common = [
        "run.steps=24",
        "run.report_interval=4",
        "run.checkpoint_interval=4",
        "run.eval_interval=0",
    ]
    straight = launch.fit(run_cfg("digits-sgd", *common))
    # the paused run saves in the background (dcp.async_save): Ray Train registers each save
    # at the next report, and the last one before the workers exit
    paused = launch.fit(
        run_cfg("digits-sgd", *common, "run.stop_after=12", "run.checkpoint_async=true")
    )
    assert paused.checkpoint_path and paused.checkpoint_path.endswith("checkpoint_step00000012")
    launch.fit(launch.load_run_config(paused.run_dir), resume=True)  # past its pause: on to 24
    a, b = _table(straight.run_dir), _table(paused.run_dir)
    assert b["step"].tolist() == list(range(24))
    assert b["attempt"].tolist() == [0] * 12 + [1] * 12
    torch.testing.assert_close(
        torch.tensor(b["loss"].values), torch.tensor(a["loss"].values), rtol=1e-6, atol=1e-7
    )


def test_resume_on_a_different_worker_count(run_cfg):
    paused = launch.fit(
        run_cfg(
            "digits-adamw",
            "run.steps=20",
            "run.report_interval=5",
            "run.checkpoint_interval=5",
            "run.stop_after=10",
        )
    )
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null", "scaling.num_workers=1"]
    )
    launch.fit(resumed, resume=True)
    table = _table(paused.run_dir)
    assert table["step"].tolist() == list(range(20))
    assert (table["samples"].iloc[10:] == 64).all()  # one worker after the resume


def _kill_a_worker_when(run_dir: pathlib.Path, min_step: int, done: threading.Event):
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    while not done.is_set():
        ckpts = list(run_dir.glob("checkpoint_step*"))
        if (
            ckpts
            and (run_dir / "metrics.parquet").exists()
            and _table(run_dir)["step"].max() >= min_step
        ):
            break
        time.sleep(0.2)
    workers = list_actors(
        address=address, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    )
    os.kill(workers[-1].pid, signal.SIGKILL)
    return workers[-1].pid


def test_a_killed_worker_restarts_from_the_checkpoint(run_cfg):
    # slow enough steps that the kill lands mid-run: the char-level GPT, small
    cfg = run_cfg(
        "default",
        "run.steps=200",
        "run.report_interval=5",
        "run.checkpoint_interval=10",
        "run.eval_interval=0",
        "run.max_failures=1",
        "task.n_layer=1",
        "task.n_embd=32",
        "task.n_head=2",
        "data.batch_size=8",
        "monitor.enabled=true",
        "monitor.port=19464",
    )
    run_dir = pathlib.Path(launch.run_dir_of(cfg, cfg.run.name))
    done, killed = threading.Event(), []
    killer = threading.Thread(target=lambda: killed.append(_kill_a_worker_when(run_dir, 12, done)))
    killer.start()
    try:
        result = launch.fit(cfg)
    finally:
        done.set()
        killer.join(timeout=scaled(30))
    assert killed, "no worker was killed"
    table = _table(run_dir)
    assert table["step"].tolist() == list(range(200))  # no gaps, no duplicates
    assert table["attempt"].max() == 1
    # the totals survived the failover: the table, summary.json, Tune's last report and the
    # exporters' counters (the killed attempt's series retired) all hold the same numbers
    totals = json.loads((run_dir / "summary.json").read_text())["totals"]
    assert totals["samples"] == table["samples"].sum() == result.metrics["samples_seen"]
    for key in ("tokens", "dense_flops", "effective_flops"):
        assert totals[key] == pytest.approx(table[key].sum(), rel=1e-9), key
    assert result.metrics["effective_flops_total"] == pytest.approx(totals["effective_flops"])
    assert totals["train_seconds"] == pytest.approx(table["step_time_s"].sum())
    elapsed = sum(part["wall_s"].max() for _, part in table.groupby("attempt"))
    assert totals["wall_seconds"] == pytest.approx(elapsed) == result.metrics["wall_s"]
    counters = _exported_totals(cfg.run.name)
    assert counters["raytrain_eff_steps_total"] == [200.0, 200.0]
    for key in ("samples", "tokens", "dense_flops", "effective_flops"):
        assert sum(counters[f"raytrain_eff_{key}_total"]) == pytest.approx(totals[key]), key


def _exported_totals(run: str) -> dict[str, list[float]]:
    """{counter: its values for ``run``, one per series} over every exporter, by HTTP."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    from raytrain_eff.monitor import discovery

    out: dict[str, list[float]] = {}
    for address in discovery.list_exporters():
        text = urllib.request.urlopen(address["url"], timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("run") == run and s.name.endswith("_total"):
                    out.setdefault(s.name, []).append(s.value)
    return out
