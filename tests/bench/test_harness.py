"""bench/harness.py: the protocol decides ``met``; tuning brackets its winner; claims are paired."""
from __future__ import annotations

import json
import math
import pathlib
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
        "sgd", lambda v: math.nan if v > 0.5 else (v - 1e-3) ** 2, [1e-2, 1e-1, 1.0])
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


def _protocol(**changes) -> harness.Protocol:
    fields = dict(
        stopping_rule="first evaluation at or below the target, every 10 steps",
        timed_region="training steps, evaluation excluded",
        tuning={"adamw": _inside("adamw"), "fosi": _inside("fosi")},
        tuning_seeds=[100], eval_seeds=[0, 1, 2, 3, 4],
        problems=[{"name": "digits-cnn", "standard": False},
                  {"name": "breast-cancer-mlp", "standard": True}],
        claims={"time": harness.paired({s: 2.0 for s in range(5)}, {s: 1.0 for s in range(5)})})
    fields.update(changes)
    return harness.Protocol(**fields)


def test_a_complete_protocol_has_no_violations():
    assert _protocol().violations() == []


@pytest.mark.parametrize("changes, expected", [
    ({"eval_seeds": [0, 1, 2]}, "3 evaluation seeds"),
    ({"tuning_seeds": [0]}, "also used for tuning"),
    ({"problems": [{"name": "digits-cnn", "standard": False}]}, "standard problem"),
    ({"claims": {}}, "no paired"),
    ({"stopping_rule": " "}, "stopping_rule"),
])
def test_each_rule_is_checked(changes, expected):
    assert any(expected in v for v in _protocol(**changes).violations())


def test_unequal_tuning_budgets_are_a_violation():
    small = harness.tune_bracketed("sgd", lambda v: (v - 2.0) ** 2, [1.0, 2.0, 4.0])
    big = harness.tune_bracketed("fosi", lambda v: (v - 2.0) ** 2, [0.5, 1.0, 2.0, 4.0, 8.0])
    found = _protocol(tuning={"sgd": small, "fosi": big}).violations()
    assert any("budgets differ" in v for v in found)


def test_overhead_benchmarks_need_no_tuning_or_second_problem():
    proto = _protocol(kind="overhead", tuning={}, untuned={"on/off": "same workload"},
                      problems=[{"name": "gpt", "standard": False}])
    assert proto.violations() == []


def test_met_is_the_claim_and_the_protocol(tmp_path):
    common = dict(headline="h", config={}, baseline={}, method={"t": math.inf}, ratios={},
                  target={}, notes="", smoke=False)
    ok = json.loads(harness.write_result("x", met=True, protocol=_protocol(),
                                         out=str(tmp_path / "ok.json"), **common).read_text())
    assert ok["met"] and ok["met_claimed"] and ok["protocol_violations"] == []
    assert ok["method"]["t"] is None                     # standard JSON: not reached is null
    bad = json.loads(harness.write_result("x", met=True, protocol=_protocol(eval_seeds=[0]),
                                          out=str(tmp_path / "bad.json"), **common).read_text())
    assert bad["met_claimed"] and not bad["met"] and bad["protocol_violations"]
    none = json.loads(harness.write_result("x", met=True, out=str(tmp_path / "n.json"),
                                           **common).read_text())
    assert not none["met"] and none["protocol_violations"] == ["no protocol recorded"]


def test_provenance_names_untracked_code_with_its_blob(tmp_path):
    probe = harness.ROOT / "bench" / f"_provenance_probe_{tmp_path.name}.py"
    probe.write_text("# untracked\n")
    try:
        source = harness.provenance()
    finally:
        probe.unlink()
    rel = str(probe.relative_to(harness.ROOT))
    assert source["dirty"] and rel in source["dirty_files"]
    assert len(source["dirty_files"][rel]) == 40 and "+dirty" in harness.commit_string(source)
