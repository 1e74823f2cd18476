"""Driver-side data checks: every bad-data case is named by file, column, row and value."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytrain_eff import config
from raytrain_eff.data import tabular, validate
from raytrain_eff.data.parquet import DataError


def _write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return str(path)


def _good(n=6, offset=0):
    return {
        "a": [0.1 * i for i in range(n)],
        "b": list(range(n)),
        "label": [(i + offset) % 3 for i in range(n)],
    }


def test_good_directory_passes_and_counts_rows(tmp_path):
    _write(tmp_path / "d" / "part-0.parquet", **_good())
    _write(tmp_path / "d" / "part-1.parquet", **_good(4, offset=1))
    (tmp_path / "d" / "_SUCCESS").write_text("")  # marker files are skipped, as Arrow does
    assert validate.check_tabular(str(tmp_path / "d"), "label", None, classes=True) == 10


def test_wrong_type_names_the_file_column_and_both_types(tmp_path):
    _write(tmp_path / "d" / "part-0.parquet", **_good())
    bad = _write(tmp_path / "d" / "part-1.parquet", **{**_good(), "b": ["x"] * 6})
    with pytest.raises(DataError) as err:
        validate.check_tabular(str(tmp_path / "d"), "label", None, classes=True)
    assert str(err.value) == f"{bad}: column 'b' has type string; expected numeric"


@pytest.mark.parametrize(
    "value, shown",
    [
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (math.nan, "nan"),
        (None, "null"),
        (1e300, "1e+300 (beyond float32's range)"),
    ],
)
def test_non_finite_features_are_named_with_column_and_row(tmp_path, value, shown):
    a = [0.5] * 8
    a[5] = value
    path = _write(tmp_path / "f.parquet", a=pa.array(a, pa.float64()), label=[0, 1] * 4)
    with pytest.raises(DataError) as err:
        validate.check_tabular(path, "label", None, classes=True)
    assert str(err.value) == (
        f"{path}: row 5: feature column 'a' is {shown}; features must be finite numbers"
    )


def test_rows_are_counted_across_record_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "SCAN_BATCH_ROWS", 4)
    a = [0.5] * 10
    a[9] = math.inf
    path = _write(tmp_path / "f.parquet", a=a, label=[0, 1] * 5)
    with pytest.raises(DataError, match="row 9: feature column 'a' is inf"):
        validate.check_tabular(path, "label", None, classes=True)


@pytest.mark.parametrize("stray", [1000, 10**12])
def test_a_label_beyond_the_classes_is_named_not_a_wider_head(tmp_path, stray):
    path = _write(tmp_path / "f.parquet", a=[0.0] * 7, label=[0, 1, 2, 0, stray, 1, 2])
    with pytest.raises(DataError) as err:  # named, never sized by the label's value
        validate.check_tabular(path, "label", None, classes=True)
    assert str(err.value) == (
        f"{path}: row 4: column 'label' has label {stray}, out of range: labels must be class "
        f"indices 0..K-1 with every class present; the labels below it cover 0..2 (3 classes) "
        f"and classes 3..{stray - 1} never occur"
    )


def test_one_based_labels_get_a_hint(tmp_path):
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=[1, 2, 3])
    with pytest.raises(
        DataError,
        match=r"row 0: .* label 1, out of range: .* cover nothing "
        r"\(0 classes\) and class 0 never occur \(1-based",
    ):
        validate.check_tabular(path, "label", None, classes=True)


def test_erm_labels_are_any_finite_numbers(tmp_path):
    for label in ([5, 17, 400], [-1, 1, -1], [0.5, -2.25, 1e3]):
        path = _write(tmp_path / "f.parquet", a=[0.0, 1e300, 2.0], label=label)
        assert validate.check_tabular(path, "label", None, classes=False) == 3
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=[0.5, math.nan, 1.0])
    with pytest.raises(DataError) as err:
        validate.check_tabular(path, "label", None, classes=False)
    assert str(err.value) == (
        f"{path}: row 1: label column 'label' is nan; labels must be finite numbers"
    )
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=pa.array([1, None, 0], pa.int8()))
    with pytest.raises(DataError, match="row 1: column 'label' is null .* needs a label$"):
        validate.check_tabular(path, "label", None, classes=False)


def test_null_and_negative_labels_are_told_apart(tmp_path):
    nulls = _write(tmp_path / "n.parquet", a=[0.0] * 3, label=pa.array([0, None, 1], pa.int64()))
    with pytest.raises(DataError) as err:
        validate.check_tabular(nulls, "label", None, classes=True)
    assert str(err.value) == (
        f"{nulls}: row 1: column 'label' is null (a missing label); every "
        f"row needs a class label 0..K-1"
    )
    negative = _write(tmp_path / "m.parquet", a=[0.0] * 3, label=[0, 1, -1])
    with pytest.raises(DataError) as err:
        validate.check_tabular(negative, "label", None, classes=True)
    assert str(err.value) == (
        f"{negative}: row 2: column 'label' has the negative label -1; "
        f"labels are class indices 0..K-1"
    )


def test_empty_directory_is_named_as_such(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError,
        match=r"empty: empty directory: no Parquet files in it "
        r"\(found nothing\)",
    ):
        validate.check_tabular(str(tmp_path / "empty"), "label", None, classes=True)
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match=r"empty directory: .*\(found only _SUCCESS\)"):
        validate.check_footers(str(tmp_path / "empty"), {"text": "string"})
    with pytest.raises(DataError, match="empty directory"):
        _stream(str(tmp_path / "empty"))


def test_text_column_type_is_checked_per_file(tmp_path):
    _write(tmp_path / "d" / "a.parquet", text=["abc"])
    bad = _write(tmp_path / "d" / "b.parquet", text=[1])
    with pytest.raises(DataError) as err:
        validate.check_footers(str(tmp_path / "d"), {"text": "string"})
    assert str(err.value) == f"{bad}: column 'text' has type int64; expected string"


def _stream(path, **data):
    cfg = config.load(
        preset="digits-adamw",
        overrides=[
            f"data.dataset={path}",
            "task.model=mlp",
            "data.val_fraction=0.5",
            *(f"data.{k}={v}" for k, v in data.items()),
        ],
    )
    return tabular.streamed_features(cfg.data, seed=0)


def test_workers_name_the_row_group_and_row_of_a_bad_value(tmp_path):
    path = tmp_path / "n.parquet"
    pq.write_table(
        pa.table({"a": [0.0, 1.0, 2.0, math.inf], "label": [0, 1, 0, 1]}), path, row_group_size=2
    )
    rows = _stream(str(path), val_fraction=0.25)
    with pytest.raises(
        DataError,
        match=r"n.parquet: row group 1: row 1: feature column 'a' is "
        r"inf",
    ):
        list(rows.in_order("train", range(rows.num_train), 2))
    path = _write(tmp_path / "m.parquet", a=[0.0] * 4, label=pa.array([0, None, 1, 0], pa.int64()))
    with pytest.raises(DataError, match="row group 0: row 1: column 'label' is null"):
        _stream(path).batch(0, 0, 1, 2)


def test_class_checks_read_footers_and_a_sample_not_every_row(tmp_path, monkeypatch):
    # labels sorted by class, 40 rows in row groups of 10: the sample (15 rows) sees 0 and 1;
    # the statistics name 2 and 3 as each group's extremes, so every class is found
    path = tmp_path / "s.parquet"
    labels = [0] * 10 + [1] * 10 + [1, 2, 3] * 3 + [3] + [3] * 10
    pq.write_table(pa.table({"a": [0.5] * 40, "label": labels}), path, row_group_size=10)
    monkeypatch.setattr(validate, "SAMPLE_ROWS", 15)
    assert validate.check_classes(str(path), "label", None) == 4
    assert validate.class_count((str(path),), "label") == 4
    # a stray label is the maximum of its row group's statistics: named with its row
    stray = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"a": [0.5] * 40, "label": [0, 1, 2, 0] * 7 + [1, 1000] + [2] * 10}),
        stray,
        row_group_size=10,
    )
    with pytest.raises(
        DataError,
        match=r"t.parquet: row 29: column 'label' has label 1000, out "
        r"of range",
    ):
        validate.check_classes(str(stray), "label", None)
    # a class between others that no row has: told as absent
    gap = _write(tmp_path / "g.parquet", a=[0.5] * 4, label=[0, 2, 0, 2])
    with pytest.raises(DataError, match="has label 2, out of range.*class 1 never occur"):
        validate.check_classes(gap, "label", None)
    # a negative label past the sample: its group's statistics send it to be read
    neg = tmp_path / "n.parquet"
    pq.write_table(
        pa.table({"a": [0.5] * 40, "label": [0, 1] * 15 + [-4] + [0] * 9}), neg, row_group_size=10
    )
    with pytest.raises(DataError, match="row 30: column 'label' has the negative label -4"):
        validate.check_classes(str(neg), "label", None)


def test_a_separate_held_out_set_may_lack_classes_but_not_exceed_them(tmp_path):
    train = _write(tmp_path / "train.parquet", a=[0.5] * 6, label=[0, 1, 2, 0, 1, 2])
    short = _write(tmp_path / "short.parquet", a=[0.5] * 2, label=[0, 0])
    assert validate.check_classes(train, "label", None) == 3
    validate.check_held_out_classes(short, "label", None, 3)  # class 1 and 2 absent: fine
    wide = _write(tmp_path / "wide.parquet", a=[0.5] * 3, label=[0, 7, 1])
    with pytest.raises(
        DataError,
        match=r"wide.parquet: row 1: column 'label' has label 7, beyond "
        r"the 3 classes of the training data",
    ):
        validate.check_held_out_classes(wide, "label", None, 3)
    rows = _stream(train, val_dataset=wide)  # a worker, without the driver's checks
    assert rows.classes == 3 and rows.num_train == 6
    with pytest.raises(DataError, match=r"wide.parquet: row group 0: row 1: .* label 7, beyond"):
        list(rows.in_order("val", range(rows.num_val), 4))
    from raytrain_eff.tasks.classify import ClassifyTask

    cfg = config.load(
        preset="digits-adamw",
        overrides=[f"data.dataset={train}", f"data.val_dataset={wide}", "task.model=mlp"],
    )
    with pytest.raises(DataError, match="label 7, beyond the 3 classes"):
        ClassifyTask.preflight(cfg)  # the driver, before any worker starts
