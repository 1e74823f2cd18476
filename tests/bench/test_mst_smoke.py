"""bench/mst.py --smoke runs end to end and writes the DESIGN.md result record."""
from smoke import run_smoke


def test_mst_bench_smoke(tmp_path):
    record = run_smoke("mst", tmp_path, timeout=120)
    assert "cpu_attention_kernel" in record
    assert set(record["baseline"]) == {"dense_steps", "dense_flops"}
    method = record["method"]
    assert len(method["val_loss"]["values"]) == 2
    # MST's analytic FLOPs are below dense at the same steps; dense counts are equal
    assert method["flops_effective"]["median"] < method["flops_dense"]["median"]
    dense_steps = record["baseline"]["dense_steps"]
    assert method["flops_dense"]["median"] == dense_steps["flops_dense"]["median"]
    assert 0 < record["ratios"]["mst_flops_over_dense_steps"] < 1
