"""Multi-node runs on a 2-node ``ray.cluster_utils.Cluster``: SPREAD placement, a lost node
with an elastic worker group.

The cluster lives in a subprocess (this file run as a script) with its own temp dir, TMPDIR,
ports and auth token, so it never meets the shared test Ray nor anyone else's. The script
writes what it observed to a JSON file; the tests below judge it. One cluster serves every
scenario: starting one costs more than the runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from timeouts import scaled

from raytrain_eff.engine import shared_storage

WORKER_CLASS = "RayTrainWorker"
pytestmark = pytest.mark.timeout(480)


# -- the tests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def observed():
    root = pathlib.Path(tempfile.mkdtemp(prefix="rtmn-", dir="/tmp"))  # short: unix sockets
    (root / "tmp" / "ray").mkdir(parents=True)  # Ray writes its address file under TMPDIR/ray
    (root / "auth_token").write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(root / "auth_token"),
        TMPDIR=str(root / "tmp"),
        OMP_NUM_THREADS="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5",
        PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]),
    )  # tests/: timeouts
    proc = subprocess.Popen(
        [sys.executable, __file__, str(root)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=scaled(420))
        assert proc.returncode == 0, output[-8000:]
        yield json.loads((root / "observed.json").read_text())
    finally:
        kill_group(proc)
        shutil.rmtree(root, ignore_errors=True)


def kill_group(proc: subprocess.Popen) -> None:
    """Whatever the script left of its cluster (its own process group), by SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_shared_path_passes_the_storage_probe_on_every_node(observed):
    assert len(observed["nodes"]) == 2
    assert observed["probe"] == {node: True for node in observed["nodes"]}


def test_spread_puts_a_worker_on_each_node(observed):
    assert sorted(observed["spread_worker_nodes"]) == sorted(observed["nodes"])


def test_a_lost_node_resumes_from_the_checkpoint_with_one_row_per_step(observed):
    lost = observed["lost"]
    assert lost["node"] in observed["nodes"] and lost["node"] != observed["head"]
    assert 0 < lost["at_step"] < lost["steps"]  # removed mid-run, after a checkpoint
    assert lost["table_steps"] == list(range(lost["steps"]))  # no gaps, no duplicates
    assert max(lost["table_attempts"]) >= 1  # the rows after the loss come from a restart
    assert lost["final_step"] == lost["steps"]


def test_the_console_survives_the_lost_node_and_says_why_it_restarted(observed):
    lines, lost = observed["lost"]["console"], observed["lost"]
    restarts = [ln for ln in lines if "attempt 1: resumed from step" in ln]
    assert len(restarts) == 1, lines
    assert ", after rank " in restarts[0] and "failed: " in restarts[0]
    # progress goes on after the restart, up to the last step
    after = lines[lines.index(restarts[0]) + 1 :]
    assert any(f"step {lost['steps']}/{lost['steps']}" in ln for ln in after), lines


def test_an_elastic_run_shrinks_to_the_surviving_node(observed):
    # one worker per node (2 CPUs each): after the loss only one fits; an elastic run
    # (min_workers=1) goes on with it instead of waiting for a node that never returns
    lost = observed["lost"]
    worlds = dict(zip(lost["table_steps"], lost["table_worlds"], strict=True))
    assert worlds[0] == 2 and worlds[lost["steps"] - 1] == 1
    first_small = min(s for s, w in worlds.items() if w == 1)
    assert all(w == 1 for s, w in worlds.items() if s >= first_small)
    # resumed from a checkpoint: the small world starts on a checkpoint boundary. Not "before
    # at_step": rank 0 writes the table every report_interval steps, so the workers may have
    # checkpointed a step the remover had not seen yet when it removed the node
    assert first_small % lost["checkpoint_interval"] == 0 and first_small > 0
    # samples_seen counts what was trained, across the change of world size
    assert lost["samples_seen"] == sum(lost["table_samples"])


def test_a_node_local_path_is_refused_with_the_nodes_named():
    seen = {"a" * 56: True, "b" * 56: False}
    message = shared_storage.storage_error("/data/runs", seen)
    assert "run.storage_path=/data/runs is not shared" in message
    assert "1 of 2 nodes (bbbbbbbbbbbb)" in message and "s3://" in message
    assert shared_storage.storage_error("/data/runs", {"a" * 56: True, "b" * 56: True}) is None
    assert shared_storage.storage_error("/data/runs", {"a" * 56: False}) is None  # one node


def test_only_local_paths_need_the_probe():
    assert shared_storage.local_path("s3://bucket/runs") is None
    assert shared_storage.local_path("gs://bucket/runs") is None
    assert shared_storage.local_path("file:///mnt/runs") == "/mnt/runs"
    assert shared_storage.local_path("/mnt/runs") == "/mnt/runs"


# -- the cluster script -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_args(root: pathlib.Path, **extra) -> dict:
    # no node_ip_address: cluster_utils would bind the GCS to 127.0.0.1 yet advertise the
    # host's IP; the token keeps this private cluster closed instead
    return dict(
        num_cpus=2, metrics_export_port=free_port(), min_worker_port=0, max_worker_port=0, **extra
    )


def start_cluster(root: pathlib.Path):
    from ray.cluster_utils import Cluster

    # a lost node is declared dead after ~3 s instead of ~30 s
    health = {
        "health_check_initial_delay_ms": 0,
        "health_check_period_ms": 1000,
        "health_check_timeout_ms": 1000,
        "health_check_failure_threshold": 3,
    }
    dashboard_port = free_port()
    # Train's placement-group cleaner asks the State API without an address; on a machine
    # with several Ray clusters "auto" may pick another one. Every process started from here
    # (raylets, hence workers) inherits the right one.
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{dashboard_port}"
    cluster = Cluster(
        initialize_head=True,
        head_node_args=node_args(
            root,
            temp_dir=str(root / "ray"),
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            gcs_server_port=free_port(),
            dashboard_agent_listen_port=free_port(),
            _system_config=health,
        ),
    )
    worker = cluster.add_node(**node_args(root, dashboard_agent_listen_port=free_port()))
    cluster.wait_for_nodes()
    return cluster, worker


def worker_nodes(gcs_address: str, state: str | None = None) -> dict[str, str]:
    """Actor id -> node id of Ray Train's worker actors (dead ones too unless ``state``)."""
    from ray.util.state import list_actors

    filters = [("class_name", "=", WORKER_CLASS)] + ([("state", "=", state)] if state else [])
    return {
        a.actor_id: a.node_id for a in list_actors(address=gcs_address, filters=filters, limit=1000)
    }


def run_config(root: pathlib.Path, preset: str, name: str, *overrides: str):
    from raytrain_eff import config

    return config.load(
        preset=preset,
        overrides=[
            f"run.storage_path={root / 'runs'}",
            f"run.name={name}",
            "monitor.enabled=false",
            "scaling.num_workers=2",
            "scaling.placement=SPREAD",
            *overrides,
        ],
    )


def spread_scenario(root: pathlib.Path, gcs_address: str) -> list[str]:
    from raytrain_eff.engine import launch

    cfg = run_config(
        root,
        "digits-adamw",
        "spread",
        "run.steps=6",
        "run.report_interval=3",
        "run.checkpoint_interval=6",
        "run.eval_interval=0",
    )
    shared_storage.check_storage(cfg)
    launch.fit(cfg)
    return list(worker_nodes(gcs_address).values())


def remove_when_checkpointed(
    cluster, node, run_dir: pathlib.Path, min_step: int, done: threading.Event, gcs_address: str
) -> dict:
    """Once Ray Train has registered a checkpoint and step >= min_step, remove ``node`` if it
    hosts a worker. A checkpoint folder alone is not enough: Train registers it a moment
    later, and a crash before that restarts the run from step 0."""
    from raytrain_eff.engine import records

    registered = run_dir / "checkpoint_manager_snapshot.json"  # written on registration
    while not done.is_set():
        table = records.read_table(str(run_dir)) if registered.exists() else None
        if table is not None and max(table.column("step").to_pylist()) >= min_step:
            break
        time.sleep(0.2)
    hosts = set(worker_nodes(gcs_address, state="ALIVE").values())
    step = max(records.read_table(str(run_dir)).column("step").to_pylist())
    assert node.node_id in hosts, f"no worker on the node to remove: {hosts}"
    cluster.remove_node(node, allow_graceful=False)  # a crash, not a drain
    return {"node": node.node_id, "at_step": step}


def node_loss_scenario(root: pathlib.Path, cluster, node, gcs_address: str) -> dict:
    from raytrain_eff.engine import launch, records

    steps = 60
    # the char-level GPT, small: steps slow enough that the removal lands mid-run
    cfg = run_config(
        root,
        "default",
        "lost-node",
        f"run.steps={steps}",
        "run.report_interval=5",
        "run.checkpoint_interval=10",
        "run.eval_interval=0",
        "run.max_failures=2",
        "task.n_layer=1",
        "task.n_embd=32",
        "task.n_head=2",
        "data.batch_size=8",
        "scaling.cpus_per_worker=2",
        "scaling.min_workers=1",
    )
    run_dir = pathlib.Path(launch.run_dir_of(cfg, cfg.run.name))
    done, lost = threading.Event(), {}
    remover = threading.Thread(
        target=lambda: lost.update(
            remove_when_checkpointed(cluster, node, run_dir, 12, done, gcs_address)
        )
    )
    remover.start()
    shown = io.StringIO()  # the driver's console, as a user would read it
    try:
        with contextlib.redirect_stdout(shown):
            result = launch.fit(cfg)
    finally:
        done.set()
        remover.join(timeout=scaled(60))
    table = records.read_table(str(run_dir))
    return {
        **lost,
        "steps": steps,
        "checkpoint_interval": cfg.run.checkpoint_interval,
        "final_step": result.metrics.get("step"),
        "table_steps": table.column("step").to_pylist(),
        "table_attempts": table.column("attempt").to_pylist(),
        "table_worlds": table.column("world_size").to_pylist(),
        "table_samples": table.column("samples").to_pylist(),
        "samples_seen": result.metrics.get("samples_seen"),
        "console": shown.getvalue().splitlines(),
    }


def main(root: pathlib.Path) -> None:
    import ray

    cluster, worker = start_cluster(root)
    try:
        ray.init(address=cluster.address)
        gcs_address = ray.get_runtime_context().gcs_address
        nodes = shared_storage.alive_nodes()
        observed = {
            "nodes": nodes,
            "head": cluster.head_node.node_id,
            "probe": shared_storage.probe(str(root / "runs"), nodes),
            "spread_worker_nodes": spread_scenario(root, gcs_address),
        }
        observed["lost"] = node_loss_scenario(root, cluster, worker, gcs_address)
        (root / "observed.json").write_text(json.dumps(observed))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
