"""A failed run in one line: the root cause through Ray's wrappers, the log, the way on."""

from ray.train import WorkerGroupError

from raytrain_eff.engine import failures


def _group_error():
    try:
        try:
            raise KeyError("label")
        except KeyError as inner:
            raise RuntimeError("rank 0 broke") from inner
    except RuntimeError as err:
        rank0 = err
    return WorkerGroupError("Training failed on 2 workers", {1: ValueError("late"), 0: rank0})


def test_the_root_cause_is_the_lowest_ranks_innermost_exception():
    assert failures.summary(_group_error()) == "KeyError: 'label'"


def test_a_traceback_in_the_message_is_cut_to_its_last_line():
    err = RuntimeError(
        'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: disk full\n'
    )
    assert failures.summary(err) == "RuntimeError: OSError: disk full"


def test_with_a_checkpoint_the_line_gives_the_resume_command_and_the_retry_hint(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoint_step00000010").mkdir(parents=True)
    log = run_dir / "logs" / "driver.log"
    failed = failures.run_failed(
        _group_error(), name="run", run_dir=str(run_dir), log=str(log), max_failures=0
    )
    line = str(failed)
    assert "\n" not in line and failed.cause.__class__ is WorkerGroupError
    assert line.startswith("run 'run' failed: KeyError: 'label'; ")
    assert f"run dir: {run_dir}; full log: {log}" in line
    assert f"`raytrain-eff train --resume {run_dir} run.max_failures=2`" in line
    assert "run.max_failures=0, so Ray did not retry" in line
    assert "rank 0 broke" in log.read_text()  # the whole chain is in the log


def test_without_a_checkpoint_there_is_nothing_to_resume(tmp_path):
    failed = failures.run_failed(
        _group_error(),
        name="run",
        run_dir=str(tmp_path / "none"),
        log=str(tmp_path / "driver.log"),
        max_failures=3,
    )
    assert "nothing to resume" in str(failed) and "--resume" not in str(failed)
