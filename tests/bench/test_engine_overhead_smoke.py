"""The engine-overhead benchmark runs end to end in --smoke mode and writes its JSON."""
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_engine_overhead_smoke(tmp_path):
    out = tmp_path / "engine_overhead.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "engine_overhead.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    for key in ("bench", "machine", "commit", "config", "baseline", "method", "ratios", "target",
                "met", "notes"):
        assert key in record
    assert record["method"]["steps_per_s"]["median"] > 0
    assert record["baseline"]["steps_per_s"]["median"] > 0
    assert record["machine"]["nproc"] >= 1
