"""Metric definitions follow Prometheus conventions, and the exposition passes promtool."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raytrain_eff.monitor import metrics as M
from raytrain_eff.monitor.exporter import NodeExporter
from raytrain_eff.monitor.push import MetricsPusher, TuneProgress

PROMTOOL = pathlib.Path(__file__).resolve().parents[2] / ".test-deps" / "bin" / "promtool"
UNIT_SUFFIXES = ("_bytes", "_seconds", "_ratio", "_per_second", "_total")
ALL_STATS = {
    "step": 3,
    "loss": 0.7,
    "samples": 32,
    "tokens": 512,
    "step_time_s": 0.02,
    "dense_flops": 1e9,
    "effective_flops": 4e8,
    "rss_bytes": 3e8,
    "peak_memory_bytes": 4e8,
    "gpu_allocated_bytes": 1e9,
    "gpu_peak_bytes": 2e9,
    "param_bytes": 4e6,
    "grad_bytes": 8e6,
    "optimizer_state_bytes": 8e6,
    "lr": 1e-3,
    "curvature_seconds": 0.004,
    "data_wait_s": 0.002,
    "sparsity": 0.6,
    "attention_density": 0.25,
    "active_fraction": 0.1,
    "lanczos_staleness": 2,
}


@pytest.fixture()
def exporter():
    exporter = NodeExporter(port=0, node_id="node-a")
    yield exporter
    exporter.close()


@pytest.fixture()
def exposition(exporter) -> str:
    """Exposition of an exporter after a run pushed every statistic three times."""
    pusher = MetricsPusher(run="r", trial="t0", rank=1, exporter=exporter)
    for _ in range(3):
        pusher.push(ALL_STATS)
    pusher.flush()
    TuneProgress(run="r", exporter=exporter).update(
        trials_total=8, trials_running=2, trials_terminated=5, trials_errored=1, best_metric=0.12
    )
    return exporter.render().decode()


def test_names_types_and_labels_follow_conventions():
    names = [m.name for m in M.ALL]
    assert len(names) == len(set(names))
    for m in M.ALL:
        assert m.name.startswith("raytrain_eff_") and m.help
        assert m.kind in ("counter", "gauge", "histogram")
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not {"ip", "instance", "host", "address"} & set(m.labels), m.name
        assert m.labels[0] in ("run", "node_id") and "node_id" in m.labels
    worker = [m for m in M.ALL if m.labels[:4] == M.WORKER_LABELS]
    assert M.WORKER_LABELS == ("run", "trial", "node_id", "rank") and len(worker) > 20
    # every memory or time metric says its base unit
    for m in M.ALL:
        if any(w in m.name for w in ("memory", "rss", "_time", "seconds")):
            assert m.name.endswith(UNIT_SUFFIXES) or m.kind == "histogram", m.name


def test_every_defined_metric_is_exported(exposition):
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    for m in M.ALL:
        base = m.name[: -len("_total")] if m.kind == "counter" else m.name
        assert base in families, m.name
        assert families[base].type == m.kind
        for sample in families[base].samples:
            assert set(sample.labels) - {"le"} == set(m.labels), (m.name, sample.labels)
            assert sample.labels["node_id"] == "node-a"


def test_exposition_values(exposition):
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(exposition)
        for s in f.samples
    }
    node, run = "node-a", "r"

    def value(name, **extra):
        labels = {"node_id": node, "rank": "1", "run": run, "trial": "t0", **extra}
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("raytrain_eff_samples_total") == 96
    assert value("raytrain_eff_effective_flops_total") == pytest.approx(1.2e9)
    assert value("raytrain_eff_step_time_seconds_count") == 3
    assert value("raytrain_eff_step_time_seconds_bucket", le="0.01") == 0
    assert value("raytrain_eff_step_time_seconds_bucket", le="0.025") == 3
    assert value("raytrain_eff_method_stat", stat="lanczos_staleness") == 2
    tune = (("node_id", node), ("run", run))
    assert samples[("raytrain_eff_tune_trials", tune + (("state", "errored"),))] == 1
    assert samples[("raytrain_eff_tune_trials_expected", tune)] == 8


def test_promtool_check_metrics(exposition):
    assert PROMTOOL.exists(), "run scripts/test-deps.sh first"
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_promtool_flags_a_broken_exposition():
    # the check above can fail: promtool rejects a counter without _total and no help text
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        capture_output=True,
        text=True,
        input="# TYPE raytrain_eff_samples counter\nraytrain_eff_samples 1\n",
    )
    assert result.returncode != 0


def test_dashboard_queries_name_only_defined_metrics():
    root = pathlib.Path(__file__).resolve().parents[2]
    dash = json.loads((root / "clusters/grafana/raytrain_eff.json").read_text())
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "run", "node"]
    exported = {m.name for m in M.ALL} | {
        M.STEP_TIME.name + s for s in ("_bucket", "_sum", "_count")
    }
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in (
        "memory",
        "throughput",
        "flop/s",
        "step time",
        "curvature",
        "sparsity",
        "loss",
        "tune",
    ):
        assert topic in titles, topic
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            names = set(re.findall(r"raytrain_eff_[a-z_]+", target["expr"]))
            assert names <= exported, (panel["title"], names - exported)
            assert names or 'job="raytrain_eff"' in target["expr"], panel["title"]


def test_promtool_checks_recording_rules():
    repo = pathlib.Path(__file__).resolve().parents[2]
    rules = repo / "clusters/prometheus/raytrain_eff.rules.yml"
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_key_of_the_vocabulary_feeds_a_named_metric():
    from raytrain_eff.monitor import keys as K

    named = {v for k, v in vars(K).items() if k.isupper() and isinstance(v, str)}
    bookkeeping = set(K.BOOKKEEPING) | {K.EVAL_PREFIX}
    assert named - bookkeeping == set(M.COUNTERS) | set(M.GAUGES) | {M.STEP_TIME_STAT, M.STEPS_KEY}
    assert not bookkeeping & (set(M.COUNTERS) | set(M.GAUGES) | {M.STEP_TIME_STAT})


def test_only_method_statistics_go_to_method_stat(exporter):
    from raytrain_eff.monitor import keys as K

    row = {
        **ALL_STATS,
        K.WALL: 12.5,
        K.WORLD_SIZE: 2,
        K.ATTEMPT: 1,
        "val_loss": 0.3,
        "val_accuracy": 0.9,
        "mst_density": 0.1,
    }
    pusher = MetricsPusher(run="r", rank=0, exporter=exporter)
    pusher.push(row)
    pusher.flush()
    stats = {
        s.labels["stat"]
        for f in text_string_to_metric_families(exporter.render().decode())
        for s in f.samples
        if s.name == M.METHOD_STAT.name
    }
    assert stats == {"lanczos_staleness", "mst_density"}


def test_gpu_gauges_are_fed_on_cuda_only_and_peak_is_never_below_rss():
    import torch

    from raytrain_eff.engine import accounting
    from raytrain_eff.monitor import keys as K
    from raytrain_eff.monitor import push

    cpu = torch.device("cpu")
    assert accounting.gpu_memory(cpu) == {}
    rss = push.rss_bytes()
    assert accounting.peak_memory_bytes(cpu, rss) >= rss
    assert accounting.peak_memory_bytes(cpu, 1 << 50) == 1 << 50
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        x = torch.ones(1 << 20, device=cuda)
        mem = accounting.gpu_memory(cuda)
        assert set(mem) == {K.GPU_ALLOCATED, K.GPU_PEAK}
        assert mem[K.GPU_PEAK] >= mem[K.GPU_ALLOCATED] >= x.numel() * 4
