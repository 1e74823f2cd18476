"""Start-up marks become phases (engine.startup)."""

import time

from raytrain_eff.engine import startup


def test_phases_are_the_gaps_between_consecutive_marks():
    marks = {"command": 100.0, "ray_init": 102.5, "ray_ready": 105.0, "fit": 105.5}
    marks["worker_process"] = 108.0
    recorded = startup.account(marks)
    assert recorded["phases_s"] == {
        "imports": 2.5,
        "ray_init": 2.5,
        "driver_setup": 0.5,
        "controller": 2.5,
    }
    assert recorded["marks_s"]["command"] == 0.0 and recorded["marks_s"]["fit"] == 5.5
    assert startup.recorded_marks({startup.KEY: recorded}) == marks


def test_the_first_mark_of_a_name_counts():
    marks: dict[str, float] = {}
    startup.mark(marks, "fit", at=1.0)
    startup.mark(marks, "fit", at=2.0)
    assert marks == {"fit": 1.0}


def test_a_run_without_a_command_counts_from_its_first_mark():
    recorded = startup.account({"fit": 10.0, "worker_process": 12.0})
    assert recorded["origin"] == 10.0 and recorded["phases_s"] == {"controller": 2.0}


def test_this_process_started_before_now():
    started = startup.process_started()
    assert started is not None and started <= time.time()
    assert time.time() - started < 24 * 3600  # a test process, not the machine's boot
