"""Typed config building: numbers written as strings are read consistently."""

import pytest

from raytrain_eff import config
from raytrain_eff.typed import ConfigError, coerce


@pytest.mark.parametrize(
    "text, value", [("0.001", 1e-3), ("1e-3", 1e-3), ("3", 3.0), (" -2.5E+2 ", -250.0), (".5", 0.5)]
)
def test_numbers_written_as_strings_are_floats(text, value):
    assert coerce(float, text, "methods.adamw.lr") == value


def test_quoted_lr_in_a_file_and_an_override_agree(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "task: {name: classify}\ndata: {dataset: digits}\n"
        'methods: {adamw: {lr: "0.001"}}\nrun: {steps: "12"}\n'
    )
    cfg = config.load(path=str(path))
    assert cfg.methods["adamw"].lr == 1e-3 and cfg.run.steps == 12
    cfg = config.load(preset="digits-adamw", overrides=['methods.adamw.lr="1e-3"'])
    assert cfg.methods["adamw"].lr == 1e-3


@pytest.mark.parametrize(
    "tp, text", [(float, "fast"), (float, "nan"), (float, "1e"), (int, "2.5"), (int, "12a")]
)
def test_strings_that_are_not_numbers_are_refused(tp, text):
    with pytest.raises(ConfigError, match=f"x: expected {tp.__name__}, got '{text}'"):
        coerce(tp, text, "x")
