"""bench/mst_sweep.py --smoke runs a real Tune sweep end to end and keeps a schedule."""
from smoke import run_smoke


def test_mst_sweep_bench_smoke(tmp_path):
    record = run_smoke("mst_sweep", tmp_path, timeout=280)
    assert len(record["trials"]) == 2
    kept = record["method"]
    assert set(kept["schedule"]) >= {"sparsity", "warmup_end", "restore_start", "grow"}
    assert 0.8 <= kept["schedule"]["sparsity"] <= 0.97
    # the kept trial is the best among those within the FLOP budget (or all, if none is)
    within = [t for t in record["trials"] if t["flop_fraction"] <= 0.5] or record["trials"]
    assert kept["val_loss"] == min(t["val_loss"] for t in within)
    assert all(0 < t["flop_fraction"] < 1 for t in record["trials"])
