"""bench/lowdim.py --smoke runs end to end and writes the DESIGN.md record."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_lowdim_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "lowdim.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=280,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {"bench", "machine", "commit", "config", "baseline", "method", "ratios", "target",
            "met", "notes"} <= set(record)
    assert record["bench"] == "lowdim" and record["smoke"] is True
    assert isinstance(record["met"], bool)
    for name in ("mf_d30", "mc_d30", "mc_d60"):
        runs = record["lowrank"][name]["runs"]
        assert set(runs) == {"original", "compressed", "compressed_random"}
        assert all(r["errors_every_50"][0] > 0.9 for rs in runs.values() for r in rs)
    assert "skipped" in record["lowrank"]["ms_d60"]
    assert set(record["head"]["seconds_to_target"]) == {"dense", "original", "compressed"}
