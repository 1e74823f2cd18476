"""A 2-worker training run publishes its metrics on the node's exporter, counted once."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raytrain_eff.engine import launch

pytestmark = pytest.mark.usefixtures("ray_session")


def test_training_run_is_visible_on_the_exporter(run_cfg):
    cfg = run_cfg(
        "digits-adamw",
        "run.steps=30",
        "run.report_interval=10",
        "run.checkpoint_interval=30",
        "run.eval_interval=0",
        "monitor.enabled=true",
        "monitor.port=19464",
    )
    launch.fit(cfg)
    from raytrain_eff.monitor import discovery

    (address,) = discovery.list_exporters()
    text = urllib.request.urlopen(address["url"], timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("run") == cfg.run.name:
                samples.setdefault(s.name, []).append(s)
    ranks = {s.labels["rank"] for s in samples["raytrain_eff_samples_total"]}
    assert ranks == {"0", "1"}
    total = sum(s.value for s in samples["raytrain_eff_samples_total"])
    assert total == 30 * 2 * 64  # every sample once, not once per rank
    assert all(s.value == 30 for s in samples["raytrain_eff_steps_total"])
    assert samples["raytrain_eff_worker_peak_memory_bytes"][0].value > 0


def _scrape_run(run: str) -> dict[str, list]:
    """{sample name: samples of ``run``} over every exporter of the cluster, by HTTP."""
    from raytrain_eff.monitor import discovery

    samples: dict[str, list] = {}
    for address in discovery.list_exporters():
        text = urllib.request.urlopen(address["url"], timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.labels.get("run") == run:
                    samples.setdefault(s.name, []).append(s)
    return samples


def test_mst_sparsity_reaches_its_dashboard_gauge(run_cfg):
    # gpt-mst for real, tiny: 90% sparse from step 2 on, sparse attention throughout
    cfg = run_cfg(
        "gpt-mst",
        "scaling.num_workers=1",
        "run.steps=10",
        "run.report_interval=5",
        "run.checkpoint_interval=10",
        "run.eval_interval=0",
        "monitor.enabled=true",
        "monitor.port=19464",
        "task.n_layer=1",
        "task.n_embd=32",
        "task.n_head=2",
        "data.batch_size=4",
        "methods.mst.warmup_end=0.2",
        "methods.mst.restore_start=1.0",
        "methods.mst.restore_end=1.0",
        "methods.mst.update_every=1",
        "methods.mst.attention_start=0.0",
        "methods.mst.attention_stop=1.0",
    )
    launch.fit(cfg)
    samples = _scrape_run(cfg.run.name)
    (sparsity,) = samples["raytrain_eff_sparsity_ratio"]
    assert sparsity.value == pytest.approx(0.9, abs=0.02)
    (attention,) = samples["raytrain_eff_attention_density_ratio"]
    assert 0.0 < attention.value < 1.0
    # bookkeeping never shows up as a method statistic; MST's own statistics do
    stats = {s.labels["stat"] for s in samples["raytrain_eff_method_stat"]}
    assert "mst_density" in stats
    assert not {"wall_s", "world_size", "sparsity", "attention_density", "step", "loss"} & stats
    assert not any(s.startswith("val_") for s in stats)
