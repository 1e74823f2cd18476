"""Stale file_sd files never make Prometheus count one exporter twice.

The scene an operator found: files left by killed local runs, each naming 127.0.0.1:<port>,
beside the live run's file naming the same address. A real Prometheus (``scripts/test-deps.sh``)
with the shipped ``prometheus.yml`` (only its directory and intervals changed) must report the
live run's total, not a multiple of it. Writers' leases are checked without Prometheus.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest
import yaml
from prometheus_server import PROMETHEUS, PROMTOOL, REPO, api, free_port, wait_for

from raytrain_eff.monitor import discovery
from raytrain_eff.monitor.exporter import NodeExporter
from raytrain_eff.monitor.push import MetricsPusher

pytestmark = pytest.mark.cluster  # starts its own Prometheus server


def _prometheus_config(work: pathlib.Path) -> pathlib.Path:
    config = yaml.safe_load((REPO / "clusters/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config.pop("rule_files")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "raytrain_eff"]
    job["file_sd_configs"] = [
        {"files": [str(work / "file_sd" / "*.json")], "refresh_interval": "1s"}
    ]
    config["scrape_configs"] = [job]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run([str(PROMTOOL), "check", "config", str(path)], check=True, capture_output=True)
    return path


def test_files_of_killed_runs_do_not_multiply_the_live_total():
    assert PROMETHEUS.exists(), "run scripts/test-deps.sh first"
    work = pathlib.Path(tempfile.mkdtemp(prefix="rte-stale-", dir="/tmp"))
    file_sd = work / "file_sd"
    live = NodeExporter(port=free_port(), node_id="live-node")
    # one canary exporter per stale file: when all are up, Prometheus has read every file
    canaries = [NodeExporter(port=free_port(), node_id=f"canary-{i}") for i in range(4)]
    prometheus = None
    try:
        for rank, samples in enumerate((600, 400)):  # a live run: 1000 samples in all
            pusher = MetricsPusher(run="live-run", rank=rank, exporter=live)
            pusher.push({"step": 0, "loss": 1.0, "samples": samples, "step_time_s": 0.1})
            pusher.close()
        discovery.write_file_sd(file_sd / "cluster-live.json", [live.address()])
        for i, canary in enumerate(canaries):  # a killed run's file: same address, its own id
            stale = {**live.address(), "node_id": f"dead-node-{i}"}
            discovery.write_file_sd(file_sd / f"cluster-killed{i}.json", [stale, canary.address()])
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        prometheus = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={_prometheus_config(work)}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

        def every_file_read_and_scraped():
            try:
                active = api(base, "targets")["activeTargets"]
                up = {t["scrapeUrl"] for t in active if t["health"] == "up"}
                total = api(base, "query", query='sum(raytrain_eff_samples_total{run="live-run"})')
            except OSError:
                return None
            wanted = {e.url() for e in [live, *canaries]}
            return total["result"] if up >= wanted and total["result"] else None

        result = wait_for("all five files scraped", every_file_read_and_scraped, 60, prometheus)
        assert float(result[0]["value"][1]) == 1000.0  # the live total, not 5000
        active = api(base, "targets")["activeTargets"]
        assert sum(t["scrapeUrl"] == live.url() for t in active) == 1
        series = api(base, "query", query='raytrain_eff_samples_total{run="live-run"}')
        assert {s["metric"]["node_id"] for s in series["result"]} == {"live-node"}
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=30)
        for exporter in (live, *canaries):
            exporter.close()
        shutil.rmtree(work, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_writer_sweeps_files_whose_writer_is_gone(tmp_path):
    def cluster_file(name: str, lease: dict | None) -> pathlib.Path:
        path = tmp_path / f"cluster-{name}.json"
        discovery.write_file_sd(path, [{"target": "127.0.0.1:9464", "node_id": name}])
        if lease is not None:
            discovery.lease_path(path).write_text(json.dumps(lease))
        return path

    host, now = os.uname().nodename, time.time()
    mine = cluster_file("mine", None)
    discovery.renew_lease(mine)  # this process: alive
    expired = cluster_file("expired", {"host": host, "pid": os.getpid(), "until": now - 1})
    killed = cluster_file("killed", {"host": host, "pid": _dead_pid(), "until": now + 60})
    remote = cluster_file("remote", {"host": "another-machine", "pid": 1, "until": now + 60})
    by_hand = cluster_file("by-hand", None)  # no lease: not ours to judge
    other = tmp_path / "targets.json"  # not a cluster file
    other.write_text("[]")

    removed = discovery.sweep_stale(tmp_path, keep=mine)
    assert sorted(removed) == [expired.name, killed.name]
    assert not discovery.lease_path(expired).exists() and not discovery.lease_path(killed).exists()
    assert all(p.exists() for p in (mine, remote, by_hand, other))
    assert discovery.sweep_stale(tmp_path) == []  # nothing more to remove
