"""bench/lowdim.py --smoke runs end to end and writes the DESIGN.md record."""
from smoke import run_smoke


def test_lowdim_bench_smoke(tmp_path):
    record = run_smoke("lowdim", tmp_path, timeout=280)
    for name in ("mf_d30", "mc_d30", "mc_d60"):
        runs = record["lowrank"][name]["runs"]
        assert set(runs) == {"original", "compressed", "compressed_random"}
        assert all(r["errors_every_50"][0] > 0.9 for rs in runs.values() for r in rs)
    assert "skipped" in record["lowrank"]["ms_d60"]
    assert set(record["head"]["seconds_to_target"]) == {"dense", "original", "compressed"}
