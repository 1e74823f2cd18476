"""A space's metric is checked against what its trials report, before Ray starts."""

import pytest

from raytrain_eff import config
from raytrain_eff.tune import reported
from raytrain_eff.typed import ConfigError


def base(preset: str, *overrides: str) -> dict:
    return config.load(preset=preset, overrides=list(overrides)).to_dict()


@pytest.mark.parametrize(
    "preset, metric",
    [
        ("digits-adamw", "val_loss"),
        ("digits-adamw", "val_accuracy"),
        ("digits-adamw", "samples_seen"),
        ("digits-adamw", "loss"),
    ],
)
def test_reported_metrics_pass(preset, metric):
    reported.check_metric("space.yaml", metric, base(preset))


def test_a_typo_names_the_file_key_value_and_nearest_name():
    with pytest.raises(ConfigError) as err:
        reported.check_metric("spaces/s.yaml", "val_los", base("digits-adamw"))
    assert str(err.value).startswith(
        "spaces/s.yaml: metric: 'val_los' is not reported by trials of this space "
        "(did you mean 'val_loss'?); reported: val_accuracy, val_loss, samples_seen"
    )


def test_the_task_decides_its_evaluation_keys():
    """The low-rank task reports recovery_error and no accuracy."""
    lowrank = "lowrank-compressed"
    evals, unknown = reported.eval_metrics(base(lowrank))
    assert unknown is None and "recovery_error" in evals and "val_accuracy" not in evals
    with pytest.raises(ConfigError, match="'val_accuracy' is not reported"):
        reported.check_metric("s.yaml", "val_accuracy", base(lowrank))
