"""bench/table.py renders one README row per result: 3 significant figures, "not reached" for
null, the worst of ALL claims, a loaded run flagged, drafts and legacy records
named, and whether the measured code is the code at HEAD (checked in a real git repo)."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bench import table  # noqa: E402

pytestmark = pytest.mark.unit

SHA = "0123456789abcdef0123456789abcdef01234567"


def claim(value, met=True, kind="ratio", threshold=1.0, **more):
    return {
        "kind": kind,
        "arm": "fosi",
        "baseline": "adamw",
        "statistic": "worst",
        "threshold": threshold,
        "value": value,
        "worst": value,
        "met": met,
        "required": True,
        "group": "",
        "lower_is_better": True,
        "per_seed": [value, 2.0, 2.0, 2.0, 2.0],
        "n": 5,
        **more,
    }


def tuned(arm, inside):
    return {
        "arm": arm,
        "grid": [1e-3, 1e-2, 1e-1],
        "winner": 1e-2 if inside else 1e-1,
        "winner_index": 1 if inside else 2,
        "inside": inside,
        "widenings": 0 if inside else 4,
        "budget": 3,
    }


def record(**fields) -> dict:
    base = {
        "bench": "demo",
        "harness": 2,
        "status": "result",
        "machine": {"nproc": 2, "cuda": None, "load_average": [1.04, 1, 1]},
        "load": {"cores": 2, "start": [0.5, 1, 1], "end": [1.04, 1, 1], "overloaded": False},
        "commit": SHA,
        "provenance": {"commit": SHA, "dirty": False, "dirty_files": {}},
        "headline": "FOSI reaches the target in 0.8x AdamW's steps.",
        "met": True,
        "protocol_violations": [],
        "draft_files": [],
        "protocol": {
            "kind": "comparison",
            "eval_seeds": [10, 11, 12, 13, 14],
            "tuning": {"adamw": tuned("adamw", True), "fosi": tuned("fosi", True)},
            "claims": {"steps": claim(1.23456), "time": claim(1.5)},
        },
        "ratios": {},
        "notes": "",
    }
    return {**base, **fields}


def cells(rec: dict, git) -> list[str]:
    return [c.strip() for c in table.row(rec, git).strip("|").split(" | ")]


def git_repo(tmp_path: pathlib.Path):
    def run(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    run("init", "-q")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "base.py").write_text("print('committed when measured')\n")
    run("add", "bench/base.py")
    run("commit", "-q", "-m", "the commit the record names")
    measured = run("rev-parse", "HEAD").strip()
    (tmp_path / "bench" / "new.py").write_text("print('measured')\n")
    run("add", "bench/new.py")
    run("commit", "-q", "-m", "the measured code, committed later")
    git = table.repo_git(tmp_path)
    git.run = run  # the test drives the repo further through the same git
    git.measured = measured
    return git, run("rev-parse", "HEAD").strip(), run("rev-parse", "HEAD:bench/new.py").strip()


def at(git, commit: str | None = None, **fields) -> dict:
    """A clean record of ``commit`` (default: the repository's HEAD)."""
    commit = commit or git.run("rev-parse", "HEAD").strip()
    return record(
        commit=commit, provenance={"commit": commit, "dirty": False, "dirty_files": {}}, **fields
    )


def test_clean_record_at_head(tmp_path):
    git, head, _ = git_repo(tmp_path)
    assert table.row(at(git), git) == (
        "| demo | FOSI reaches the target in 0.8x AdamW's steps. | yes | 2/2 met; worst: steps: "
        "worst seed 1.23 (needs > 1) | ok; all 2 tuned winners inside their grids | 5 | "
        f"0.5 → 1.04 on 2 cores | yes ({head[:8]}) |"
    )


def test_the_worst_claim_is_shown_whichever_comes_first(tmp_path):
    git, _, _ = git_repo(tmp_path)
    claims = {
        "main": claim(3.0),
        "memory": claim(0.4, met=False, kind="bound", threshold=0.6, lower_is_better=False),
        "time": claim(0.8, met=False),
    }
    row = cells(at(git, met=False, protocol={**record()["protocol"], "claims": claims}), git)
    # both unmet claims trail the first; memory is further short: log(0.4 / 0.6) < log(0.8)
    assert row[2] == "no"
    assert row[3] == "1/3 met; worst: memory: worst seed 0.4 (needs > 0.6)"
    passing = {
        "a": claim(3.0),
        "b": claim(1.1),
        "c": claim(0.01, kind="difference", threshold=0.0, required=False),
    }
    row = cells(at(git, protocol={**record()["protocol"], "claims": passing}), git)
    assert row[3] == "3/3 met; worst: c (informational): worst seed 0.01 (needs > 0)"
    # a failed required claim outranks a failed informational one further from its threshold
    mixed = {"side": claim(0.1, met=False, required=False), "main": claim(0.9, met=False)}
    row = cells(at(git, protocol={**record()["protocol"], "claims": mixed}), git)
    assert row[3] == "0/2 met; worst: main: worst seed 0.9 (needs > 1)"


def test_a_never_reached_figure_is_the_worst(tmp_path):
    git, _, _ = git_repo(tmp_path)
    claims = {"a": claim(0.5, met=False), "b": claim(None, met=False)}
    row = cells(at(git, protocol={**record()["protocol"], "claims": claims}), git)
    assert row[3] == "0/2 met; worst: b: worst seed not reached (needs > 1)"


def test_a_loaded_run_is_flagged_with_the_others_share(tmp_path):
    git, _, _ = git_repo(tmp_path)
    loaded = {"cores": 2, "start": [1.0, 1, 1], "end": [6.6, 5.9, 9.2], "others_share": 0.4}
    assert cells(at(git, load={**loaded, "overloaded": True}), git)[6] == (
        "1 → 6.6 on 2 cores, others 40% — LOADED"
    )
    quiet = {**loaded, "others_share": 0.02, "overloaded": False}
    assert cells(at(git, load=quiet), git)[6] == "1 → 6.6 on 2 cores, others 2%"


def test_violations_are_shortened(tmp_path):
    git, _, _ = git_repo(tmp_path)
    rec = at(
        git,
        met=False,
        protocol_violations=[
            "sgd: tuned winner 0.1 on the edge of [0.001, 0.01, 0.1] after 4 widenings",
            "momentum: tuned winner 0.001 on the edge of [0.001, 0.01, 0.1] after 4 widenings",
            "3 evaluation seeds; claims need >= 5",
            "claim 'time': arms 'fosi' and 'adamw' use different stopping rules",
            "plain: neither tuned nor a recorded reason why not",
        ],
    )
    rec["protocol"] = {
        **rec["protocol"],
        "eval_seeds": [10, 11, 12],
        "tuning": {
            "sgd": tuned("sgd", False),
            "momentum": tuned("momentum", False),
            "adamw": tuned("adamw", True),
        },
    }
    assert cells(rec, git)[4] == (
        "5 violations: winner on grid edge (sgd, momentum); 3 eval seeds; 'fosi' and 'adamw' "
        "differ in stopping rules; plain untuned without a reason; 1/3 tuned winners inside "
        "their grids"
    )


def test_a_draft_is_not_met(tmp_path):
    git, head, blob = git_repo(tmp_path)
    rec = record(
        status="draft",
        met=None,
        draft_files=["bench/new.py"],
        commit=git.measured + "+dirty",
        provenance={"commit": git.measured, "dirty": True, "dirty_files": {"bench/new.py": blob}},
    )
    row = cells(rec, git)
    assert row[2] == "draft: 1 uncommitted file"
    assert row[7] == f"yes ({git.measured[:8]}+dirty)"  # its files were committed since


def test_code_changed_since_is_not_the_code_at_head(tmp_path):
    git, head, blob = git_repo(tmp_path)
    dirty = record(
        commit=git.measured + "+dirty",
        provenance={
            "commit": git.measured,
            "dirty": True,
            "dirty_files": {"bench/new.py": blob, "bench/gone.py": "deleted"},
        },
    )
    sha8 = git.measured[:8]
    assert cells(dirty, git)[7] == f"yes ({sha8}+dirty)"
    (tmp_path / "bench" / "base.py").write_text("print('changed after the run')\n")
    git.run("commit", "-q", "-am", "a later change")
    assert cells(dirty, git)[7] == f"no: {sha8}+dirty, 1 other files changed since"
    assert cells(at(git, head), git)[7] == f"no: {head[:8]}, 1 other files changed since"
    for files in (
        {"bench/new.py": "f" * 40},  # another version of the file
        {"bench/other.py": blob},  # a file HEAD lacks
        {"bench/new.py": "deleted"},
    ):  # deleted, yet HEAD has it
        rec = record(
            commit=git.measured + "+dirty",
            provenance={"commit": git.measured, "dirty": True, "dirty_files": files},
        )
        assert cells(rec, git)[7] == f"no: {sha8}+dirty, 1 measured files differ at HEAD"
    assert cells(record(), git)[7] == "no: 01234567 is not an ancestor of HEAD"


def test_a_change_outside_a_results_measured_paths_leaves_it_at_head(tmp_path):
    git, head, _ = git_repo(tmp_path)
    scoped = at(git, head)
    scoped["provenance"] = {**scoped["provenance"], "paths": ["raytrain_eff", "bench/new.py"]}
    (tmp_path / "bench" / "base.py").write_text("print('another benchmark changed')\n")
    git.run("commit", "-q", "-am", "another benchmark's change")
    assert cells(scoped, git)[7] == f"yes ({head[:8]})"
    assert cells(at(git, head), git)[7] == f"no: {head[:8]}, 1 other files changed since"


def test_legacy_record_is_not_verified_at_head():
    rec = record(
        met=True,
        met_claimed=True,
        load=None,
        machine={"nproc": 2, "load_average": [6.6, 5.9, 9.2]},
        commit=SHA + "+dirty",
        provenance={"commit": SHA, "dirty": True, "dirty_files": {"bench/x.py": "f" * 40}},
    )
    del rec["harness"], rec["status"]
    rec["protocol"]["claims"] = {
        "first": {"kind": "ratio", "worst": 2.5, "bootstrap_lower_90": 3, "wins": True},
        "second": {
            "kind": "difference",
            "worst": -0.05,
            "bootstrap_lower_90": -0.02,
            "wins": False,
        },
    }
    row = cells(rec, lambda *a: pytest.fail(f"a legacy record needs no git, got {a}"))
    assert row[2] == "legacy (yes by the script's own verdict)"
    assert row[3] == "1/2 met; worst: second: 90% lower bound -0.02 (needs > 0)"
    assert row[6] == "6.6 at the end on 2 cores — LOADED"
    assert row[7] == "legacy record (01234567+dirty): not verified at HEAD"


def test_pre_protocol_record():
    rec = {
        "bench": "old",
        "machine": {"nproc": 2},
        "commit": SHA + "+dirty",
        "met": True,
        "target": {"ratio": ">= 0.95"},
        "ratios": {"steps_per_s": {"median": 0.97525}},
        "notes": "long notes",
    }
    assert table.row(rec, lambda *a: None) == (
        "| old | pre-protocol record, not re-run under the protocol; steps_per_s 0.975 | "
        "legacy (yes by the script's own verdict) | no claim | not recorded | not recorded | "
        "not recorded (2 cores) | legacy record (01234567+dirty): not verified at HEAD |"
    )


@pytest.mark.parametrize(
    "value,text",
    [
        (0.97526, "0.975"),
        (6009.78, "6010"),
        (150, "150"),
        (0.05, "0.05"),
        (1e9, "1e9"),
        (1.3488e-9, "1.35e-9"),
        (0.0, "0"),
        (-2.5e-4, "-2.5e-4"),
        (math.inf, "not reached"),
        (math.nan, "not reached"),
        (None, "not reached"),
        (True, "yes"),
        ({"median": 2.0417, "values": [1, 2]}, "2.04"),
    ],
)
def test_fmt_three_significant_figures(value, text):
    assert table._fmt(value) == text


def test_cells_escape_pipes_and_newlines(tmp_path):
    git, _, _ = git_repo(tmp_path)
    assert table.row(at(git, headline="a | b\nc"), git).startswith("| demo | a \\| b c |")


def test_the_committed_results_render_as_legacy():
    """Every JSON in bench/results/ renders; those from the first harness read as legacy."""
    import json

    for path in sorted((table.HERE / "results").glob("*.json")):
        rec = json.loads(path.read_text())
        row = cells(rec, table.repo_git(table.ROOT))
        if table.legacy(rec):
            assert row[2].startswith("legacy") and "not verified at HEAD" in row[7], path
