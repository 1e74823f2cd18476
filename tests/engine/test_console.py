"""The driver's console: each progress event shown once; Ray's loggers sent to a file."""

import io
import logging

from raytrain_eff.engine import console


def _events():
    return [
        {"text": "[r] resumed from step 5", "step": None, "steps": None},
        {"text": "[r] step 10/20 | loss 1.000", "step": 10, "steps": 20},
        {"text": "[r] step 20/20 | loss 0.500", "step": 20, "steps": 20},
    ]


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    shown = console.Console(stream=out, tty=False)
    for event in _events():
        shown.show(event)
    shown.close()
    assert out.getvalue().splitlines() == [e["text"] for e in _events()]


def test_a_bar_on_a_terminal_reaches_the_last_step():
    out = io.StringIO()
    shown = console.Console(stream=out, tty=True)
    for event in _events():
        shown.show(event)
    assert shown.bar.n == 20 and shown.bar.total == 20
    shown.close()
    text = out.getvalue()
    assert "[r] resumed from step 5" in text and "loss 0.500" in text


def test_a_restart_is_one_line_with_its_attempt_step_and_reason():
    out = io.StringIO()
    shown = console.Console(stream=out, tty=False)
    shown.show({"failure": "rank 1 failed: ActorDiedError: the actor died"})
    shown.show(
        {
            "text": "[r] attempt 1: resumed from step 10 (saved by 2 workers, now 1)",
            "step": None,
            "steps": None,
            "resumed": True,
        }
    )
    shown.show(
        {
            "text": "[r] attempt 2: resumed from step 20 (saved by 1 workers, now 1)",
            "step": None,
            "steps": None,
            "resumed": True,
        }
    )  # `--resume`: no failure
    assert out.getvalue().splitlines() == [
        "[r] attempt 1: resumed from step 10 (saved by 2 workers, now 1), after rank 1 failed: "
        "ActorDiedError: the actor died",
        "[r] attempt 2: resumed from step 20 (saved by 1 workers, now 1)",
    ]


def test_a_sweeps_trials_share_the_console_and_each_restart_names_its_own_failure():
    out = io.StringIO()
    shown = console.Console(stream=out, tty=False)
    shown.show({"run": "t1", "failure": "rank 0 failed: ValueError: nan"})
    shown.show({"run": "t2", "text": "[t2] step 5/10 | loss 1.000", "step": 5, "steps": 10})
    shown.show(
        {
            "run": "t2",
            "text": "[t2] attempt 1: resumed from step 5",
            "step": None,
            "steps": None,
            "resumed": True,
        }
    )  # a restart of another trial: not t1's
    shown.show(
        {
            "run": "t1",
            "text": "[t1] attempt 1: resumed from step 0",
            "step": None,
            "steps": None,
            "resumed": True,
        }
    )
    assert out.getvalue().splitlines() == [
        "[t2] step 5/10 | loss 1.000",
        "[t2] attempt 1: resumed from step 5",
        "[t1] attempt 1: resumed from step 0, after rank 0 failed: ValueError: nan",
    ]


def test_ray_loggers_write_to_the_file_not_the_console(tmp_path, capfd):
    ray_logger = logging.getLogger("ray")
    before = list(ray_logger.handlers)
    path = tmp_path / "logs" / "driver.log"
    try:
        console.ray_logs_to_file(str(path))
        ray_logger.warning("a message from Ray")
        assert "a message from Ray" in path.read_text()
        assert "a message from Ray" not in capfd.readouterr().err
    finally:
        for h in list(ray_logger.handlers):
            ray_logger.removeHandler(h)
        for h in before:
            ray_logger.addHandler(h)


def test_uri_run_dirs_log_to_a_local_directory():
    assert console.driver_log("/runs/a", "a") == "/runs/a/logs/driver.log"
    assert "://" not in console.driver_log("s3://bucket/runs/a", "a")
