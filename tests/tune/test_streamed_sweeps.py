"""Tune sweeps and ``compare`` on data no worker holds: streamed Parquet text (data.plan) and a
user task's Ray Data dataset reach every trial and every compared run, which finish with
results."""

import pathlib
import textwrap

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytrain_eff import config
from raytrain_eff.data.corpus import kjv_verses
from raytrain_eff.report.compare import compare
from raytrain_eff.tune import reported, space
from raytrain_eff.tune.sweep import concurrency, run_sweep
from raytrain_eff.typed import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_session")
TINY_GPT = ["task.seq_len=32", "task.n_layer=1", "task.n_head=2", "task.n_embd=32"]


def _corpus(tmp_path) -> str:
    """1,200 verses in row groups of 200: streamed (task.vocab auto -> bytes), never loaded."""
    path = tmp_path / "verses.parquet"
    verses = [v["text"] for v in kjv_verses()[:1200]]
    pq.write_table(pa.table({"text": verses}), path, row_group_size=200)
    return str(path)


def _trial_tables(sweep_dir: pathlib.Path) -> list[pd.DataFrame]:
    return [pd.read_parquet(p) for p in sorted(sweep_dir.glob("trials/*/metrics.parquet"))]


def _sweep(tmp_path, name: str, base: str, overrides: list[str], space: str) -> pathlib.Path:
    space_file = tmp_path / f"{name}.yaml"
    space_file.write_text(
        textwrap.dedent(f"""\
        base: {base}
        overrides: {overrides}
        metric: val_loss
        mode: min
        num_samples: 1
        space:
        """)
        + textwrap.indent(space, "  ")
    )
    return pathlib.Path(run_sweep(str(space_file), name=name, storage_path=str(tmp_path)))


def test_a_sweep_on_streamed_parquet_text_finishes_every_trial(tmp_path):
    corpus = _corpus(tmp_path)
    sweep_dir = _sweep(
        tmp_path,
        "stream",
        "default",
        [
            f"data.dataset={corpus}",
            *TINY_GPT,
            "data.batch_size=8",
            "scaling.num_workers=1",
            "run.steps=4",
            "run.eval_interval=4",
            "run.eval_batches=2",
            "run.report_interval=2",
            "run.checkpoint_interval=4",
            "train.warmup_steps=0",
            "monitor.enabled=false",
        ],
        "methods.adamw.lr: {grid: [1.0e-3, 3.0e-3]}\n",
    )
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "completed").all(), trials.get("error")
    assert trials.val_loss.notna().all() and (trials.steps_done == 4).all()
    tables = _trial_tables(sweep_dir)
    assert len(tables) == 2
    for table in tables:  # each trial streamed its batches: 8 rows x 32 bytes a step
        assert table.step.tolist() == [0, 1, 2, 3]
        assert (table.tokens == 8 * 32).all() and (table.data_wait_s >= 0).all()


@pytest.mark.timeout(600)  # its trials run one at a time: each leaves Ray Data a CPU
def test_a_sweep_hands_the_tasks_ray_data_dataset_to_every_trial(tmp_path):
    # rows of 20 bytes in windows of 32: a step's tokens are the attention mask's 4 x 20,
    # which only the task's Ray Data pipeline (read_parquet + its tokeniser) produces
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x" * 20] * 48}), path)
    sweep_dir = _sweep(
        tmp_path,
        "raydata",
        str(REPO / "examples" / "my_ray_data_task.yaml"),
        [
            f"task.options={{path: {path}, val_path: {path}, seq_len: 32, dim: 16}}",
            "data.batch_size=4",
            "scaling.num_workers=1",
            "scaling.cpus_per_worker=1",
            "run.steps=3",
            "run.eval_interval=3",
            "run.eval_batches=2",
            "run.report_interval=3",
            "run.checkpoint_interval=3",
            "monitor.enabled=false",
        ],
        "methods.adamw.lr: {grid: [1.0e-3, 3.0e-3]}\n",
    )
    trials = pd.read_parquet(sweep_dir / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "completed").all(), trials.get("error")
    assert trials.val_loss.notna().all()
    tables = _trial_tables(sweep_dir)
    assert len(tables) == 2
    for table in tables:
        assert (table.samples == 4).all() and (table.tokens == 4 * 20).all()


def test_compare_on_streamed_parquet_text_writes_its_report(tmp_path):
    corpus = _corpus(tmp_path)
    out = compare(
        "gpt-mst",
        "gpt-dense",
        seeds=1,
        overrides=[
            f"data.dataset={corpus}",
            *TINY_GPT,
            "data.batch_size=8",
            "scaling.num_workers=0",
            "run.steps=6",
            "run.eval_interval=3",
            "run.eval_batches=2",
            "run.report_interval=3",
            "run.checkpoint_interval=6",
            "train.warmup_steps=0",
            "monitor.enabled=false",
            f"run.storage_path={tmp_path / 'runs'}",
        ],
        out_dir=str(tmp_path / "report"),
    )
    report = pathlib.Path(out)
    assert (report / "report.html").stat().st_size > 1000
    runs = sorted((tmp_path / "runs").glob("cmp-*/metrics.parquet"))
    assert len(runs) == 2
    for run in runs:
        table = pd.read_parquet(run)
        assert len(table) == 6 and table.val_loss.notna().sum() == 2
        assert (table.tokens == 8 * 32).all()


def test_trials_on_ray_data_leave_a_cpu_each_for_its_reads(tmp_path):
    # the session's 4 CPUs: trials of 1 worker + 0.1 (Tune function) fit 3 at once, but on
    # Ray Data each also needs 1 CPU for its read and tokeniser tasks: 4 // 2.1 = 1
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x" * 20] * 8}), path)
    spaces = {}
    for name, base, options in (
        ("tensors", "digits-adamw", []),
        (
            "raydata",
            str(REPO / "examples" / "my_ray_data_task.yaml"),
            [f"task.options={{path: {path}}}"],
        ),
    ):
        spaces[name] = tmp_path / f"{name}.yaml"
        spaces[name].write_text(
            f"base: {base}\noverrides: {options + ['scaling.num_workers=1']}\n"
            "metric: val_loss\nmode: min\nspace:\n  methods.adamw.lr: {grid: [0.001, 0.01]}\n"
        )
    assert [concurrency(*space.load(str(spaces[n]))) for n in ("tensors", "raydata")] == [3, 1]


def test_a_ray_data_task_reports_val_loss_only_with_a_val_dataset(tmp_path):
    # its data are read by the workers only: the driver cannot evaluate it to list the keys
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["x" * 20] * 8}), path)
    with_val, without = (
        config.load(
            path=str(REPO / "examples" / "my_ray_data_task.yaml"), overrides=[f"task.options={o}"]
        ).to_dict()
        for o in (f"{{path: {path}, val_path: {path}}}", f"{{path: {path}}}")
    )
    assert reported.eval_metrics(with_val) == ({"val_loss"}, None)
    assert reported.eval_metrics(without) == (set(), None)
    reported.check_metric("s.yaml", "val_loss", with_val)
    with pytest.raises(ConfigError, match="'val_loss' is not reported by trials of this space"):
        reported.check_metric("s.yaml", "val_loss", without)
