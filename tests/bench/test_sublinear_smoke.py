"""bench/sublinear.py --smoke runs end to end and writes the benchmark record under the protocol."""

from smoke import run_smoke

ARMS = {"dense_fused", "dense_rows", "exact"}


def test_sublinear_bench_smoke(tmp_path):
    rec = run_smoke("sublinear", tmp_path, timeout=300)
    proto = rec["protocol"]
    assert proto["kind"] == "comparison"
    assert set(proto["arms"]) == ARMS and len({str(a) for a in proto["arms"].values()}) == 1
    assert len(proto["eval_seeds"]) >= 2
    assert not set(proto["eval_seeds"]) & set(proto["tuning_seeds"])
    assert set(proto["untuned"]) == ARMS and not proto["tuning"]  # same update: no tuning
    assert set(proto["baselines"]) == {"dense_fused", "dense_rows"}
    problems = {p["name"]: p for p in proto["problems"]}
    assert problems["digits"]["standard"] and not problems["synthetic"]["standard"]
    assert proto["claims"]
    for claim in proto["claims"].values():
        assert len(claim["per_seed"]) == len(proto["eval_seeds"])
        assert {"worst", "bootstrap_lower_90", "met", "threshold"} <= set(claim)
    required = [n for n, c in proto["claims"].items() if c["required"]]
    assert len(required) == 2 and all(n.startswith("synthetic n=B=8 1t") for n in required)
    assert isinstance(rec["protocol_violations"], list)
    assert any(c["B"] >= 64 for c in rec["config"]["configs"])
    for sweep in rec["sweeps"]:
        assert sweep["crossover"]  # "m = ..." or "no crossover ..."
    for name, by_width in rec["method"].items():
        for entry in by_width.values():
            ex = entry["exact"]
            assert {
                "cpu_seconds",
                "wall_seconds",
                "neurons_updated_per_step",
                "neurons_read_per_input",
                "flops_per_step",
            } <= set(ex)
            # the same maths: the index path and both dense steps end at the same weights
            assert entry["weight_gaps"]["exact_vs_dense_fused"] < 1e-3
            assert entry["weight_gaps"]["dense_rows_vs_dense_fused"] < 1e-4
            for arm in ("dense_fused", "dense_rows"):
                assert {"cpu_seconds", "wall_seconds", "neurons_updated_per_step"} <= set(
                    rec["baseline"][name][str(next(iter(by_width)))][arm]
                )
    assert set(rec["max_weight_gap"]) == {"exact_vs_dense_fused", "dense_rows_vs_dense_fused"}
