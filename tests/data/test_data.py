"""Bundled corpora, bundled images and user Parquet data, including every bad-data message."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raytrain_eff import config
from raytrain_eff.data import corpus, parquet, tabular
from raytrain_eff.data.parquet import DataError


def test_kjv_corpus_is_the_real_bible():
    text = corpus.load_text("kjv")
    assert text.startswith("In the beginning God created the heaven and the earth.")
    assert 4_000_000 < len(text) < 4_500_000
    vocab = corpus.CharVocab(text)
    assert vocab.decode(vocab.encode("Jesus wept.")) == "Jesus wept."


def test_char_vocab_encodes_every_character_to_its_index():
    text = "Ünïcode ✓ and plain\ttext\n" * 3
    vocab = corpus.CharVocab(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.uint8 and ids.tolist() == [vocab.index[c] for c in text]
    wide = corpus.CharVocab("".join(chr(0x4E00 + i) for i in range(300)))  # > 256: int32 ids
    assert wide.encode(chr(0x4E00 + 299)).tolist() == [299] and len(wide) == 300
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("Z")


def test_pydoc_fallback_needs_no_install():
    assert len(corpus.load_text("pydoc")) > 100_000


def test_digits_are_real_images():
    X, y, shape = tabular.load_features("digits")
    assert X.shape == (1797, 64) and shape == (1, 8, 8)
    assert set(np.unique(y)) == set(range(10)) and X.min() >= 0 and X.max() <= 1


def test_user_parquet_text_and_features(tmp_path):
    pq.write_table(pa.table({"text": ["abc", "de"]}), tmp_path / "t.parquet")
    assert corpus.load_text(str(tmp_path / "t.parquet")) == "abc\nde"
    pq.write_table(
        pa.table({"a": [0.1, 0.2], "b": [1, 2], "label": [0, 1]}), tmp_path / "f.parquet"
    )
    cfg = config.load(
        preset="digits-adamw",
        overrides=[f"data.dataset={tmp_path / 'f.parquet'}", "data.val_fraction=0.5"],
    )
    rows = tabular.streamed_features(cfg.data, seed=0)
    X, y = rows.batch(0, 0, 1, 1)
    assert X.shape == (1, 2) and y.tolist() == [0] and rows.classes == 2
    assert [b[1].tolist() for b in rows.in_order("val", range(1), 4)] == [[1]]


@pytest.mark.parametrize(
    "table, columns, message",
    [
        (
            pa.table({"txt": ["a"]}),
            {"text": "string"},
            "missing column 'text'; columns present: txt",
        ),
        (
            pa.table({"text": [1]}),
            {"text": "string"},
            "column 'text' has type int64; expected string",
        ),
        (pa.table({"label": [0.5]}), {"label": "integer"}, "column 'label' has type double"),
    ],
)
def test_bad_columns_are_named(tmp_path, table, columns, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError) as err:
        parquet.require_columns(parquet.read_table(str(path)), str(path), columns)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unreadable_files_are_named(tmp_path):
    not_parquet = tmp_path / "notes.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(DataError, match=f"{not_parquet}: not a Parquet file"):
        parquet.read_table(str(not_parquet))
    with pytest.raises(DataError, match="no such file or directory"):
        parquet.read_table(str(tmp_path / "missing.parquet"))
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    with pytest.raises(DataError, match=f"{empty}: has no rows"):
        parquet.read_table(str(empty))
    with pytest.raises(DataError, match="not a Parquet file"):
        parquet.read_schema(str(not_parquet))
