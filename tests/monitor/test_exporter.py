"""The node exporter: state between pushes, rates, grace period, ports, file_sd, the CLI entry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from timeouts import scaled

from raytrain_eff.monitor import discovery
from raytrain_eff.monitor.cli_exporter import run_exporter
from raytrain_eff.monitor.exporter import NodeExporter, node_memory
from raytrain_eff.monitor.push import MetricsPusher, TuneProgress

STATS = {
    "step": 0,
    "loss": 2.0,
    "samples": 10,
    "tokens": 80,
    "step_time_s": 0.5,
    "dense_flops": 6e6,
    "effective_flops": 3e6,
    "rss_bytes": 1e8,
    "lr": 0.1,
}


def _scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of one scrape over HTTP."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def _value(samples: dict, name: str, **labels) -> float | None:
    for (n, ls), v in samples.items():
        if n == name and set(labels.items()) <= ls:
            return v
    return None


@pytest.fixture()
def exporter():
    exporter = NodeExporter(port=0, node_id="node-a")
    yield exporter
    exporter.close()


def _listening_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_counters_sum_gauges_persist_and_first_window_rate(exporter):
    run = "sum-and-persist"
    pusher = MetricsPusher(run=run, rank=3, exporter=exporter, flush_interval_s=1e9)
    assert pusher.url == exporter.url() and pusher.node_id == "node-a"
    pusher.push(STATS)  # the first step flushes at once: rate over its step time
    first = _scrape(pusher.url)
    assert _value(first, "raytrain_eff_samples_per_second", run=run) == pytest.approx(10 / 0.5)
    assert _value(first, "raytrain_eff_steps_per_second", run=run) == pytest.approx(2.0)
    pusher.push({**STATS, "step": 1, "loss": 1.5})
    pusher.push({"step": 2, "samples": 10, "step_time_s": 0.5})  # no loss, no lr this time
    pusher.flush()
    s = _scrape(pusher.url)
    assert _value(s, "raytrain_eff_samples_total", run=run, rank="3") == 30
    assert _value(s, "raytrain_eff_tokens_total", run=run) == 160
    assert _value(s, "raytrain_eff_steps_total", run=run) == 3
    assert _value(s, "raytrain_eff_step", run=run) == 2
    assert _value(s, "raytrain_eff_loss", run=run) == 1.5  # persisted from step 1
    assert _value(s, "raytrain_eff_learning_rate", run=run) == 0.1
    assert _value(s, "raytrain_eff_step_time_seconds_sum", run=run) == pytest.approx(1.5)
    # le is inclusive
    assert _value(s, "raytrain_eff_step_time_seconds_bucket", run=run, le="0.5") == 3
    assert _value(s, "raytrain_eff_step_time_seconds_bucket", run=run, le="0.25") == 0
    # RSS is measured by the pusher when a step does not report it; its peak follows
    assert _value(s, "raytrain_eff_worker_peak_memory_bytes", run=run) >= 1e8


def test_finished_run_expires_after_grace_and_revives_on_push(exporter):
    kept, dropped = (
        MetricsPusher(run=r, exporter=exporter, grace_period_s=g)
        for r, g in (("kept", 3600.0), ("dropped", 0.0))
    )
    for pusher in (kept, dropped):
        pusher.push(STATS)
        pusher.close()
    runs = {key[0] for key in exporter.series_keys()}
    assert "kept" in runs and "dropped" not in runs
    s = _scrape(exporter.url())
    assert _value(s, "raytrain_eff_loss", run="kept") == 2.0
    assert _value(s, "raytrain_eff_loss", run="dropped") is None
    assert _value(s, "raytrain_eff_node_memory_total_bytes") > 0  # node series never expire
    revived = MetricsPusher(run="kept", exporter=exporter, grace_period_s=0.0)
    revived.push({**STATS, "samples": 5})
    revived.flush()
    assert _value(_scrape(exporter.url()), "raytrain_eff_samples_total", run="kept") == 15


def test_port_in_use_moves_to_next_free_port():
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        exporter = NodeExporter(port=port, node_id="n0")
        try:
            assert exporter.port > port
            assert exporter.address() == {
                "target": f"127.0.0.1:{exporter.port}",
                "node_id": "n0",
                "url": f"http://127.0.0.1:{exporter.port}/metrics",
            }
            assert _value(_scrape(exporter.url()), "raytrain_eff_node_memory_used_bytes") > 0
        finally:
            exporter.close()
        with pytest.raises(OSError, match=f"no free port in {port}..{port} on 127.0.0.1"):
            NodeExporter(port=port, port_tries=1)


def test_node_memory_matches_the_kernel():
    mem = node_memory()
    assert mem["total"] == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert mem["used"] + mem["available"] == mem["total"]
    assert 0 < mem["available"] < mem["total"]


def test_write_file_sd(tmp_path):
    addresses = [
        {"target": "127.0.0.1:9465", "node_id": "b", "url": "x"},
        {"target": "127.0.0.1:9464", "node_id": "a", "url": "y"},
    ]
    path = tmp_path / "sd" / "targets.json"
    discovery.write_file_sd(path, addresses)
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:9465"], "labels": {"node_id": "b"}},
        {"targets": ["127.0.0.1:9464"], "labels": {"node_id": "a"}},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temp file left


def test_run_exporter_by_hand_records_the_moved_port(tmp_path):
    file_sd, stop, lines = tmp_path / "sd.json", threading.Event(), []
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        thread = threading.Thread(
            target=run_exporter,
            args=("127.0.0.1", port, str(file_sd)),
            kwargs={"stop": stop, "echo": lines.append},
        )
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not file_sd.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            [group] = json.loads(file_sd.read_text())
            host, moved = group["targets"][0].rsplit(":", 1)
            assert host == "127.0.0.1" and int(moved) > port
            s = _scrape(f"http://{group['targets'][0]}/metrics")
            assert (
                _value(
                    s, "raytrain_eff_node_memory_total_bytes", node_id=group["labels"]["node_id"]
                )
                == node_memory()["total"]
            )
        finally:
            stop.set()
            thread.join(timeout=scaled(30))
    assert not thread.is_alive()
    assert lines == [
        f"exporter for node {group['labels']['node_id']} at http://{group['targets'][0]}/metrics"
    ]


def test_pusher_outside_ray_does_not_import_ray():
    code = (
        "import sys; from raytrain_eff.monitor.push import MetricsPusher; "
        "p = MetricsPusher(run='x', port=0); p.push({'step': 0, 'step_time_s': 0.1}); "
        "p.close(); print('ray' in sys.modules, p.url)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=scaled(60)
    ).stdout.split()
    assert out[0] == "False" and out[1].startswith("http://127.0.0.1:")


def test_tune_progress_updates_and_expires(exporter):
    tune = TuneProgress(run="sweep", exporter=exporter, grace_period_s=0.0)
    tune.update(trials_total=6, trials_running=3, trials_terminated=2, trials_errored=1)
    tune.update(
        trials_total=6, trials_running=0, trials_terminated=5, trials_errored=1, best_metric=0.42
    )
    s = _scrape(exporter.url())
    assert _value(s, "raytrain_eff_tune_trials", run="sweep", state="terminated") == 5
    assert _value(s, "raytrain_eff_tune_trials", run="sweep", state="running") == 0
    assert _value(s, "raytrain_eff_tune_best_metric", run="sweep") == 0.42
    tune.close()
    assert _value(_scrape(exporter.url()), "raytrain_eff_tune_trials_expected", run="sweep") is None


def test_a_new_attempt_replaces_its_series_and_retires_the_failed_ones(exporter):
    run = "failover"
    old = [MetricsPusher(run=run, rank=r, exporter=exporter, generation="a") for r in (0, 1)]
    for pusher in old:
        pusher.push(STATS, totals={"samples": 50.0, "steps": 5.0})
        pusher.flush()
    # the new attempt restarts from a checkpoint at step 4 on one worker: absolute totals win
    new = MetricsPusher(run=run, rank=0, exporter=exporter, generation="b")
    assert new.retire_others() == 2
    new.push(STATS, totals={"samples": 90.0, "steps": 5.0})
    new.flush()
    s = _scrape(exporter.url())
    assert _value(s, "raytrain_eff_samples_total", run=run, rank="0") == 90.0
    assert _value(s, "raytrain_eff_samples_total", run=run, rank="1") is None
    assert _value(s, "raytrain_eff_steps_total", run=run, rank="0") == 5.0
    assert exporter.retire(run, "", keep_generation="b") == 0


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", ("127.0.0.1", "127.0.0.1")),  # this machine only
        ("node", ("10.0.0.7", "10.0.0.7")),  # the node's private address
        ("0.0.0.0", ("0.0.0.0", "10.0.0.7")),  # every interface, reached by the node's IP
        ("192.168.1.5", ("192.168.1.5", "192.168.1.5")),
    ],
)
def test_monitor_host_decides_bind_and_advertised_address(host, expected, monkeypatch):
    monkeypatch.delenv(discovery.HOST_ENV, raising=False)
    assert discovery.bind_and_advertise(host, "10.0.0.7") == expected


def test_a_nodes_own_host_setting_wins(monkeypatch):
    monkeypatch.setenv(discovery.HOST_ENV, "node")
    assert discovery.bind_and_advertise("127.0.0.1", "10.0.0.7") == ("10.0.0.7", "10.0.0.7")


def test_loopback_targets_of_other_machines_are_left_out():
    addresses = [
        {"target": "127.0.0.1:9464", "node_id": "head", "node_ip": "10.0.0.1"},
        {"target": "127.0.0.1:9464", "node_id": "w1", "node_ip": "10.0.0.2"},
        {"target": "10.0.0.3:9464", "node_id": "w2", "node_ip": "10.0.0.3"},
    ]
    kept = discovery.reachable_from(addresses, "10.0.0.1")
    assert [a["node_id"] for a in kept] == ["head", "w2"]


def test_exporter_stop_command_ends_the_clusters_exporters(monkeypatch):
    from raytrain_eff import cli
    from raytrain_eff.monitor import cli_exporter

    calls = []
    monkeypatch.setattr(cli_exporter, "stop_cluster", lambda address: calls.append(address) or 0)
    assert cli.main(["exporter", "--stop"]) == 0
    assert cli.main(["exporter", "--stop", "--address", "10.0.0.1:6379"]) == 0
    assert calls == ["auto", "10.0.0.1:6379"]
