"""bench/harness.py: ``met`` is derived from each claim's per-seed data and the protocol; a dirty
tree writes a draft; tuning brackets its winner; claims are paired."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bench import harness  # noqa: E402

pytestmark = pytest.mark.unit


def quadratic(optimum: float):
    calls = []

    def score(v: float) -> float:
        calls.append(v)
        return (math.log(v) - math.log(optimum)) ** 2

    return score, calls


def test_tuning_widens_until_the_winner_is_inside():
    score, calls = quadratic(0.1)
    rec = harness.tune_bracketed("adamw", score, [1e-4, 1e-3, 1e-2])
    assert rec["inside"] and rec["winner"] == pytest.approx(0.1)
    assert rec["grid"][0] == pytest.approx(1e-4) and rec["grid"][-1] == pytest.approx(1.0)
    assert rec["widenings"] == 2 and rec["budget"] == 3 and rec["evaluations"] == len(calls) == 5
    assert 0 < rec["winner_index"] < len(rec["grid"]) - 1


def test_tuning_widens_downwards_and_treats_divergence_as_worst():
    rec = harness.tune_bracketed(
        "sgd", lambda v: math.nan if v > 0.5 else (v - 1e-3) ** 2, [1e-2, 1e-1, 1.0]
    )
    assert rec["inside"] and rec["winner"] == pytest.approx(1e-3)


def test_tuning_gives_up_on_the_edge_and_the_protocol_says_so():
    rec = harness.tune_bracketed("sgd", lambda v: -v, [1.0, 2.0, 4.0], max_widenings=2)
    assert not rec["inside"] and rec["widenings"] == 2 and rec["winner"] == 16.0
    found = _protocol(tuning={"sgd": rec, "m": _inside("m")}).violations()
    assert any("edge" in v and "sgd" in v for v in found), found


def test_tuple_scores_break_ties_on_the_second_figure():
    rec = harness.tune_bracketed("a", lambda v: (10, abs(v - 2.0)), [1.0, 2.0, 4.0])
    assert rec["winner"] == 2.0 and rec["scores"][1] == [10, 0.0]


def test_paired_ratio_needs_the_worst_seed_or_the_bootstrap_bound():
    base = {s: 2.0 for s in range(5)}
    claim = harness.paired(base, {s: 1.0 for s in range(5)})
    assert claim["wins"] and claim["worst"] == 2.0 and claim["geometric_mean"] == pytest.approx(2)
    mixed = harness.paired(base, {0: 1.0, 1: 4.0, 2: 4.0, 3: 4.0, 4: 4.0})
    assert not mixed["wins"] and mixed["worst"] == 0.5
    assert mixed["bootstrap_lower_90"] < 1


def test_paired_counts_a_target_never_reached_against_its_arm():
    claim = harness.paired({s: math.inf for s in range(5)}, {s: 3.0 for s in range(5)})
    assert claim["wins"] and claim["worst"] == math.inf
    lost = harness.paired({s: 3.0 for s in range(5)}, {s: math.inf for s in range(5)})
    assert not lost["wins"] and lost["worst"] == 0.0


def test_paired_difference_and_higher_is_better():
    acc_base = {s: 0.90 for s in range(5)}
    acc_method = {s: 0.92 + 0.001 * s for s in range(5)}
    claim = harness.paired(acc_base, acc_method, kind="difference", lower_is_better=False)
    assert claim["wins"] and claim["worst"] == pytest.approx(0.02)


def test_paired_refuses_different_seeds():
    with pytest.raises(ValueError, match="seeds differ"):
        harness.paired({0: 1.0, 1: 1.0}, {0: 1.0, 2: 1.0})


def _inside(arm: str) -> dict:
    return harness.tune_bracketed(arm, lambda v: (v - 2.0) ** 2, [1.0, 2.0, 4.0])


STOP = harness.StoppingRule(kind="target", metric="val_loss", target=0.1, cadence="every 10 steps")
TIMED = harness.TimedRegion(includes=("training steps",), excludes=("evaluation",))


def _claim(method: dict | None = None, **changes) -> harness.Claim:
    fields = dict(
        name="time",
        arm="fosi",
        baseline="adamw",
        metric="seconds to target",
        baseline_values={s: 2.0 for s in range(5)},
        arm_values=method or {s: 1.0 for s in range(5)},
    )
    return harness.Claim(**(fields | changes))


def _protocol(**changes) -> harness.Protocol:
    fields = dict(
        arms=harness.same_rules(["adamw", "fosi"], STOP, TIMED),
        tuning={"adamw": _inside("adamw"), "fosi": _inside("fosi")},
        tuning_seeds=[100],
        eval_seeds=[0, 1, 2, 3, 4],
        problems=[
            {"name": "digits-cnn", "standard": False},
            {"name": "breast-cancer-mlp", "standard": True},
        ],
        claims=[_claim()],
    )
    fields.update(changes)
    return harness.Protocol(**fields)


def test_a_complete_protocol_has_no_violations():
    assert _protocol().violations() == []


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"eval_seeds": [0, 1, 2]}, "3 evaluation seeds"),
        ({"tuning_seeds": [0]}, "also used for tuning"),
        ({"problems": [{"name": "digits-cnn", "standard": False}]}, "standard problem"),
        ({"claims": []}, "no claim"),
        ({"claims": [_claim(arm="soap")]}, "'soap' is not in arms"),
        ({"claims": [_claim(), _claim()]}, "stated twice"),
        ({"claims": [_claim(statistic="median")]}, "statistic must be"),
        ({"claims": [_claim(group="settings")]}, "has no quorum"),
        (
            {
                "arms": harness.same_rules(
                    ["adamw", "fosi"], dataclasses.replace(STOP, kind="time"), TIMED
                )
            },
            "kind must be 'target' or 'budget'",
        ),
    ],
)
def test_each_rule_is_checked(changes, expected):
    assert any(expected in v for v in _protocol(**changes).violations())


def test_arms_of_a_claim_must_share_the_stopping_rule_and_timed_region():
    budget = harness.StoppingRule(kind="budget", metric="steps", target=300, cadence="once")
    arms = {
        "adamw": harness.Arm(stopping=STOP, timed=TIMED),
        "fosi": harness.Arm(stopping=budget, timed=TIMED),
    }
    found = _protocol(arms=arms).violations()
    assert found == ["claim 'time': arms 'fosi' and 'adamw' use different stopping rules"]
    wider = harness.TimedRegion(includes=("training steps", "evaluation"))
    arms = {
        "adamw": harness.Arm(stopping=STOP, timed=TIMED),
        "fosi": harness.Arm(stopping=STOP, timed=wider),
    }
    assert _protocol(arms=arms).violations() == [
        "claim 'time': arms 'fosi' and 'adamw' use different timed regions"
    ]


def test_unequal_tuning_budgets_are_a_violation():
    small = harness.tune_bracketed("sgd", lambda v: (v - 2.0) ** 2, [1.0, 2.0, 4.0])
    big = harness.tune_bracketed("fosi", lambda v: (v - 2.0) ** 2, [0.5, 1.0, 2.0, 4.0, 8.0])
    found = _protocol(tuning={"sgd": small, "fosi": big}).violations()
    assert any("budgets differ" in v for v in found)


def test_overhead_benchmarks_need_one_problem_but_a_reason_for_no_tuning():
    proto = _protocol(
        kind="overhead",
        tuning={},
        untuned={"adamw": "no hyper-parameters", "fosi": "same workload"},
        problems=[{"name": "gpt", "standard": False}],
    )
    assert proto.violations() == []
    silent = _protocol(
        kind="overhead",
        tuning={},
        untuned={"adamw": "no hyper-parameters"},
        problems=[{"name": "gpt", "standard": False}],
    )
    assert silent.violations() == ["fosi: neither tuned nor a recorded reason why not"]


def test_met_is_derived_from_the_paired_data():
    assert _claim().judged()["met"]
    one_bad = _claim({0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.5})  # seed 4: baseline faster
    judged = one_bad.judged()
    assert not judged["met"] and judged["value"] == judged["worst"] == pytest.approx(0.8)
    # the stated statistic decides: the bootstrap bound forgives one seed when the mean wins
    assert judged["bootstrap_lower_90"] > 1
    assert _claim(one_bad.arm_values, statistic="bootstrap_lower_90").judged()["met"]
    higher = _claim(threshold=2.5)  # ratio 2 is not past 2.5
    assert not higher.judged()["met"]


def test_bound_claims_hold_every_figure_inside():
    p95 = harness.Claim(
        name="scrape",
        arm="exporter",
        baseline=None,
        metric="p95 s",
        arm_values={"node0": 0.01, "node1": 0.04},
        kind="bound",
        threshold=0.05,
    )
    assert p95.judged()["met"] and p95.judged()["worst"] == 0.04
    slow = dataclasses.replace(p95, arm_values={"node0": 0.01, "node1": 0.06})
    assert not slow.judged()["met"]
    assert dataclasses.replace(p95, threshold=None).problems()


def test_quorum_and_informational_claims():
    won = {s: 1.0 for s in range(5)}
    lost = {s: 3.0 for s in range(5)}
    claims = [
        _claim(won, name="a", group="settings"),
        _claim(won, name="b", group="settings"),
        _claim(lost, name="c", group="settings"),
    ]
    two_thirds = _protocol(claims=claims, quorum={"settings": 2 / 3})
    assert two_thirds.claims_met(two_thirds.judged())
    every = _protocol(claims=claims, quorum={"settings": 1.0})
    assert not every.claims_met(every.judged())
    stretch = _protocol(claims=[_claim(won), _claim(lost, name="stretch", required=False)])
    assert stretch.claims_met(stretch.judged())
    # members: a setting counts when all its claims are met (d loses setting y)
    members = [
        _claim(won, name="a", group="settings/x"),
        _claim(won, name="b", group="settings/x"),
        _claim(won, name="c", group="settings/y"),
        _claim(lost, name="d", group="settings/y"),
    ]
    half = _protocol(claims=members, quorum={"settings": 0.5})
    assert half.violations() == [] and half.claims_met(half.judged())
    most = _protocol(claims=members, quorum={"settings": 2 / 3})
    assert not most.claims_met(most.judged())


def _git_repo(root: pathlib.Path):
    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    git("init", "-q")
    (root / "raytrain_eff").mkdir()
    (root / "raytrain_eff" / "m.py").write_text("x = 1\n")
    (root / "bench" / "results").mkdir(parents=True)
    git("add", ".")
    git("commit", "-q", "-m", "measured code")
    return git


def _write(root: pathlib.Path, protocol: harness.Protocol, name: str) -> dict:
    path = harness.write_result(
        "x",
        headline="h",
        config={},
        baseline={},
        method={"t": math.inf},
        ratios={},
        target={},
        notes="",
        smoke=False,
        protocol=protocol,
        out=str(root / "bench" / "results" / name),
        root=root,
    )
    return json.loads(path.read_text())


def test_write_result_derives_met_at_a_clean_head(tmp_path):
    _git_repo(tmp_path)
    ok = _write(tmp_path, _protocol(), "ok.json")
    assert ok["status"] == "result" and ok["met"] is True and ok["protocol_violations"] == []
    assert ok["protocol"]["claims"]["time"]["met"] and ok["draft_files"] == []
    assert ok["method"]["t"] is None  # standard JSON: not reached is null
    assert "met_claimed" not in ok
    bad = _write(tmp_path, _protocol(eval_seeds=[0]), "bad.json")
    assert bad["met"] is False and bad["protocol_violations"]
    lost = _write(tmp_path, _protocol(claims=[_claim({s: 3.0 for s in range(5)})]), "l.json")
    assert lost["met"] is False and not lost["protocol_violations"]


def test_a_dirty_tree_writes_a_draft(tmp_path):
    git = _git_repo(tmp_path)
    (tmp_path / "raytrain_eff" / "m.py").write_text("x = 2\n")
    (tmp_path / "bench" / "harness.py").write_text("# untracked, loaded by the run\n")
    (tmp_path / "bench" / "other.py").write_text("# untracked, another benchmark's\n")
    draft = _write(tmp_path, _protocol(), "d.json")
    assert draft["status"] == "draft" and draft["met"] is None
    assert draft["met_if_committed"] is True
    assert draft["draft_files"] == ["bench/harness.py", "raytrain_eff/m.py"]
    assert draft["commit"].endswith("+dirty")
    blob = git("hash-object", "raytrain_eff/m.py").strip()
    assert draft["provenance"]["dirty_files"]["raytrain_eff/m.py"] == blob
    git("add", ".")
    git("commit", "-q", "-m", "commit it")
    assert _write(tmp_path, _protocol(), "c.json")["status"] == "result"


def test_load_is_recorded_with_the_cpu_other_processes_took(tmp_path):
    _git_repo(tmp_path)
    rec = _write(tmp_path, _protocol(), "ok.json")["load"]
    assert rec["cores"] >= 1 and len(rec["start"]) == len(rec["end"]) == 3
    assert rec["overloaded"] == (rec["others_share"] > harness.OTHERS_LIMIT)


def _probe(scenario: str) -> dict[str, float]:
    """The CPU seconds ``OwnTree`` counted in one of ``own_tree_probe``'s scenarios, run in a
    fresh process whose tree holds only what the scenario starts."""
    probe = pathlib.Path(__file__).with_name("own_tree_probe.py")
    out = subprocess.run(
        [sys.executable, str(probe), scenario], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def test_the_runs_own_cpu_counts_its_descendants_but_not_a_strangers():
    # each spinning process takes exactly one CPU second (time.process_time)
    counted = _probe("descendants")
    assert counted["waited"] > 0.9 and counted["alive"] > 0.9
    assert counted["after_reaping_it"] < 0.5  # waited for: not counted twice
    assert counted["stranger"] < 0.5


def test_a_daemon_the_run_started_counts_after_it_ends_adopted_elsewhere():
    assert _probe("daemon")["daemon"] > 0.9


def test_the_measured_paths_are_the_package_and_the_bench_files_the_run_used():
    paths = harness.measured_paths(commands=("startup_torchrun.py",))
    assert paths[0] == "raytrain_eff"
    assert {"bench/harness.py", "bench/startup_torchrun.py"} <= set(paths)
    assert "bench/shards.py" not in paths  # never loaded by this process


def test_provenance_names_untracked_code_with_its_blob(tmp_path):
    _git_repo(tmp_path)
    (tmp_path / "bench" / "probe.py").write_text("# untracked\n")
    source = harness.provenance(tmp_path)
    assert source["dirty"] and len(source["dirty_files"]["bench/probe.py"]) == 40
    assert "+dirty" in harness.commit_string(source)


def test_a_bound_claim_from_one_figure_or_one_per_seed():
    one = harness.Claim.bound("c", "arm", "seconds", 0.4, 0.5)
    assert one.kind == "bound" and one.baseline is None and one.arm_values == {"0": 0.4}
    assert not one.problems()
    per_seed = harness.Claim.bound("d", "arm", "share", {"1": 0.9, "2": 0.7}, 0.5, required=False)
    assert per_seed.arm_values == {"1": 0.9, "2": 0.7} and not per_seed.required
