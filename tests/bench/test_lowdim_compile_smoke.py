"""bench/lowdim_compile.py --smoke compiles the deep linear loss and times it against eager
(shape only: smoke figures are not claims)."""
from smoke import run_smoke


def test_lowdim_compile_bench_smoke(tmp_path):
    record = run_smoke("lowdim_compile", tmp_path, timeout=280)
    assert record["met_claimed"] is True    # the compiled loss follows the eager trajectory
    protocol = record["protocol"]
    assert protocol["kind"] == "overhead" and protocol["stopping_rule"] and protocol["timed_region"]
    assert set(protocol["untuned"]) == {"eager", "compiled"} and not protocol["tuning"]
    reps = protocol["eval_seeds"]
    assert reps == list(range(record["config"]["repetitions"])) and not protocol["tuning_seeds"]
    keys = {"mf_original", "mf_compressed", "mc_original", "mc_compressed"}
    assert set(protocol["claims"]) == {f"{k}_seconds_per_iteration" for k in keys}
    for claim in protocol["claims"].values():
        assert claim["kind"] == "ratio" and len(claim["per_seed"]) == len(reps) == claim["n"]
        assert isinstance(claim["wins"], bool)
    assert set(record["ratios"]["eager_over_compiled_seconds_per_iteration"]) == {
        f"{k}_seconds_per_iteration" for k in keys}
    for key in keys:
        assert set(record["method"][key]) == set(record["baseline"][key]) == {str(r) for r in reps}
        for run in record["method"][key].values():
            assert run["seconds_per_iteration"] > 0 and run["warmup_seconds"] > 0
    assert isinstance(record["protocol_violations"], list) and record["headline"]
