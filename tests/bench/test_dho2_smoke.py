"""bench/dho2.py --smoke runs end to end and writes the benchmark record with its protocol."""

import pytest
from smoke import run_smoke

BASELINES = {"adamw", "adamw-p2", "s-sgd", "fosi-bcast", "soap"}
METHODS = {"dho2", "mr-dho2", "dho2-fsdp"}
PROBLEMS = {"digits-cnn", "kjv-gpt"}
REFRESH = {
    "fosi",
    "fosi-2threads",
    "dho2-global",
    "dho2-global-fsdp",
    "dho2-per-rank",
    "fosi-bcast",
}
MEMORY = {"fosi", "adamw", "adamw-p2", "dho2", "dho2-fsdp"}


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    return run_smoke("dho2", tmp_path_factory.mktemp("dho2"), timeout=280)


def test_dho2_bench_arms(record):
    assert {
        "tuned_lr",
        "headline",
        "refresh",
        "memory_per_worker",
        "collective_latency_seconds",
        "matched_lr_steps_to_target",
        "verdicts",
    } <= set(record)
    assert set(record["method"]) == set(record["baseline"]) == PROBLEMS
    for problem in PROBLEMS:
        assert set(record["method"][problem]) == METHODS
        assert set(record["baseline"][problem]) == BASELINES
        assert record["target"][problem]["val_loss"] > 0
        for arms in (record["method"][problem], record["baseline"][problem]):
            for fig in arms.values():
                assert {"steps_to_target", "seconds_to_target", "test_loss_at_stop"} <= set(
                    fig["per_seed"]
                )
                assert fig["step_seconds_median"] > 0
        # the smoke's short warm-up: a refresh happened, and FOSI-Adam's step is unscaled (c = 1)
        fosi = record["baseline"][problem]["fosi-bcast"]
        assert fosi["curvature_seconds"]["median"] > 0
        assert fosi["effective_step_size"]["clip_factor_max"] == 1.0
        assert "curvature_lag_steps" in record["method"][problem]["mr-dho2"]
    assert set(record["verdicts"]) == {"time", "refresh", "memory"}


def test_dho2_refresh_and_memory_sections(record):
    for problem in PROBLEMS:
        per_b = record["refresh"][problem]
        assert per_b
        largest = max(per_b, key=lambda b: int(b[1:]))
        for b, at in per_b.items():
            # FOSI on 2 threads is a side figure, taken at the largest B only
            configs = REFRESH if b == largest else REFRESH - {"fosi-2threads"}
            assert set(at) == configs | {"hvp_single_process"}
            for config in configs:
                assert at[config]["seconds"]["values"] and at[config]["hvps"] > 0
                assert set(at[config]["collective_seconds_per_rank"]) == (
                    {"0"} if config.startswith("fosi") and config != "fosi-bcast" else {"0", "1"}
                )
        ratios = record["ratios"]["refresh_seconds_over_fosi_p1"][problem]
        assert set(ratios) == set(per_b)
    memory = record["memory_per_worker"]
    assert {key.split(" | ")[0] for key in memory} == MEMORY
    assert {key.split(" | ")[1] for key in memory} == PROBLEMS
    for key, fig in memory.items():
        assert fig["workers"] == (
            2 if key.split(" | ")[0] in {"adamw-p2", "dho2", "dho2-fsdp"} else 1
        )
        assert fig["peak_tensor_bytes"] >= fig["tensor_bytes_after_window"] > 0
    # the tracker counts what the optimizer holds: FOSI keeps more than AdamW after the window
    cnn = sorted(k for k in memory if k.startswith("fosi | digits-cnn"))[0]
    assert (
        memory[cnn]["tensor_bytes_after_window"]
        > memory[cnn.replace("fosi", "adamw", 1)]["tensor_bytes_after_window"]
    )


def test_dho2_protocol_fields(record):
    protocol = record["protocol"]
    assert protocol["kind"] == "comparison"
    rules = protocol["arms"]
    for problem in PROBLEMS:  # one rule per problem, shared by all its arms
        assert len({str(rules[f"{problem}: {a}"]) for a in BASELINES | METHODS}) == 1
    assert protocol["eval_seeds"]
    assert not set(protocol["eval_seeds"]) & set(protocol["tuning_seeds"])
    # every arm on every problem tuned on a grid of the same size, winner and position recorded
    arms = BASELINES | METHODS
    assert set(protocol["tuning"]) == {f"{p}: {a}" for p in PROBLEMS for a in arms}
    assert len({rec["budget"] for rec in protocol["tuning"].values()}) == 1
    for rec in protocol["tuning"].values():
        assert len(rec["grid"]) >= 3 and rec["winner"] in rec["grid"]
        assert rec["grid"][rec["winner_index"]] == rec["winner"]
    assert any(p["standard"] for p in protocol["problems"]) and len(protocol["problems"]) == 2
    assert set(protocol["baselines"]) == BASELINES
    assert "warmup" in protocol["departures"]
    assert "learning_rate_clip" not in protocol["departures"]
    for problem in PROBLEMS:
        names = [n for n in protocol["claims"] if n.startswith(f"{problem}: ")]
        assert any("over dho2, seconds" in n for n in names)
        assert any("over dho2-fsdp, seconds" in n for n in names)
        assert f"{problem}: fosi-bcast over dho2, seconds to target" in names
    for claim in protocol["claims"].values():
        if claim["kind"] != "bound":
            assert len(claim["per_seed"]) == len(protocol["eval_seeds"]) == claim["n"]
        assert {"worst", "bootstrap_lower_90", "met", "threshold"} <= set(claim)
    required = sorted(n for n, c in protocol["claims"].items() if c["required"])
    assert len([n for n in required if "over dho2, seconds" in n]) == len(PROBLEMS)
    assert isinstance(record["protocol_violations"], list)
