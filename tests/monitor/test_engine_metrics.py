"""A 2-worker training run publishes its metrics on the node's exporter, counted once."""
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raytrain_eff.engine import launch

pytestmark = pytest.mark.usefixtures("ray_session")


def test_training_run_is_visible_on_the_exporter(run_cfg):
    cfg = run_cfg("digits-adamw", "run.steps=30", "run.report_interval=10",
                  "run.checkpoint_interval=30", "run.eval_interval=0", "monitor.enabled=true",
                  "monitor.port=19464")
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
