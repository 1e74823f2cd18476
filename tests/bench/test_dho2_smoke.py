"""bench/dho2.py --smoke runs end to end on the product (Runner, tasks, methods on gloo ranks)
and writes the record: time and steps to target for both bases, DHO2's step cost against DDP
AdamW's and its refresh share, with the protocol's fields."""

import pytest
from smoke import run_smoke

BASELINES = {"adamw", "sgd-hb", "adamw-p1"}
METHODS = {"dho2", "dho2-hb", "dho2-p1", "dho2-replicated"}
TRAINED = {"adamw", "sgd-hb", "dho2", "dho2-hb"}
PROBLEMS = {"digits-cnn", "kjv-gpt"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return run_smoke("dho2", tmp_path_factory.mktemp("dho2"), timeout=280)


def test_dho2_bench_arms_read_the_runners_records(record):
    assert set(record["method"]) == set(record["baseline"]) == PROBLEMS
    for problem in PROBLEMS:
        assert set(record["method"][problem]) == METHODS
        assert set(record["baseline"][problem]) == BASELINES
        assert record["target"][problem]["val_loss"] > 0
        for arms in (record["method"][problem], record["baseline"][problem]):
            for fig in arms.values():
                assert not fig["diverged_seeds"]
                assert {"steps_to_target", "seconds_to_target"} <= set(fig["per_seed"])
                assert fig["step_seconds_steady_mean"]["median"] > 0
                assert fig["rank0_memory_bytes"]["optimizer_state_bytes"] > 0
        for arm in METHODS:  # the smoke's short T: refreshes happened
            fig = record["method"][problem][arm]
            assert 0 < fig["refresh_share_of_wall"]["median"] < 1
            assert fig["clip_factor"]["max"] >= 1.0
        # FOSI-Adam never scales Adam's step (reference clip 1); heavy-ball's c may reach 3
        assert record["method"][problem]["dho2"]["clip_factor"]["max"] == 1.0
        assert record["method"][problem]["dho2-hb"]["clip_factor"]["max"] <= 3.0
        # a baseline takes no curvature steps, so all its steps count as steady
        assert record["baseline"][problem]["adamw"]["refresh_share_of_wall"]["max"] == 0
    assert set(record["tuned_lr"]["kjv-gpt"]) == TRAINED


def test_dho2_claims_follow_from_the_data(record):
    claims = record["protocol"]["claims"]
    required = {n for n, c in claims.items() if c["required"]}
    assert required == {
        "kjv-gpt: DHO2 step over AdamW step, P = 2",
        "kjv-gpt: refresh share of DHO2's wall time, P = 2",
        *(n for n in claims if n.endswith("over dho2, seconds to target") and "fastest" in n),
    }
    for problem in PROBLEMS:
        for workers in (1, 2):
            for kind, limit in (("DHO2 step over AdamW step", 1.2), ("refresh share", 0.1)):
                name = next(n for n in claims if n.startswith(f"{problem}: {kind}"))
                name = name.rsplit("P = ", 1)[0] + f"P = {workers}"
                claim = claims[name]
                assert claim["kind"] == "bound" and claim["threshold"] == limit
                assert claim["met"] == (claim["worst"] < limit)
        replicated = claims[f"{problem}: DHO2 step over AdamW step, P = 2, update=replicated"]
        assert not replicated["required"] and replicated["threshold"] == 1.2
        assert replicated["met"] == (replicated["worst"] < 1.2)
        for method in ("dho2", "dho2-hb"):
            names = [n for n in claims if n.startswith(f"{problem}: ") and f"over {method}," in n]
            assert {n.rsplit(", ", 1)[1] for n in names} == {
                "seconds to target",
                "steps to target",
            }


def test_dho2_protocol_fields(record):
    protocol = record["protocol"]
    assert protocol["kind"] == "comparison"
    rules = protocol["arms"]
    for problem in PROBLEMS:  # one rule per problem, shared by all its trained arms
        assert len({str(rules[f"{problem}: {a}"]) for a in TRAINED}) == 1
        timing = {"adamw-p1", "dho2-p1", "dho2-replicated"}
        assert {f"{problem}: {a}" for a in timing} <= set(protocol["untuned"])
    # the smoke's one seed is its only departure: every paired claim's arms share a rule
    assert not [v for v in record["protocol_violations"] if "stopping rules" in v]
    assert not set(protocol["eval_seeds"]) & set(protocol["tuning_seeds"])
    assert set(protocol["tuning"]) == {f"{p}: {a}" for p in PROBLEMS for a in TRAINED}
    assert len({rec["budget"] for rec in protocol["tuning"].values()}) == 1
    for rec in protocol["tuning"].values():
        assert len(rec["grid"]) >= 3 and rec["grid"][rec["winner_index"]] == rec["winner"]
    assert any(p["standard"] for p in protocol["problems"]) and len(protocol["problems"]) == 2
    assert "warmup" in protocol["departures"]
    assert isinstance(record["protocol_violations"], list)
