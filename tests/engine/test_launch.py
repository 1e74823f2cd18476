"""build_trainer turns the typed config into Ray Train's configs (no fit: no workers start)."""

import os

from raytrain_eff import config
from raytrain_eff.engine import launch


def _trainer(tmp_path, *overrides):
    cfg = config.load(preset="digits-adamw", overrides=[f"run.storage_path={tmp_path}", *overrides])
    return launch.build_trainer(cfg, "t-launch")


def test_fixed_worker_count_by_default(tmp_path):
    sc = _trainer(tmp_path, "scaling.num_workers=2").scaling_config
    assert sc.num_workers == 2 and not sc.elasticity_enabled


def test_min_workers_makes_the_group_elastic(tmp_path):
    sc = _trainer(
        tmp_path, "scaling.num_workers=4", "scaling.min_workers=1", "scaling.resize_interval_s=5"
    ).scaling_config
    assert sc.elasticity_enabled
    assert (sc.min_workers, sc.max_workers) == (1, 4)
    assert sc.elastic_resize_monitor_interval_s == 5


def test_a_local_ray_runs_train_without_a_preemption_watcher_and_polls_sooner(monkeypatch):
    for name in (launch.HEALTH_CHECK_ENV, launch.PREEMPTION_WATCHER_ENV):
        monkeypatch.delenv(name, raising=False)
    launch.ray_train_settings(local=True)
    assert os.environ[launch.HEALTH_CHECK_ENV] == "0.25"
    assert os.environ[launch.PREEMPTION_WATCHER_ENV] == "0"


def test_a_cluster_keeps_its_preemption_watcher_and_the_users_settings_win(monkeypatch):
    monkeypatch.delenv(launch.PREEMPTION_WATCHER_ENV, raising=False)
    monkeypatch.setenv(launch.HEALTH_CHECK_ENV, "3")
    launch.ray_train_settings(local=False)
    assert os.environ[launch.HEALTH_CHECK_ENV] == "3"
    assert launch.PREEMPTION_WATCHER_ENV not in os.environ
