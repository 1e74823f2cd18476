"""Run one benchmark in --smoke mode and read back its DESIGN.md record."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from timeouts import scaled

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORD_KEYS = {
    "bench",
    "machine",
    "commit",
    "config",
    "baseline",
    "method",
    "ratios",
    "target",
    "met",
    "notes",
}


def run_smoke(name: str, tmp_path: pathlib.Path, timeout: int = 300) -> dict:
    """``bench/<name>.py --smoke``: it must exit 0 and write a complete smoke record."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=scaled(timeout),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record) >= RECORD_KEYS, RECORD_KEYS - set(record)
    assert record["bench"] == name and record["smoke"] is True
    # met is derived by the harness; null when the tree had uncommitted code (a draft)
    assert record["met"] is None if record["status"] == "draft" else isinstance(record["met"], bool)
    return record
