"""docs/adding-a-method.md, followed literally: its code blocks become a registered method
that validates, passes preflight, trains through the engine and resumes exactly."""

from __future__ import annotations

import pathlib
import re
import sys
import types

import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import catalog, config
from raytrain_eff.engine import launch, preflight
from raytrain_eff.typed import ConfigError

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "adding-a-method.md"
SHORT = [
    "scaling.num_workers=0",
    "run.steps=10",
    "run.report_interval=1",
    "run.checkpoint_interval=1",
    "run.eval_interval=0",
    "monitor.enabled=false",
    "monitor.progress=false",
]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def lookahead(monkeypatch, tmp_path) -> pathlib.Path:
    """The page's modules under the names it gives them, its entry in the registry, and its
    preset as a file; returns the preset."""
    hparams, method, entry = blocks("python")
    for name, source in (
        ("raytrain_eff.hparams.lookahead", hparams),
        ("raytrain_eff.methods.lookahead", method),
    ):
        module = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, module)  # before exec: dataclasses look it up
        exec(compile(source, f"{DOC.name} ({name})", "exec"), module.__dict__)
    added = eval("{" + entry + "}", {"Entry": catalog.Entry, "_H": "raytrain_eff.hparams"})
    monkeypatch.setattr(catalog, "METHODS", {**catalog.METHODS, **added})
    (preset,) = blocks("yaml")
    path = tmp_path / "digits-lookahead.yaml"
    path.write_text(preset)
    return path


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def test_the_walkthrough_method_trains_and_resumes_exactly(lookahead, tmp_path):
    overrides = [*SHORT, f"run.storage_path={tmp_path}"]
    cfg = config.load(path=str(lookahead), overrides=[*overrides, "run.name=a"])
    assert list(cfg.methods) == ["adamw", "lookahead"]
    preflight.check(cfg)
    straight = _table(launch.fit(cfg).run_dir)
    pulled = straight.dropna(subset=["lookahead_distance"])
    assert pulled["step"].tolist() == [4, 9]  # every k = 5 steps
    assert (pulled["lookahead_distance"] > 0).all()

    paused = launch.fit(
        config.load(path=str(lookahead), overrides=[*overrides, "run.name=b", "run.stop_after=7"])
    )
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed, resume=True)  # the slow weights come back too
    torch.testing.assert_close(
        torch.tensor(_table(paused.run_dir)["loss"].tolist()),
        torch.tensor(straight["loss"].tolist()),
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_walkthrough_checks_fail_before_launch(lookahead):
    with pytest.raises(ConfigError, match="methods.lookahead.alpha"):
        config.load(path=str(lookahead), overrides=["methods.lookahead.alpha=2"])
    cfg = config.load(path=str(lookahead), overrides=["run.steps=3"])
    with pytest.raises(ConfigError, match="methods.lookahead.k=5 is more than run.steps=3"):
        preflight.check(cfg)
