"""A user's model given as 'package.module:function' trains through the engine."""

import pathlib

import pytest

from raytrain_eff import config
from raytrain_eff.engine import launch
from raytrain_eff.typed import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_user_factory_trains(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    cfg = config.load(
        path=str(REPO / "examples" / "my_task.yaml"),
        overrides=[f"run.storage_path={tmp_path}", "run.name=user-task", "monitor.enabled=false"],
    )
    result = launch.fit(cfg)
    assert result.metrics["val_accuracy"] > 0.85  # majority class is 0.63


def test_bad_factory_is_named():
    with pytest.raises(
        ConfigError,
        match="task.factory: 'no_colon' is invalid; must be of the form 'package.module:function'",
    ):
        config.load(
            path=str(REPO / "examples" / "my_task.yaml"), overrides=["task.factory=no_colon"]
        )


def test_unimportable_factory_fails_before_training(tmp_path):
    cfg = config.load(
        path=str(REPO / "examples" / "my_task.yaml"),
        overrides=[
            f"run.storage_path={tmp_path}",
            "run.name=bad-user",
            "monitor.enabled=false",
            "task.factory=nosuchpkg.mod:make",
        ],
    )
    with pytest.raises(ValueError, match="task.factory 'nosuchpkg.mod:make' cannot be imported"):
        launch.fit(cfg)
