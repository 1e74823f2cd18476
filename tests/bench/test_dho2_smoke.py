"""bench/dho2.py --smoke runs end to end and writes the benchmark record with its protocol."""
import pytest
from smoke import run_smoke

ARMS = {"adamw", "adamw-p2", "sgd", "fosi", "dho2", "mr-dho2"}
PROBLEMS = {"digits-cnn", "kjv-gpt"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return run_smoke("dho2", tmp_path_factory.mktemp("dho2"), timeout=280)


def test_dho2_bench_smoke(record):
    assert {"curvature_memory_per_worker", "tuned_lr", "hvp_modes", "headline"} <= set(record)
    assert set(record["method"]) == set(record["baseline"]) == PROBLEMS
    for problem in PROBLEMS:
        assert set(record["method"][problem]) == {"dho2", "fosi", "mr-dho2"}
        assert set(record["baseline"][problem]) == {"adamw", "adamw-p2", "sgd"}
        assert record["target"][problem]["val_loss"] > 0
        fosi = record["method"][problem]["fosi"]
        # the smoke's short warm-up: a refresh happened, and FOSI-Adam's step is unscaled (c = 1)
        assert fosi["curvature_seconds"]["median"] > 0
        assert fosi["effective_step_size"]["clip_factor_max"] == 1.0
        for arms in (record["method"][problem], record["baseline"][problem]):
            for fig in arms.values():
                assert {"steps_to_target", "test_loss_at_stop"} <= set(fig["per_seed"])
    assert all(seconds > 0 for seconds in record["hvp_modes"].values())
    memory = record["curvature_memory_per_worker"]
    assert set(memory) == {"P1", "P2", "P4"}
    # slices: the per-rank basis falls with P (padding aside)
    assert memory["P4"]["basis_bytes"] * 4 >= memory["P1"]["basis_bytes"]
    assert memory["P4"]["basis_bytes"] < memory["P2"]["basis_bytes"] < memory["P1"]["basis_bytes"]


def test_dho2_protocol_fields(record):
    protocol = record["protocol"]
    assert protocol["kind"] == "comparison"
    assert protocol["stopping_rule"] and protocol["timed_region"]
    assert protocol["eval_seeds"]
    assert not set(protocol["eval_seeds"]) & set(protocol["tuning_seeds"])
    # every arm on every problem tuned on a grid of the same size, winner and position recorded
    assert set(protocol["tuning"]) == {f"{p}: {a}" for p in PROBLEMS for a in ARMS}
    assert len({rec["budget"] for rec in protocol["tuning"].values()}) == 1
    for rec in protocol["tuning"].values():
        assert len(rec["grid"]) >= 3 and rec["winner"] in rec["grid"]
        assert rec["grid"][rec["winner_index"]] == rec["winner"]
    assert any(p["standard"] for p in protocol["problems"]) and len(protocol["problems"]) == 2
    assert "warmup" in protocol["departures"]
    assert "learning_rate_clip" not in protocol["departures"]
    assert len(protocol["claims"]) == 8
    for claim in protocol["claims"].values():
        assert len(claim["per_seed"]) == len(protocol["eval_seeds"]) == claim["n"]
        assert {"worst", "bootstrap_lower_90", "wins"} <= set(claim)
    assert isinstance(record["protocol_violations"], list)
