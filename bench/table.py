"""Regenerate bench/README.md's table from bench/results/*.json (smoke results excluded)."""
from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
HEADER = """# Benchmarks

Each `bench/<name>.py` runs a method and its baseline in the same run and writes
`bench/results/<name>.json` (commit, machine, config, per-seed figures, medians and spread,
ratios, the target and whether it was `met`, computed by the script from the raw numbers).
`--smoke` runs each script end to end in seconds; the tests run every smoke mode.
Regenerate this table with `python bench/table.py`.

| benchmark | target | met | headline ratios | machine | commit | notes |
|---|---|---|---|---|---|---|
"""


def row(record: dict) -> str:
    ratios = "; ".join(f"{k}: {_fmt(v)}" for k, v in record.get("ratios", {}).items())
    target = "; ".join(f"{k} {v}" for k, v in record.get("target", {}).items())
    machine = record.get("machine", {})
    where = f"{machine.get('nproc')} cores" + (f", {machine['cuda']}" if machine.get("cuda") else "")
    notes = " ".join(str(record.get("notes", "")).split())
    return (f"| {record['bench']} | {target} | {'yes' if record.get('met') else 'no'} | {ratios} "
            f"| {where} | {str(record.get('commit', ''))[:8]} | {notes[:400]} |")


def _fmt(value) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{value['median']:.3g} (spread {value.get('spread', 0):.2g})"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def main() -> None:
    records = [json.loads(p.read_text()) for p in sorted((HERE / "results").glob("*.json"))
               if not p.name.endswith(".smoke.json")]
    (HERE / "README.md").write_text(HEADER + "\n".join(row(r) for r in records) + "\n")


if __name__ == "__main__":
    main()
