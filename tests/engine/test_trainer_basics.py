"""LR schedules, gradient accumulation, clipping, bf16 autocast and seeds, through the engine."""

import pathlib

import pyarrow.parquet as pq
import pytest

from raytrain_eff.engine import launch
from raytrain_eff.engine.accounting import lr_factor

LOCAL = [
    "scaling.num_workers=0",
    "run.report_interval=5",
    "run.checkpoint_interval=10",
    "run.eval_interval=0",
    "monitor.progress=false",
]


def _table(result):
    return pq.read_table(pathlib.Path(result.run_dir) / "metrics.parquet").to_pandas()


def test_lr_schedule_shapes():
    assert [lr_factor(s, 10, 4, "constant", 0.1) for s in (0, 1, 3, 4, 9)] == [0.25, 0.5, 1, 1, 1]
    assert lr_factor(4, 14, 4, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(9, 14, 4, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(14, 14, 4, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 14, 4, "linear", 0.0) == pytest.approx(0.5)


def test_engine_applies_warmup_and_decay(run_cfg):
    result = launch.fit(
        run_cfg(
            "digits-sgd",
            *LOCAL,
            "run.steps=10",
            "train.warmup_steps=2",
            "train.decay=linear",
            "train.min_lr_ratio=0.0",
            "methods.sgd.lr=0.1",
        )
    )
    lrs = _table(result).lr.tolist()
    assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.1 * (1 - 7 / 8))


@pytest.fixture
def drawn_rows(monkeypatch):
    """The row indices of every training micro-batch the classify task draws, in order (the
    engine's local mode runs in this process)."""
    from raytrain_eff.tasks import classify

    drawn, real = [], classify.epoch_batch_indices

    def spy(*args, **kw):
        rows = real(*args, **kw)
        drawn.append(rows.tolist())
        return rows

    monkeypatch.setattr(classify, "epoch_batch_indices", spy)
    return drawn


def test_gradient_accumulation_counts_every_micro_batch(run_cfg, drawn_rows):
    result = launch.fit(
        run_cfg("digits-adamw", *LOCAL, "run.steps=4", "train.grad_accum=3", "data.batch_size=16")
    )
    table = _table(result)
    assert (table.samples == 48).all()
    # 4 steps x 3 micro-batches of 16 rows, all within one epoch: 192 distinct rows (the first
    # draw is the FLOP count's, a repeat of step 0's first micro-batch)
    assert drawn_rows[0] == drawn_rows[1] and len(drawn_rows) == 1 + 12
    rows = [r for batch in drawn_rows[1:] for r in batch]
    assert len(set(rows)) == len(rows) == 4 * 3 * 16
    drawn_rows.clear()
    assert table.dense_flops.iloc[0] == pytest.approx(
        3
        * _table(
            launch.fit(run_cfg("digits-adamw", *LOCAL, "run.steps=4", "data.batch_size=16"))
        ).dense_flops.iloc[0]
    )


def test_resume_with_grad_accum_continues_the_data_order(run_cfg, drawn_rows):
    from raytrain_eff import config

    common = [
        *LOCAL,
        "run.steps=4",
        "train.grad_accum=2",
        "data.batch_size=16",
        "run.report_interval=1",
        "run.checkpoint_interval=2",
    ]
    launch.fit(run_cfg("digits-adamw", *common))
    straight = drawn_rows[1:]  # [0]: the FLOP count's draw
    drawn_rows.clear()
    paused = launch.fit(run_cfg("digits-adamw", *common, "run.stop_after=2"))
    first = drawn_rows[1:]
    drawn_rows.clear()
    launch.fit(
        config.apply_resume_overrides(
            launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
        ),
        resume=True,
    )
    assert first + drawn_rows[1:] == straight and len(straight) == 4 * 2


def test_seeds_reproduce_and_differ(run_cfg):
    runs = [
        _table(launch.fit(run_cfg("digits-adamw", *LOCAL, "run.steps=6", f"run.seed={s}")))
        for s in (1, 1, 2)
    ]
    assert runs[0].loss.tolist() == runs[1].loss.tolist()
    assert runs[0].loss.tolist() != runs[2].loss.tolist()


def test_bf16_autocast_and_clipping_train(run_cfg):
    table = _table(
        launch.fit(
            run_cfg(
                "digits-adamw",
                *LOCAL,
                "run.steps=20",
                "train.precision=bf16",
                "train.grad_clip=0.5",
            )
        )
    )
    assert table.loss.notna().all()
    assert table.loss.iloc[-3:].mean() < table.loss.iloc[:3].mean()
