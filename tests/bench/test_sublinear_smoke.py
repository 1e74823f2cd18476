"""bench/sublinear.py --smoke runs end to end and writes the benchmark record."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_sublinear_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "sublinear.py"), "--smoke",
                    "--out", str(out)], check=True, cwd=ROOT, timeout=300,
                   capture_output=True)
    rec = json.loads(out.read_text())
    for key in ("bench", "machine", "commit", "config", "baseline", "method", "ratios",
                "target", "met", "notes", "losing_regimes"):
        assert key in rec, key
    assert rec["smoke"] is True and rec["bench"] == "sublinear"
    assert set(rec["ratios"]["slopes"]) == {"dense", "exact", "lsh"}
    exact = rec["method"]["exact"]
    assert exact["max_weight_gap_vs_dense"] < 1e-3       # the index path is the dense maths
    assert set(rec["method"]["digits"]) == {"exact", "lsh"}
    assert 0 <= rec["baseline"]["digits"]["val_accuracy"]["median"] <= 1
