"""The setup table shows each side's effective step size: the LR times the multiplier applied."""

from __future__ import annotations

import pandas as pd
import pytest

from raytrain_eff.report.build import LR_SCALE_KEY, Loaded, step_sizes

pytestmark = pytest.mark.unit


def run(lr: list[float], scale: list[float] | None = None) -> Loaded:
    steps = pd.DataFrame({"step": range(len(lr)), "lr": lr})
    if scale is not None:
        steps[LR_SCALE_KEY] = scale
    return Loaded(run_dir="/r", name="r", config={}, summary={}, steps=steps)


def test_fosi_step_size_includes_its_clip_factor():
    # FOSI logs c only once a refresh has happened: NaN before it means c = 1
    fosi = [
        run([1e-3, 2e-3, 2e-3], [float("nan"), 3.0, 2.5]),
        run([1e-3, 2e-3, 2e-3], [float("nan"), 2.0, 2.0]),
    ]
    sizes = step_sizes(fosi)
    assert sizes["peak_lr"] == pytest.approx(2e-3)
    assert sizes["lr_multiplier_max"] == pytest.approx(2.5)  # median of 3.0 and 2.0
    assert sizes["effective_peak_lr"] == pytest.approx(5e-3)


def test_a_plain_optimizer_steps_at_its_lr():
    sizes = step_sizes([run([1e-3, 3e-3])])
    assert sizes == {"peak_lr": 3e-3, "lr_multiplier_max": 1.0, "effective_peak_lr": 3e-3}
