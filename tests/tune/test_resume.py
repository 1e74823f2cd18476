"""Ctrl-C on `raytrain-eff tune`, then the resume command it prints, for each kind of sweep,
with monitoring on (the default). The CLI runs in a subprocess on the test session's Ray."""

import pathlib
import shlex
import signal
import subprocess
import textwrap
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.usefixtures("ray_session")

BASE = """\
base: digits-adamw
overrides: [run.steps=20, run.report_interval=5, run.checkpoint_interval=5,
            scaling.num_workers=1, data.batch_size=32, methods.adamw.lr=0.01,
            train.warmup_steps=0]
metric: val_loss
mode: min
"""


def start(tmp_path, space: str, name: str, log: str, base: str = BASE):
    import ray

    space_file = tmp_path / "space.yaml"
    space_file.write_text(base + textwrap.dedent(space))
    cmd = [
        "raytrain-eff",
        "tune",
        str(space_file),
        "--name",
        name,
        "--storage-path",
        str(tmp_path),
        "--address",
        ray.get_runtime_context().gcs_address,
    ]
    out = open(tmp_path / log, "w")  # noqa: SIM115 - the child writes it until it ends
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)


def interrupt_when(proc, ready, timeout: float = 300) -> int:
    """SIGINT (one Ctrl-C) once ``ready()`` holds; the command's exit code."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "the sweep never got to the interrupt point"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=180)


def resume(tmp_path, log: str) -> None:
    """Run the command the interrupted sweep printed; it must finish the sweep."""
    text = (tmp_path / log).read_text()
    line = next(x for x in text.splitlines() if x.startswith("resume with: "))
    words = shlex.split(line.removeprefix("resume with: "))
    assert words[:2] == ["raytrain-eff", "tune"] and "--resume" in words
    done = subprocess.run(words, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def trial_dirs(sweep: pathlib.Path, done: bool = True) -> list[pathlib.Path]:
    marker = "summary.json" if done else "config.yaml"
    return sorted(p.parent for p in (sweep / "trials").glob(f"*/{marker}"))


def second_started(sweep: pathlib.Path):
    """With one trial at a time, the second has started once Tune has taken the first's end."""
    return lambda: len(trial_dirs(sweep, done=False)) == 2


def check_one_row_per_step(sweep: pathlib.Path, steps: int = 20) -> pd.DataFrame:
    table = pd.read_parquet(sweep / "results.parquet")
    for _, frame in table.groupby("trial_id"):
        assert frame.step.tolist() == list(range(steps))
        assert frame.samples_seen.tolist() == frame.samples.cumsum().tolist()
    return table


@pytest.mark.timeout(900)
def test_fifo_conditional_space_resumes_without_rerunning_finished_trials(tmp_path):
    sweep = tmp_path / "fifo"
    proc = start(
        tmp_path,
        """\
        num_samples: 1
        resources: {max_concurrent: 1}
        space:
          data.batch_size: {grid: [32, 64]}
          methods.adamw.lr: {loguniform: [1.0e-3, 1.0e-2], when: {data.batch_size: 64}}
        """,
        "fifo",
        "first.log",
    )
    assert interrupt_when(proc, second_started(sweep)) == 130
    first = pd.read_parquet(sweep / "trials.parquet").set_index("config/data.batch_size")
    assert first.loc[32, "status"] == "completed"
    assert first.loc[64, "status"] == "interrupted"
    assert pd.isna(first.loc[32, "config/methods.adamw.lr"])  # its condition failed
    drawn = first.loc[64, "config/methods.adamw.lr"]
    assert 1e-3 <= drawn <= 1e-2
    finished = trial_dirs(sweep)[0] / "summary.json"
    stamp, written = finished.stat().st_mtime_ns, (sweep / "report.html").stat().st_mtime_ns

    resume(tmp_path, "first.log")
    trials = pd.read_parquet(sweep / "trials.parquet").set_index("config/data.batch_size")
    assert (trials.status == "completed").all() and len(trials) == 2
    assert trials.loc[64, "config/methods.adamw.lr"] == drawn  # the pending trial's own draw
    assert finished.stat().st_mtime_ns == stamp  # the finished trial did not run again
    assert (trials.samples_seen == trials.index * 20).all()
    check_one_row_per_step(sweep)
    assert "val_loss=" in (sweep / "best.yaml").read_text()
    assert (sweep / "report.html").stat().st_mtime_ns > written


@pytest.mark.timeout(900)
def test_asha_budget_follows_each_trials_batch_and_survives_resume(tmp_path):
    """Budgets in samples: the batch-64 trial runs all its steps (twice the base's samples),
    the batch-32 trial with a useless learning rate is cut at a rung. Long runs: Tune's STOP
    reaches a trial asynchronously, and a 20-step trial of this tiny model can finish first."""
    sweep = tmp_path / "asha"
    steps = 400
    base = BASE.replace(
        "run.steps=20, run.report_interval=5, run.checkpoint_interval=5",
        f"run.steps={steps}, run.report_interval=10, run.checkpoint_interval=50",
    )
    assert base != BASE
    proc = start(
        tmp_path,
        """\
        num_samples: 1
        scheduler: {type: asha, reduction_factor: 2}
        resources: {max_concurrent: 1}
        space:
          data.batch_size: {grid: [64, 32]}
          methods.adamw.lr: {choice: [1.0e-7], when: {data.batch_size: 32}}
        """,
        "asha",
        "first.log",
        base,
    )
    assert interrupt_when(proc, second_started(sweep)) == 130
    resume(tmp_path, "first.log")
    trials = pd.read_parquet(sweep / "trials.parquet").set_index("config/data.batch_size")
    assert trials.loc[64, "status"] == "completed" and trials.loc[64, "steps_done"] == steps
    assert trials.loc[64, "samples_seen"] == steps * 64
    assert trials.loc[32, "status"] == "early_stopped"
    assert trials.loc[32, "steps_done"] < steps
    assert "trial " + trials.loc[64, "trial_id"] in (sweep / "best.yaml").read_text()


@pytest.mark.timeout(900)
def test_pbt_resumes_and_never_exploits_at_the_last_step(tmp_path):
    sweep = tmp_path / "pbt"
    proc = start(
        tmp_path,
        """\
        num_samples: 2
        # both trials meet at step 10 (320 samples), where the worse copies the better, and
        # at step 20, the end, where neither may be exploited
        scheduler: {type: pbt, perturbation_interval: 320, quantile_fraction: 0.5, synch: true}
        resources: {max_concurrent: 2}
        space:
          methods.adamw.lr: {loguniform: [1.0e-5, 1.0e-2]}
        """,
        "pbt",
        "first.log",
    )
    exploited = lambda: any((sweep / "trials").glob("*-from*/config.yaml"))  # noqa: E731
    assert interrupt_when(proc, exploited) == 130
    resume(tmp_path, "first.log")
    trials = pd.read_parquet(sweep / "trials.parquet")
    assert (trials.status == "completed").all() and len(trials) == 2
    assert not list((sweep / "trials").glob("*-from00000020"))  # no restart after the end
    steps = check_one_row_per_step(sweep)
    for _, row in trials.iterrows():
        own = steps[steps.trial_id == row.trial_id].val_loss.dropna()
        assert row.val_loss == own.iloc[-1]  # its own last evaluation, not a donor's
    import json

    histories = sorted((json.loads(h) for h in trials.config_history), key=len)
    # the worse trial ran with its lr, then the better's perturbed at step 10, and on resume
    # PBT kept its schedule (no perturbation at the trials' first reports)
    assert [[h["from_step"] for h in history] for history in histories] == [[0], [0, 10]]
