"""The command line as a user meets it: the installed ``raytrain-eff`` script, run from the
repository root in a subprocess; errors in one line; a quiet console."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import pytest
from timeouts import scaled

from raytrain_eff import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, timeout=240, **env_extra):
    """``raytrain-eff ARGS`` from the repository root, as the README runs it."""
    script = shutil.which("raytrain-eff")
    assert script, "the raytrain-eff console script is not installed (pip install -e .)"
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", **env_extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [script, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
    )


def _common(tmp_path, name):
    return [f"run.storage_path={tmp_path}", f"run.name={name}", "monitor.enabled=false"]


# -- errors (unit) ---------------------------------------------------------------------------
def test_a_config_error_is_one_line_and_verbose_adds_the_traceback(capsys):
    assert cli.main(["train", "run.stpes=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "did you mean 'steps'" in err
    assert cli.main(["train", "--verbose", "run.stpes=3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ")


def test_a_bug_is_not_told_as_a_user_error(monkeypatch):
    def buggy(args):
        return int("not a number")  # a ValueError no user can fix

    monkeypatch.setattr(cli, "cmd_presets", buggy)
    with pytest.raises(ValueError, match="invalid literal"):
        cli.main(["presets"])


# -- through the console script (Ray) ------------------------------------------------------
@pytest.mark.ray
def test_default_run_prints_each_progress_line_once_and_no_ray_lines(tmp_path):
    file_sd = tmp_path / "file_sd"
    proc = _run(
        "train",
        *_common(tmp_path, "quiet"),
        "run.steps=10",
        "run.report_interval=5",
        "run.eval_interval=5",
        "run.checkpoint_interval=5",
        "run.eval_batches=2",
        "monitor.enabled=true",
        RAYTRAIN_EFF_FILE_SD_DIR=str(file_sd),
    )
    assert proc.returncode == 0, proc.stderr
    # its local Ray ended with it, exporters and all: so did its Prometheus targets
    assert f"(Prometheus file_sd: {file_sd}/cluster-" in proc.stdout
    assert list(file_sd.iterdir()) == []
    out = proc.stdout + proc.stderr
    progress = [ln for ln in out.splitlines() if re.search(r"step \d+/10 \|", ln)]
    assert [re.search(r"step (\d+)/", ln).group(1) for ln in progress] == ["5", "10"]
    assert all(ln.startswith("[quiet] step") for ln in progress)  # the driver's, no Ray prefix
    for ray_line in (
        "Reporting training result",
        "RayTrainWorker",
        "TrainController",
        "Started a local Ray instance",
    ):
        assert ray_line not in out
    assert re.search(r"^run dir\s+" + re.escape(str(tmp_path / "quiet")) + "$", proc.stdout, re.M)
    assert re.search(r"^loss\s+\d", proc.stdout, re.M)
    logs = tmp_path / "quiet" / "logs"
    assert f"[quiet] Ray's logs: {logs}/ (--verbose shows them here)" in proc.stdout
    assert "Reporting training result" in (logs / "worker-1.log").read_text()
    assert "Started a local Ray instance" in (logs / "driver.log").read_text()


@pytest.mark.ray
def test_byo_model_from_the_repo_root_trains_on_two_workers_verbosely(tmp_path):
    proc = _run(
        "train",
        "--config",
        "examples/my_task.yaml",
        *_common(tmp_path, "byo"),
        "scaling.num_workers=2",
        "run.steps=20",
        "run.report_interval=10",
        "run.eval_interval=10",
        "run.checkpoint_interval=10",
        "--verbose",
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^val_accuracy\s+0\.\d+", proc.stdout, re.M)
    out = proc.stdout + proc.stderr
    assert "Reporting training result" in out  # --verbose: Ray's own lines are back
    assert [ln for ln in out.splitlines() if "step 10/20 |" in ln] == [
        next(ln for ln in proc.stdout.splitlines() if ln.startswith("[byo] step 10/20 |"))
    ]


@pytest.mark.ray
def test_a_worker_failure_ends_in_one_line_with_the_log(tmp_path):
    # the factory imports on every worker, then fails there building the model
    proc = _run(
        "train",
        "--config",
        "examples/my_task.yaml",
        *_common(tmp_path, "broken"),
        "scaling.num_workers=2",
        "task.options.hidden=-1",
        "run.steps=4",
    )
    assert proc.returncode == 1
    run_dir = tmp_path / "broken"
    log = run_dir / "logs" / "driver.log"
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: run 'broken' failed: RuntimeError: Trying to create tensor "
        "with negative dimension -1"
    )
    assert f"run dir: {run_dir}" in line and f"full log: {log}" in line
    assert "nothing to resume" in line
    assert "Traceback" in log.read_text() and "my_task.py" in log.read_text()


@pytest.mark.ray
def test_more_workers_than_the_cluster_holds_is_refused_with_the_fix(tmp_path):
    workers = (os.cpu_count() or 1) + 2  # the local Ray gets at most os.cpu_count() CPUs
    proc = _run(
        "train",
        "--preset",
        "digits-adamw",
        *_common(tmp_path, "big"),
        f"scaling.num_workers={workers}",
        timeout=120,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"asks for {workers} workers x 1 CPU = {workers} CPU" in line
    assert "no autoscaler can add nodes" in line
    assert re.search(r"fix it with scaling\.num_workers=\d+ or scaling\.cpus_per_worker=", line)
    assert not (tmp_path / "big" / "config.yaml").exists()  # nothing for --resume to find


HOLD_THE_CPUS_THEN_TRAIN = """
import sys
import ray
from ray.util.placement_group import placement_group
from raytrain_eff import cli
from raytrain_eff.engine import launch
launch.ensure_ray(num_cpus=2)
hog = placement_group([{"CPU": 2}])
ray.get(hog.ready())
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.ray
def test_ctrl_c_ends_a_wait_for_busy_workers(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_THE_CPUS_THEN_TRAIN,
            "train",
            "--preset",
            "digits-adamw",
            *_common(tmp_path, "busy"),
            "scaling.num_workers=1",
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    try:
        seen = []  # Ray's start-up lines, then the driver saying it waits
        while not seen or "waiting up to" not in seen[-1]:
            seen.append(proc.stderr.readline())
            assert seen[-1], f"exited without waiting: {seen}"
        assert "[busy] waiting up to 600 s for 1 CPU (0 CPU free); Ctrl-C stops" in seen[-1]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(60))
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted"


RAY_LINES = (
    "Reporting training result",
    "Checkpoint successfully created",
    "TrainController",
    "RayTrainWorker",
)
SHORT = [
    "run.steps=10",
    "run.report_interval=5",
    "run.checkpoint_interval=5",
    "run.eval_batches=2",
    "scaling.num_workers=1",
    "monitor.enabled=false",
]


def _progress_once(out: str, runs: list[str]) -> None:
    """Each run's steps 5 and 10 are on the console once, as the driver's plain lines."""
    for run in runs:
        shown = [ln for ln in out.splitlines() if re.search(r"step \d+/10 \|", ln) and run in ln]
        assert [re.match(r"\[(.+)\] step (\d+)/", ln).groups() for ln in shown] == [
            (run, "5"),
            (run, "10"),
        ], out
    for ray_line in RAY_LINES:
        assert ray_line not in out


@pytest.mark.ray
def test_a_sweep_shows_each_trials_progress_once_beside_tunes_table(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        f"base: digits-adamw\noverrides: [{', '.join(SHORT)}]\n"
        "metric: val_loss\nmode: min\nnum_samples: 1\n"
        "space:\n  methods.adamw.lr: {grid: [1.0e-3, 1.0e-2]}\n"
    )
    proc = _run("tune", space, "--name", "sw", "--storage-path", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    sweep = tmp_path / "sw"
    runs = sorted(p.name for p in (sweep / "trials").iterdir())
    assert len(runs) == 2
    _progress_once(out, runs)
    assert "Trial status: 2 TERMINATED" in out  # Tune's own table stays
    assert (
        f"[sw] Ray's logs: {sweep / 'logs'}/, each trial's in {sweep / 'trials'}/<run>/logs/ "
        f"(--verbose shows them here)"
    ) in proc.stdout
    assert "Started a local Ray instance" in (sweep / "logs" / "driver.log").read_text()
    for run in runs:
        log = (sweep / "trials" / run / "logs" / "worker-0.log").read_text()
        assert "Reporting training result" in log and "Checkpoint successfully created" in log


@pytest.mark.ray
def test_compare_shows_each_runs_progress_once_and_logs_ray(tmp_path):
    proc = _run(
        "compare",
        "--preset",
        "digits-adamw",
        "--against",
        "digits-sgd",
        "--seeds",
        "1",
        "--out",
        tmp_path / "report",
        f"run.storage_path={tmp_path / 'runs'}",
        *SHORT,
    )
    assert proc.returncode == 0, proc.stderr
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert [re.search(r"-([AB])-digits-", r).group(1) for r in runs] == ["A", "B"]
    _progress_once(proc.stdout + proc.stderr, runs)
    for run in runs:
        log = (tmp_path / "runs" / run / "logs" / "worker-0.log").read_text()
        assert "Reporting training result" in log
