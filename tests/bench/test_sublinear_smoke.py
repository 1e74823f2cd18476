"""bench/sublinear.py --smoke runs end to end and writes the benchmark record."""
from smoke import run_smoke


def test_sublinear_bench_smoke(tmp_path):
    rec = run_smoke("sublinear", tmp_path, timeout=300)
    assert "losing_regimes" in rec
    assert set(rec["ratios"]["slopes"]) == {"dense", "exact", "lsh"}
    exact = rec["method"]["exact"]
    assert exact["max_weight_gap_vs_dense"] < 1e-3       # the index path is the dense maths
    assert set(rec["method"]["digits"]) == {"exact", "lsh"}
    assert 0 <= rec["baseline"]["digits"]["val_accuracy"]["median"] <= 1
