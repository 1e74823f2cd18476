"""Workers the cluster cannot place are refused with numbers, or time out (shared Ray, 4 CPUs)."""

import pytest
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from timeouts import scaled

from raytrain_eff.engine import resources

pytestmark = pytest.mark.usefixtures("ray_session")


def test_more_cpus_than_the_cluster_has_are_refused_at_once(run_cfg):
    total = ray.cluster_resources()["CPU"]
    workers = int(total) * 2
    with pytest.raises(resources.ResourcesUnavailable) as info:
        resources.check(run_cfg("digits-adamw", f"scaling.num_workers={workers}"), timeout_s=0)
    text = str(info.value)
    assert f"asks for {workers} workers x 1 CPU = {workers} CPU" in text
    assert f"the cluster has {total:g} CPU" in text and "no autoscaler can add nodes" in text
    assert (
        f"scaling.num_workers={int(total)} or scaling.cpus_per_worker={total / workers:g}"
    ) in text


def test_elastic_groups_are_checked_at_their_minimum(run_cfg):
    total = int(ray.cluster_resources()["CPU"])
    cfg = run_cfg("digits-adamw", f"scaling.num_workers={total * 4}", "scaling.min_workers=1")
    resources.check(cfg, timeout_s=scaled(30))  # one worker fits: no error


def test_busy_cpus_time_out_with_the_numbers_and_are_released(run_cfg):
    total = ray.cluster_resources()["CPU"]
    hog = placement_group([{"CPU": total}])
    assert ray.get(hog.ready(), timeout=scaled(60))
    try:
        with pytest.raises(
            resources.ResourcesUnavailable,
            match=r"asks for 1 worker x 1 CPU "
            r"= 1 CPU, but the cluster has .* did not become free within 1 s",
        ):
            resources.check(run_cfg("digits-adamw", "scaling.num_workers=1"), timeout_s=1)
    finally:
        remove_placement_group(hog)
    resources.check(run_cfg("digits-adamw", "scaling.num_workers=2"), timeout_s=scaled(30))


def test_a_worker_larger_than_every_node_does_not_fit_and_the_fix_says_so(run_cfg):
    cfg = run_cfg("digits-adamw", "scaling.num_workers=1", "scaling.cpus_per_worker=3")
    wanted, total = resources.bundles(cfg), {"CPU": 4.0}
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    assert not resources._fits(wanted, total, nodes)
    assert resources._fits(wanted, total, [{"CPU": 3.0}, {"CPU": 1.0}])
    text = resources.describe(cfg, wanted, total, total, "why", largest_node_cpus=2.0)
    assert text.endswith("fix it with scaling.cpus_per_worker=2")
