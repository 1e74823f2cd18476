"""bench/dasvrda.py --smoke runs end to end and writes the DESIGN.md record."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dasvrda_bench_smoke(tmp_path):
    out = tmp_path / "x.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "dasvrda.py"), "--smoke", "--out",
                    str(out)], check=True, timeout=300, cwd=ROOT)
    record = json.loads(out.read_text())
    for key in ("bench", "machine", "commit", "config", "baseline", "method", "ratios",
                "target", "met", "notes"):
        assert key in record, key
    assert record["bench"] == "dasvrda" and record["smoke"] is True
    (setting,) = record["method"]["settings"]
    assert set(setting["seconds_to_eps"]) == {"dasvrda", "prox-svrg", "katyusha", "saga"}
    assert len(setting["seconds_to_eps"]["dasvrda"]["values"]) == 3     # three seeds
    assert setting["certified_gap"] >= 0
    assert record["method"]["data_parallel"]["ranks_equal"] is True
    assert [r["b"] for r in record["method"]["batch_sweep"]["runs"]] == sorted(
        r["b"] for r in record["method"]["batch_sweep"]["runs"])
    assert isinstance(record["met"], bool)
