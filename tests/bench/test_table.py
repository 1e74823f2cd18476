"""bench/table.py renders one README row per result: 3 significant figures, "not reached" for
null, the protocol's verdict shortened, the worst seed of the main claim, and a dirty result's
files checked against HEAD."""
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


def claim(worst, kind="ratio"):
    return {"kind": kind, "seeds": [10, 11, 12, 13, 14], "per_seed": [worst, 2.0, 2.0, 2.0, 2.0],
            "worst": worst, "bootstrap_lower_90": 1.5, "wins": True, "n": 5}


def tuned(arm, inside):
    return {"arm": arm, "grid": [1e-3, 1e-2, 1e-1], "winner": 1e-2 if inside else 1e-1,
            "winner_index": 1 if inside else 2, "inside": inside, "widenings": 0 if inside else 4,
            "budget": 3}


def record(**fields) -> dict:
    base = {"bench": "demo", "machine": {"nproc": 2, "cuda": None, "load_average": [1.04, 1, 1]},
            "commit": SHA, "provenance": {"commit": SHA, "dirty": False, "dirty_files": {}},
            "headline": "FOSI reaches the target in 0.8x AdamW's steps.",
            "target": {"steps_ratio": ">= 1", "val_loss": 0.0663679838180542},
            "met_claimed": True, "met": True, "protocol_violations": [],
            "protocol": {"kind": "comparison", "eval_seeds": [10, 11, 12, 13, 14],
                         "tuning": {"adamw": tuned("adamw", True), "fosi": tuned("fosi", True)},
                         "claims": {"steps": claim(1.23456), "time": claim(0.5)}},
            "ratios": {}, "notes": ""}
    return {**base, **fields}


def no_git(*args):
    raise AssertionError(f"a clean record needs no git lookup, got {args}")


def test_clean_record():
    assert table.row(record(), no_git) == (
        "| demo | FOSI reaches the target in 0.8x AdamW's steps. | steps_ratio >= 1; val_loss "
        "0.0664 | yes | ok; all 2 tuned winners inside their grids | 5; worst-seed ratio 1.23 "
        "| 2 cores, load 1.04 | 01234567 |")


def test_violations_and_a_null_read_as_not_reached():
    rec = record(met=False, main_claim="time",
                 target={"val_loss": None, "steps": math.inf},
                 protocol_violations=[
                     "sgd: tuned winner 0.1 on the edge of [0.001, 0.01, 0.1] after 4 widenings",
                     "momentum: tuned winner 0.001 on the edge of [0.001, 0.01, 0.1] after 4 "
                     "widenings",
                     "3 evaluation seeds; claims need >= 5",
                     "claim 'time' rests on 3 paired seeds"])
    rec["protocol"] = {**rec["protocol"], "eval_seeds": [10, 11, 12],
                       "tuning": {"sgd": tuned("sgd", False), "momentum": tuned("momentum", False),
                                  "adamw": tuned("adamw", True)},
                       "claims": {"steps": claim(1.2), "time": claim(None, "difference")}}
    cells = [c.strip() for c in table.row(rec, no_git).strip("|").split(" | ")]
    assert cells[2] == "val_loss not reached; steps not reached"
    assert cells[3] == "no (claimed yes)"
    assert cells[4] == ("4 violations: winner on grid edge (sgd, momentum); 3 eval seeds; "
                        "claim 'time' on 3 seeds; 1/3 tuned winners inside their grids")
    assert cells[5] == "3; worst-seed difference not reached"      # the named main claim


def git_repo(tmp_path: pathlib.Path) -> tuple[table.Git, str, str]:
    def run(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, capture_output=True, text=True, check=True).stdout
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
    git.run = run               # the test drives the repo further through the same git
    git.measured = measured
    return git, run("rev-parse", "HEAD").strip(), run("rev-parse", "HEAD:bench/new.py").strip()


def test_dirty_record_verified_at_a_later_head(tmp_path):
    git, head, blob = git_repo(tmp_path)
    rec = record(commit=git.measured + "+dirty", provenance={
        "commit": git.measured, "dirty": True,
        "dirty_files": {"bench/new.py": blob, "bench/gone.py": "deleted"}})
    sha8 = git.measured[:8]
    assert table.row(rec, git).endswith(f"| {sha8}+dirty, verified at {head[:8]} |")
    # code that was clean when measured and changed since: HEAD is no longer what ran
    (tmp_path / "bench" / "base.py").write_text("print('changed after the run')\n")
    git.run("commit", "-q", "-am", "a later change")
    assert table.row(rec, git).endswith(
        f"| {sha8}+dirty (unverified: 1 other files changed since) |")


def test_dirty_record_unverified(tmp_path):
    git, _, blob = git_repo(tmp_path)
    for files in ({"bench/new.py": "f" * 40},                    # another version of the file
                  {"bench/new.py": blob, "bench/other.py": blob},  # a file HEAD lacks
                  {"bench/new.py": "deleted"}):                   # deleted, yet HEAD has it
        rec = record(commit=SHA + "+dirty",
                     provenance={"commit": SHA, "dirty": True, "dirty_files": files})
        assert table.row(rec, git).endswith("| 01234567+dirty (unverified) |"), files


def test_old_record_without_protocol():
    rec = {"bench": "old", "machine": {"nproc": 2}, "commit": SHA + "+dirty", "met": True,
           "target": {"ratio": ">= 0.95"}, "ratios": {"steps_per_s": {"median": 0.97525}},
           "notes": "long notes"}
    assert table.row(rec, no_git) == (
        "| old | pre-protocol record, not re-run under the protocol; steps_per_s 0.975 | ratio "
        ">= 0.95 | yes | not recorded | not recorded | 2 cores | 01234567+dirty (unverified) |")


@pytest.mark.parametrize("value,text", [
    (0.97526, "0.975"), (6009.78, "6010"), (150, "150"), (0.05, "0.05"), (1e9, "1e9"),
    (1.3488e-9, "1.35e-9"), (0.0, "0"), (-2.5e-4, "-2.5e-4"), (math.inf, "not reached"),
    (math.nan, "not reached"), (None, "not reached"), (True, "yes"),
    ({"median": 2.0417, "values": [1, 2]}, "2.04")])
def test_fmt_three_significant_figures(value, text):
    assert table._fmt(value) == text


def test_cells_escape_pipes_and_newlines():
    assert table.row(record(headline="a | b\nc"), no_git).startswith("| demo | a \\| b c |")
