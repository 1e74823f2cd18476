"""build_trainer turns the typed config into Ray Train's configs (no fit: no workers start)."""

import os

import pytest

from raytrain_eff import config
from raytrain_eff.engine import launch


@pytest.fixture(autouse=True)
def _own_poll_setting(monkeypatch):
    """build_trainer sets Train's poll interval in this process: undone after each test."""
    monkeypatch.delenv(launch.HEALTH_CHECK_ENV, raising=False)


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


def test_a_local_ray_runs_train_without_a_preemption_watcher(monkeypatch):
    monkeypatch.delenv(launch.PREEMPTION_WATCHER_ENV, raising=False)
    launch.ray_train_settings(local=True)
    assert os.environ[launch.PREEMPTION_WATCHER_ENV] == "0"


def test_a_cluster_keeps_its_preemption_watcher(monkeypatch):
    monkeypatch.delenv(launch.PREEMPTION_WATCHER_ENV, raising=False)
    launch.ray_train_settings(local=False)
    assert launch.PREEMPTION_WATCHER_ENV not in os.environ


def test_the_controller_polls_small_groups_sooner_and_the_users_setting_wins(monkeypatch, tmp_path):
    """Set where the trainer is made (a Tune trial's process, a cluster's driver), from the
    group's size: a poll is one call to every worker."""
    assert [launch.poll_interval_s(w) for w in (1, 8, 16, 64, 512)] == [0.25, 0.25, 0.5, 2, 2]
    _trainer(tmp_path, "scaling.num_workers=2")
    assert os.environ[launch.HEALTH_CHECK_ENV] == "0.25"
    monkeypatch.setenv(launch.HEALTH_CHECK_ENV, "3")
    _trainer(tmp_path, "scaling.num_workers=16")
    assert os.environ[launch.HEALTH_CHECK_ENV] == "3"
