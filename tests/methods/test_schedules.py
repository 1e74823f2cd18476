"""Typed schedules: values at given steps, round trips, user input and its errors."""

import math

import pytest

from raytrain_eff.hparams.mst import MSTConfig
from raytrain_eff.methods.schedules import (
    Constant,
    Cosine,
    Cubic,
    Cycling,
    Keypoints,
    Linear,
    Piecewise,
    Step,
    UpdateFrequency,
    make_schedule,
    ramp,
)
from raytrain_eff.typed import ConfigError, build


def test_ramps_at_given_steps_go_up_and_down():
    up = Linear(0.0, 0.8, 10, 50)
    assert [up(t) for t in (0, 10, 30, 50, 99)] == [0.0, 0.0, pytest.approx(0.4), 0.8, 0.8]
    down = Linear(0.8, 0.2, 0, 100)
    assert down(25) == pytest.approx(0.65)
    cubic = Cubic(0.0, 0.9, 0, 100)  # 0.9·(1 − (1 − 0.5)³) = 0.7875
    assert cubic(50) == pytest.approx(0.7875)
    cos = Cosine(0.3, 0.0, 0, 100)  # ζ annealing: 0.15·(1 + cos(π/4)) at a quarter
    assert cos(25) == pytest.approx(0.15 * (1 + math.cos(math.pi / 4)))
    assert cos(100) == 0.0 and cos(1000) == 0.0


def test_step_keypoints_piecewise_cycling():
    assert [Step([10, 20], [0.0, 0.5, 0.1])(t) for t in (9, 10, 19, 20)] == [0.0, 0.5, 0.5, 0.1]
    hold = Keypoints([[0, 0.0], [100, 0.9], [300, 0.9], [400, 0.0]])  # up, hold, down
    assert [hold(t) for t in (50, 200, 350, 500)] == [
        pytest.approx(0.45),
        0.9,
        pytest.approx(0.45),
        0.0,
    ]
    mst = Piecewise([[0, Cubic(0.0, 0.9, 0, 100)], [300, Linear(0.9, 0.0, 300, 400)]])
    assert [mst(t) for t in (100, 299, 350, 400)] == [0.9, 0.9, pytest.approx(0.45), 0.0]
    cyc = Cycling(Linear(0.0, 1.0, 0, 10), period=10, t0=5)
    assert cyc(3) == pytest.approx(0.3) and cyc(17) == pytest.approx(0.7)


@pytest.mark.parametrize(
    "schedule",
    [
        Constant(0.5),
        Linear(0.1, 0.7, 5, 20),
        Cubic(0.9, 0.0, 3, 9),
        Step([4], [0.1, 0.2]),
        Keypoints([[0, 0.0], [10, 1.0]]),
        Cycling(Cosine(0.0, 1.0, 0, 8), 8),
        Piecewise([[0, Constant(0.2)], [10, Linear(0.2, 0.8, 10, 30)]]),
    ],
)
def test_spec_round_trips_exactly(schedule):
    again = make_schedule(schedule.spec())
    assert type(again) is type(schedule) and again.spec() == schedule.spec()
    assert [again(t) for t in range(40)] == [schedule(t) for t in range(40)]


def test_make_schedule_from_user_input():
    assert make_schedule(0.75)(123) == 0.75
    assert make_schedule([[0, 0.0], [10, 0.5]])(5) == pytest.approx(0.25)
    assert make_schedule({"type": "constant", "value": 0.3})(0) == 0.3
    nested = make_schedule(
        {
            "type": "piecewise",
            "pieces": [
                [0, 0.0],
                [10, {"type": "linear", "start": 0.0, "end": 1.0, "t0": 10, "t1": 20}],
            ],
        }
    )
    assert nested(15) == pytest.approx(0.5)
    assert ramp("cosine", 0.3, 0.0, 7, 7)(6) == 0.3 and ramp("linear", 0.3, 0.0, 7, 7)(7) == 0.0


def test_make_schedule_errors_list_the_options():
    with pytest.raises(
        ConfigError,
        match=r"'cosin' is unknown \(did you mean 'cosine'\?\).*"
        r"constant, linear, cubic, cosine, step",
    ):
        make_schedule({"type": "cosin"})
    with pytest.raises(ConfigError, match="'linear' takes start, end, t0, t1"):
        make_schedule({"type": "linear", "start": 0.0, "stop": 1.0})
    with pytest.raises(ConfigError, match=r"\[step, value\] pairs"):
        make_schedule([0.1, 0.2])
    with pytest.raises(ConfigError, match="not understood"):
        make_schedule("cosine")
    with pytest.raises(ConfigError, match="t1: 5 is invalid; must be > t0 \\(10\\)"):
        Linear(0.0, 1.0, 10, 5)


def test_update_frequency_start_stop():
    f = UpdateFrequency(every=5, start=10, stop=30)
    assert [t for t in range(40) if f.is_update(t)] == [10, 15, 20, 25]
    assert UpdateFrequency(**f.spec()) == f


def test_config_validates_and_checks_explicit_schedule():
    cfg = build(MSTConfig, {"sparsity": 0.8, "schedule": [[0, 0.0], [50, 0.8]]}, "methods.mst")
    assert cfg.sparsity == 0.8
    with pytest.raises(ConfigError, match="methods.mst.sparsity: 1.2 is invalid; must be in"):
        build(MSTConfig, {"sparsity": 1.2}, "methods.mst")
    with pytest.raises(ConfigError, match="restore_start: 0.05 is invalid; must be ordered"):
        MSTConfig(warmup_end=0.1, restore_start=0.05)
    with pytest.raises(ConfigError, match="'cubical' is unknown"):
        MSTConfig(schedule={"type": "cubical"})
    with pytest.raises(ConfigError, match="'sometimes' is not allowed"):
        build(MSTConfig, {"grow": "sometimes"}, "methods.mst")
