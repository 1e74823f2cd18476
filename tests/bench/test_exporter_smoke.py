"""bench/exporter.py --smoke runs end to end and writes the DESIGN.md record."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_exporter_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "exporter.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=280,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert {"bench", "machine", "commit", "config", "baseline", "method", "ratios", "target",
            "met", "notes"} <= set(record)
    assert record["bench"] == "exporter" and record["smoke"] is True
    assert isinstance(record["met"], bool)
    assert record["met"] == (record["met_throughput"] and record["met_scrape"])
    for key in ("throughput_on_over_off", "cpu_throughput_on_over_off"):
        ratios = record["ratios"][key]["values"]
        assert len(ratios) == record["config"]["pairs"] and all(r > 0 for r in ratios)
    assert record["throughput_judged_on"] in ("wall", "cpu")
    scrape = record["method"]["scrape"]
    assert set(scrape) == {"node0", "node1"}
    # 8 workers' series per node: every worker exports dozens of samples
    assert all(n["samples"] > 8 * 30 and n["seconds"]["median"] > 0 for n in scrape.values())
