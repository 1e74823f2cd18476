"""bench/lowdim_compile.py --smoke runs the lowrank presets through the engine's Runner with
train.compile off and on, and times them (shape only: smoke figures are not claims)."""

from smoke import run_smoke


def test_lowdim_compile_bench_smoke(tmp_path):
    record = run_smoke("lowdim_compile", tmp_path, timeout=280)
    protocol = record["protocol"]
    assert record["met_if_committed"] is False  # smoke: too few repetitions
    assert protocol["kind"] == "overhead"
    assert protocol["arms"]["eager"] == protocol["arms"]["compiled"]
    excluded = protocol["arms"]["compiled"]["timed"]["excludes"]
    assert excluded[0].startswith("JIT compilation")  # timed apart, in neither arm
    assert set(protocol["untuned"]) == {"eager", "compiled"} and not protocol["tuning"]
    reps = protocol["eval_seeds"]
    assert reps == list(range(record["config"]["repetitions"])) and not protocol["tuning_seeds"]
    assert record["config"]["presets"] == {
        "original": "lowrank-original",
        "compressed": "lowrank-compressed",
    }
    keys = {"mf_original", "mf_compressed", "mc_original", "mc_compressed"}
    assert set(protocol["claims"]) == {
        f"{k}_{c}" for k in keys for c in ("seconds_per_iteration", "same_trajectory")
    }
    for key in keys:
        speed = protocol["claims"][f"{key}_seconds_per_iteration"]
        assert speed["kind"] == "ratio" and len(speed["per_seed"]) == len(reps) == speed["n"]
        assert speed["required"] is False and isinstance(speed["met"], bool)
        same = protocol["claims"][f"{key}_same_trajectory"]
        assert same["required"] and same["met"]  # the compiled loss follows the eager one
    assert set(record["ratios"]["eager_over_compiled_seconds_per_iteration"]) == {
        f"{k}_seconds_per_iteration" for k in keys
    }
    assert set(record["ratios"]["compile_seconds"]) == keys
    for key in keys:
        assert set(record["method"][key]) == set(record["baseline"][key]) == {str(r) for r in reps}
        for run in record["method"][key].values():  # compiled: one graph, no recompilation
            assert run["seconds_per_iteration"] > 0 and run["warmup_seconds"] > 0
            assert run["graphs_compiled"] == 1 and "compile_seconds" in run
        for run in record["baseline"][key].values():  # eager: nothing compiled
            assert run["seconds_per_iteration"] > 0 and run["graphs_compiled"] == 0
    assert isinstance(record["protocol_violations"], list) and record["headline"]
