"""Driver-side checks that fail before any worker starts."""

import pytest

from raytrain_eff import config
from raytrain_eff.engine import preflight
from raytrain_eff.typed import ConfigError


def test_flex_attention_without_a_gpu_is_refused_before_launch():
    cfg = config.load(preset="gpt-mst", overrides=["methods.mst.attention_kernel=flex"])
    with pytest.raises(
        ConfigError, match="methods.mst.attention_kernel=flex needs scaling.use_gpu=true"
    ):
        preflight.check(cfg)


def test_cpu_kernels_pass():
    for kernel in ("masked", "tiles"):
        preflight.check(
            config.load(preset="gpt-mst", overrides=[f"methods.mst.attention_kernel={kernel}"])
        )


def _parquet(path, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return str(path)


def test_bad_labels_fail_on_the_driver_before_training(run_cfg, tmp_path):
    from raytrain_eff.data.parquet import DataError
    from raytrain_eff.engine import launch

    data = _parquet(tmp_path / "f.parquet", a=[0.1, 0.2, 0.3, 0.4], label=[0, 1000, 1, 2])
    cfg = run_cfg("digits-adamw", f"data.dataset={data}", "task.model=mlp")
    with pytest.raises(
        DataError,
        match=r"f.parquet: row 1: column 'label' has label 1000, out "
        r"of range",
    ):
        preflight.check(cfg)
    # the same through the launcher, which runs the checks before any Ray or worker start
    with pytest.raises(DataError, match="label 1000"):
        launch.fit(cfg)


def test_wrong_type_and_empty_directory_fail_on_the_driver(tmp_path):
    from raytrain_eff.data.parquet import DataError

    bad = _parquet(tmp_path / "t.parquet", a=["x", "y"], label=[0, 1])
    cfg = config.load(preset="digits-adamw", overrides=[f"data.dataset={bad}"])
    with pytest.raises(DataError, match=r"t.parquet: column 'a' has type string; expected numeric"):
        preflight.check(cfg)
    (tmp_path / "empty").mkdir()
    for preset in ("digits-adamw", "erm-dasvrda", "default"):
        cfg = config.load(preset=preset, overrides=[f"data.dataset={tmp_path / 'empty'}"])
        with pytest.raises(DataError, match="empty directory"):
            preflight.check(cfg)


def test_bundled_sets_need_no_checks():
    for overrides in (
        ["data.dataset=breast_cancer", "task.loss=logistic"],
        ["data.dataset=diabetes", "task.loss=squared"],
    ):
        preflight.check(config.load(preset="erm-dasvrda", overrides=overrides))


def test_erm_data_is_checked_as_erm_reads_it(tmp_path):
    from raytrain_eff.data.parquet import DataError

    good = _parquet(tmp_path / "g.parquet", a=[0.1, 0.2, 0.3], label=[-1.0, 1.0, -1.0])
    preflight.check(config.load(preset="erm-dasvrda", overrides=[f"data.dataset={good}"]))
    bad = _parquet(tmp_path / "b.parquet", a=[0.1, float("inf"), 0.3], label=[-1, 1, -1])
    with pytest.raises(DataError, match="row 1: feature column 'a' is inf"):
        preflight.check(config.load(preset="erm-dasvrda", overrides=[f"data.dataset={bad}"]))


def test_a_text_dataset_without_its_column_is_named_from_the_task_declaration(tmp_path):
    from raytrain_eff.data.parquet import DataError
    from raytrain_eff.tasks.lm import LanguageModelTask

    _parquet(tmp_path / "a.parquet", body=["some text"])
    cfg = config.load(preset="default", overrides=[f"data.dataset={tmp_path}"])
    assert LanguageModelTask.required_columns(cfg.data) == {"text": "string"}
    with pytest.raises(DataError, match="text"):
        preflight.check(cfg)
