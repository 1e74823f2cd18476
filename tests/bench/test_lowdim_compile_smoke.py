"""bench/lowdim_compile.py --smoke compiles the deep linear loss and times it against eager."""
from smoke import run_smoke


def test_lowdim_compile_bench_smoke(tmp_path):
    record = run_smoke("lowdim_compile", tmp_path, timeout=280)
    assert record["met"] is True    # the compiled loss follows the eager trajectory
    keys = {"mf_original", "mf_compressed", "mc_original", "mc_compressed"}
    assert set(record["ratios"]["eager_over_compiled_seconds_per_iteration"]) == keys
    for key in keys:
        assert record["method"][key]["seconds_per_iteration"] > 0
        assert record["method"][key]["warmup_seconds"] > 0
