"""bench/dho2.py --smoke runs end to end and writes the benchmark record."""
from smoke import run_smoke


def test_dho2_bench_smoke(tmp_path):
    record = run_smoke("dho2", tmp_path, timeout=280)
    assert {"curvature_memory_per_worker", "tuned_lr", "hvp_modes"} <= set(record)
    assert set(record["method"]) == {"dho2", "fosi", "mr-dho2"}
    assert set(record["baseline"]) == {"adamw", "adamw-p2", "sgd"}
    assert all(seconds > 0 for seconds in record["hvp_modes"].values())
    # the spawned DHO2 ranks ran the smoke's short warm-up: a refresh happened
    assert record["method"]["dho2"]["curvature_seconds"]["median"] > 0
    memory = record["curvature_memory_per_worker"]
    assert set(memory) == {"P1", "P2", "P4"}
    # slices: the per-rank basis falls with P (padding aside)
    assert memory["P4"]["basis_bytes"] * 4 >= memory["P1"]["basis_bytes"]
    assert memory["P4"]["basis_bytes"] < memory["P2"]["basis_bytes"] < memory["P1"]["basis_bytes"]
    assert record["target"]["val_loss"] > 0
