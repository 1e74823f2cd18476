"""Driver-side data checks: every bad-data case is named by file, column, row and value."""
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytrain_eff.data import tabular, validate
from raytrain_eff.data.parquet import DataError


def _write(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return str(path)


def _good(n=6, offset=0):
    return {"a": [0.1 * i for i in range(n)], "b": list(range(n)),
            "label": [(i + offset) % 3 for i in range(n)]}


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


@pytest.mark.parametrize("value, shown", [
    (math.inf, "inf"), (-math.inf, "-inf"), (math.nan, "nan"), (None, "null"),
    (1e300, "1e+300 (beyond float32's range)"),
])
def test_non_finite_features_are_named_with_column_and_row(tmp_path, value, shown):
    a = [0.5] * 8
    a[5] = value
    path = _write(tmp_path / "f.parquet", a=pa.array(a, pa.float64()), label=[0, 1] * 4)
    with pytest.raises(DataError) as err:
        validate.check_tabular(path, "label", None, classes=True)
    assert str(err.value) == (f"{path}: row 5: feature column 'a' is {shown}; features must be "
                              f"finite numbers")


def test_rows_are_counted_across_record_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "SCAN_BATCH_ROWS", 4)
    a = [0.5] * 10
    a[9] = math.inf
    path = _write(tmp_path / "f.parquet", a=a, label=[0, 1] * 5)
    with pytest.raises(DataError, match="row 9: feature column 'a' is inf"):
        validate.check_tabular(path, "label", None, classes=True)


@pytest.mark.parametrize("stray", [1000, 10 ** 12])
def test_a_label_beyond_the_classes_is_named_not_a_wider_head(tmp_path, stray):
    path = _write(tmp_path / "f.parquet", a=[0.0] * 7, label=[0, 1, 2, 0, stray, 1, 2])
    with pytest.raises(DataError) as err:  # named, never sized by the label's value
        validate.check_tabular(path, "label", None, classes=True)
    assert str(err.value) == (
        f"{path}: row 4: column 'label' has label {stray}, out of range: labels must be class "
        f"indices 0..K-1 with every class present; the labels below it cover 0..2 (3 classes) "
        f"and classes 3..{stray - 1} never occur")


def test_one_based_labels_get_a_hint(tmp_path):
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=[1, 2, 3])
    with pytest.raises(DataError, match=r"row 0: .* label 1, out of range: .* cover nothing "
                                        r"\(0 classes\) and class 0 never occur \(1-based"):
        validate.check_tabular(path, "label", None, classes=True)


def test_erm_labels_are_any_finite_numbers(tmp_path):
    for label in ([5, 17, 400], [-1, 1, -1], [0.5, -2.25, 1e3]):
        path = _write(tmp_path / "f.parquet", a=[0.0, 1e300, 2.0], label=label)
        assert validate.check_tabular(path, "label", None, classes=False) == 3
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=[0.5, math.nan, 1.0])
    with pytest.raises(DataError) as err:
        validate.check_tabular(path, "label", None, classes=False)
    assert str(err.value) == (f"{path}: row 1: label column 'label' is nan; labels must be "
                              f"finite numbers")
    path = _write(tmp_path / "f.parquet", a=[0.0] * 3, label=pa.array([1, None, 0], pa.int8()))
    with pytest.raises(DataError, match="row 1: column 'label' is null .* needs a label$"):
        validate.check_tabular(path, "label", None, classes=False)


def test_null_and_negative_labels_are_told_apart(tmp_path):
    nulls = _write(tmp_path / "n.parquet", a=[0.0] * 3, label=pa.array([0, None, 1], pa.int64()))
    with pytest.raises(DataError) as err:
        validate.check_tabular(nulls, "label", None, classes=True)
    assert str(err.value) == (f"{nulls}: row 1: column 'label' is null (a missing label); every "
                              f"row needs a class label 0..K-1")
    negative = _write(tmp_path / "m.parquet", a=[0.0] * 3, label=[0, 1, -1])
    with pytest.raises(DataError) as err:
        validate.check_tabular(negative, "label", None, classes=True)
    assert str(err.value) == (f"{negative}: row 2: column 'label' has the negative label -1; "
                              f"labels are class indices 0..K-1")


def test_empty_directory_is_named_as_such(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: empty directory: no Parquet files in it "
                                        r"\(found nothing\)"):
        validate.check_tabular(str(tmp_path / "empty"), "label", None, classes=True)
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataError, match=r"empty directory: .*\(found only _SUCCESS\)"):
        validate.check_footers(str(tmp_path / "empty"), {"text": "string"})
    with pytest.raises(DataError, match="empty directory"):
        tabular.load_features(str(tmp_path / "empty"))


def test_text_column_type_is_checked_per_file(tmp_path):
    _write(tmp_path / "d" / "a.parquet", text=["abc"])
    bad = _write(tmp_path / "d" / "b.parquet", text=[1])
    with pytest.raises(DataError) as err:
        validate.check_footers(str(tmp_path / "d"), {"text": "string"})
    assert str(err.value) == f"{bad}: column 'text' has type int64; expected string"


def test_workers_loading_the_table_give_the_same_messages(tmp_path):
    path = _write(tmp_path / "n.parquet", a=[0.0, math.inf, 1.0], label=[0, 1, 0])
    with pytest.raises(DataError, match="row 1: feature column 'a' is inf"):
        tabular.load_features(path)
    path = _write(tmp_path / "m.parquet", a=[0.0] * 3, label=pa.array([0, None, 1], pa.int64()))
    with pytest.raises(DataError, match="row 1: column 'label' is null"):
        tabular.load_features(path)
