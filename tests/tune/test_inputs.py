"""A sweep's bad inputs fail before Ray starts, naming what is wrong and what would do."""

import textwrap

import pytest

from raytrain_eff.tune.sweep import run_sweep
from raytrain_eff.typed import ConfigError


def write(tmp_path, metric: str = "val_loss") -> str:
    path = tmp_path / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        base: digits-adamw
        metric: {metric}
        space:
          methods.adamw.lr: {{uniform: [0.001, 0.01]}}
        """)
    )
    return str(path)


def test_a_metric_typo_fails_before_ray_starts(tmp_path):
    import ray

    was_up = ray.is_initialized()
    with pytest.raises(
        ConfigError,
        match="metric: 'val_los' is not reported by trials of "
        "this space \\(did you mean 'val_loss'\\?\\)",
    ):
        run_sweep(write(tmp_path, "val_los"), storage_path=str(tmp_path))
    assert ray.is_initialized() == was_up


def test_resuming_an_unknown_sweep_fails_before_ray_starts(tmp_path):
    import ray

    was_up = ray.is_initialized()
    (tmp_path / "sweep-one").mkdir()
    (tmp_path / "sweep-one" / "tuner.pkl").write_bytes(b"")
    with pytest.raises(
        ConfigError,
        match="no sweep to resume at .*sweep-onw "
        "\\(--name sweep-onw \\(did you mean "
        "'sweep-one'\\?\\)\\)",
    ):
        run_sweep(write(tmp_path), name="sweep-onw", storage_path=str(tmp_path), resume=True)
    assert ray.is_initialized() == was_up
