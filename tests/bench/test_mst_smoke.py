"""bench/mst.py --smoke runs end to end and writes the DESIGN.md result record."""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_mst_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "mst.py"), "--smoke", "--out", str(out)],
                   check=True, cwd=ROOT, timeout=120, capture_output=True)
    record = json.loads(out.read_text())
    assert {"bench", "machine", "commit", "config", "baseline", "method", "ratios", "target",
            "met", "notes", "cpu_attention_kernel"} <= record.keys()
    assert record["bench"] == "mst" and record["smoke"] is True
    assert set(record["baseline"]) == {"dense_steps", "dense_flops"}
    method = record["method"]
    assert len(method["val_loss"]["values"]) == 2
    # MST's analytic FLOPs are below dense at the same steps; dense counts are equal
    assert method["flops_effective"]["median"] < method["flops_dense"]["median"]
    dense_steps = record["baseline"]["dense_steps"]
    assert method["flops_dense"]["median"] == dense_steps["flops_dense"]["median"]
    assert 0 < record["ratios"]["mst_flops_over_dense_steps"] < 1
    assert isinstance(record["met"], bool)
