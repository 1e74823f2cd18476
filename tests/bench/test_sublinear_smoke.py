"""bench/sublinear.py --smoke runs end to end and writes the benchmark record under the protocol:
the layer-level arms, and the method's preset against its dense baseline through the Runner."""

from smoke import run_smoke

LAYER_ARMS = {"dense_fused", "dense_rows", "exact"}
PRODUCT_ARMS = {"sublinear", "dense"}
ARMS = LAYER_ARMS | PRODUCT_ARMS


def test_sublinear_bench_smoke(tmp_path):
    rec = run_smoke("sublinear", tmp_path, timeout=300)
    proto = rec["protocol"]
    assert proto["kind"] == "comparison"
    assert set(proto["arms"]) == ARMS
    for group in (LAYER_ARMS, PRODUCT_ARMS):  # each comparison's arms share their rules
        assert len({str(proto["arms"][a]) for a in group}) == 1
    assert len(proto["eval_seeds"]) >= 2
    assert not set(proto["eval_seeds"]) & set(proto["tuning_seeds"])
    assert set(proto["untuned"]) == ARMS and not proto["tuning"]  # same update: no tuning
    assert set(proto["baselines"]) == {"dense_fused", "dense_rows", "dense"}
    problems = {p["name"]: p for p in proto["problems"]}
    assert problems["digits"]["standard"] and not problems["synthetic"]["standard"]
    assert proto["claims"]
    for claim in proto["claims"].values():
        assert len(claim["per_seed"]) == len(proto["eval_seeds"])
        assert {"worst", "bootstrap_lower_90", "met", "threshold"} <= set(claim)
    required = [n for n, c in proto["claims"].items() if c["required"]]
    layer = [n for n in required if n.startswith("synthetic n=B=8 1t")]
    assert len(layer) == 2 and len(required) == 3
    (product,) = set(required) - set(layer)
    claim = proto["claims"][product]
    assert (claim["arm"], claim["baseline"]) == ("sublinear", "dense")
    assert claim["per_seed"] == rec["ratios"]["product_sublinear_over_dense_steps_per_s"]["values"]
    assert all(r > 0 for r in claim["per_seed"]) and claim["lower_is_better"] is False
    assert "scaling.num_workers=1" in rec["config"]["product"]["overrides"]
    runs = rec["product"]
    for arm in PRODUCT_ARMS:
        assert len(runs[arm]["steps_per_s"]["values"]) == len(proto["eval_seeds"])
        assert all(s > 0 for s in runs[arm]["setup_s"]["values"])
    # the same update through the exact index and the dense path: the same training losses
    for a, b in zip(*(runs[arm]["final_loss"]["values"] for arm in PRODUCT_ARMS), strict=True):
        assert abs(a - b) <= 1e-4 * max(abs(b), 1.0)
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
