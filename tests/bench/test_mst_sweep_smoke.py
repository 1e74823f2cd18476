"""bench/mst_sweep.py --smoke runs a real Ray Tune sweep end to end and records the protocol."""

from smoke import run_smoke

PROBLEMS = {"kjv_char_gpt", "digits_mlp"}


def test_mst_sweep_bench_smoke(tmp_path):
    record = run_smoke("mst_sweep", tmp_path, timeout=280)
    proto = record["protocol"]
    assert set(proto["arms"]) == set(proto["tuning"]) | set(proto["untuned"]) and record["headline"]
    assert proto["eval_seeds"] and not set(proto["eval_seeds"]) & set(proto["tuning_seeds"])
    assert {p["name"] for p in proto["problems"]} == PROBLEMS
    assert set(proto["tuning"]) == {f"{p}/mst_reference" for p in PROBLEMS}
    assert set(proto["untuned"]) == {f"{p}/mst_swept" for p in PROBLEMS}
    for rec in proto["tuning"].values():
        assert len(rec["grid"]) == len(rec["scores"]) >= 3 and rec["winner"] in rec["grid"]
    for p in PROBLEMS:
        claim = proto["claims"][f"{p}/swept_beats_reference"]
        assert claim["kind"] == "difference" and claim["seeds"] == sorted(proto["eval_seeds"])
        assert proto["arms"][claim["arm"]] == proto["arms"][claim["baseline"]]
        assert len(claim["per_seed"]) == len(proto["eval_seeds"])
        trials = record["trials"][p]
        assert len(trials) == 1 and all(0 < t["flop_fraction"] < 1 for t in trials)
        kept = record["method"][p]["kept_trial"]
        assert set(kept["schedule"]) >= {"sparsity", "warmup_end", "restore_start", "grow"}
        assert 0.8 <= kept["schedule"]["sparsity"] <= 0.97
        # kept: the best validation loss among trials within the reference's FLOP fraction
        budget = record["flop_budget"][p]
        within = [t for t in trials if t["flop_fraction"] <= budget] or trials
        assert kept["validation_loss"] == min(t["validation_loss"] for t in within)
        assert len(record["method"][p]["test_loss"]["values"]) == len(proto["eval_seeds"])
    assert not record["met"] and record["protocol_violations"]  # smoke: too few seeds
