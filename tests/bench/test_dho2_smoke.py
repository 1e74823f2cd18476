"""bench/dho2.py --smoke runs end to end and writes the benchmark record."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dho2_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "dho2.py"), "--smoke", "--out", str(out)],
                   check=True, cwd=ROOT, timeout=280)
    record = json.loads(out.read_text())
    assert {"bench", "machine", "commit", "config", "baseline", "method", "ratios", "target",
            "met", "notes", "curvature_memory_per_worker", "tuned_lr"} <= set(record)
    assert record["smoke"] is True and isinstance(record["met"], bool)
    assert set(record["method"]) == {"dho2", "fosi", "mr-dho2"}
    assert set(record["baseline"]) == {"adamw", "sgd"}
    memory = record["curvature_memory_per_worker"]
    assert set(memory) == {"P1", "P2", "P4"}
    # slices: the per-rank basis falls with P (padding aside)
    assert memory["P4"]["basis_bytes"] * 4 >= memory["P1"]["basis_bytes"]
    assert memory["P4"]["basis_bytes"] < memory["P2"]["basis_bytes"] < memory["P1"]["basis_bytes"]
    assert record["target"]["val_loss"] > 0
