"""Provenance: the submitter's commit and dirty flag reach summary.json."""

import json
import pathlib
import subprocess

import pytest

from raytrain_eff import cli
from raytrain_eff.engine import launch, provenance

REPO = pathlib.Path(__file__).resolve().parents[2]


def _git(repo, *args):
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture()
def checkout(tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return repo


def test_git_reads_commit_and_dirty_flag(checkout, tmp_path):
    head = _git(checkout, "rev-parse", "HEAD")
    assert provenance.from_git(checkout) == {"commit": head, "dirty": False}
    (checkout / "output.log").write_text("untracked files are not code changes")
    assert provenance.from_git(checkout)["dirty"] is False
    (checkout / "code.py").write_text("x = 2\n")
    assert provenance.from_git(checkout) == {"commit": head, "dirty": True}
    outside = tmp_path / "uploaded"  # a job's working dir: the files without .git
    outside.mkdir()
    assert provenance.from_git(outside) is None and provenance.env_vars(outside) == {}


def test_the_submitters_variables_win_and_are_not_overwritten(checkout):
    env = {}
    provenance.export_from_checkout(checkout, env)
    assert env == {
        provenance.ENV_COMMIT: _git(checkout, "rev-parse", "HEAD"),
        provenance.ENV_DIRTY: "0",
    }
    handed = {provenance.ENV_COMMIT: "abc123", provenance.ENV_DIRTY: "1"}
    provenance.export_from_checkout(checkout, handed)
    assert handed[provenance.ENV_COMMIT] == "abc123"
    assert provenance.current(handed) == {
        "commit": "abc123",
        "dirty": True,
        "commit_source": "submitter",
    }


def test_cli_prints_a_runtime_env_that_extends_the_given_one(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli.main(["provenance", "--runtime-env", "clusters/runtime_env.yaml"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["env_vars"][provenance.ENV_COMMIT] == _git(REPO, "rev-parse", "HEAD")
    assert env["env_vars"][provenance.ENV_DIRTY] in ("0", "1")
    assert env["env_vars"]["OMP_NUM_THREADS"] == "1" and "pip" in env


def test_summary_records_the_handed_provenance(run_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv(provenance.ENV_COMMIT, "f" * 40)
    monkeypatch.setenv(provenance.ENV_DIRTY, "1")
    monkeypatch.chdir(tmp_path)  # no .git here: only the variables can say
    result = launch.fit(
        run_cfg("digits-sgd", "scaling.num_workers=0", "run.steps=2", "run.eval_interval=0")
    )
    summary = json.loads((pathlib.Path(result.run_dir) / "summary.json").read_text())
    assert (summary["commit"], summary["dirty"], summary["commit_source"]) == (
        "f" * 40,
        True,
        "submitter",
    )
