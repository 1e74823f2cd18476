"""Regenerate bench/README.md's table from bench/results/*.json (smoke results excluded)."""
from __future__ import annotations

import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
HEADER = """# Benchmarks

Each `bench/<name>.py` runs a method and its baselines in one run and writes
`bench/results/<name>.json`. `--smoke` runs a script end to end in seconds (the tests run
every smoke mode; smoke records are never claims). Regenerate the table below with
`python bench/table.py`.

## The protocol (enforced by `bench/harness.py`)

A benchmark exists to survive a skeptic who re-runs it with their own baseline. A script
states its verdict (`met_claimed`); `harness.write_result` checks the recorded `protocol` and
writes `met = met_claimed and no protocol_violations`, listing any violation in the JSON.

1. **Same tuning for every arm.** Each arm's hyper-parameter goes through
   `harness.tune_bracketed`: the same grid size (`budget`) for every arm, scored on tuning seeds
   and validation data only. The winner must lie strictly inside the grid; on an edge the grid
   is extended past that edge by its own spacing and searched again. The JSON keeps every grid,
   every score, the winner and its position (`protocol.tuning`). An arm with nothing to tune
   says why (`protocol.untuned`).
2. **One stopping rule and one timed region** (`protocol.stopping_rule`,
   `protocol.timed_region`) for every arm, e.g. "first evaluation at or below the target,
   evaluated every 10 steps", or "the fewest epochs that reach the gap". Set-up costs are timed
   for every arm or for none.
3. **Seeds and splits.** Tuning seeds and evaluation seeds are disjoint; claims rest on at
   least 5 evaluation seeds. Selection uses a validation split; reported quality a test split
   that selection never saw.
4. **Paired claims.** A win is judged per seed (`harness.paired`): the worst seed's ratio (or
   difference) must win, or the 90% bootstrap lower bound of the mean must. Never the range
   over three seeds.
5. **More than one problem**, one of them standard and not chosen by the method's authors
   (`protocol.problems`, `standard: true`).
6. **The best honest baseline.** Every baseline implements the same maths as well as we
   implement the method (in place, fused, nothing computed twice); a stronger maintained
   library is an arm. `protocol.baselines` says why each is fair.
7. **Reference defaults.** Methods run at their reference implementation's semantics; every
   departure is a named option listed in `protocol.departures`.
8. **Honest units.** Wall-clock beside hardware-independent counts (steps, passes, FLOPs).
   "Effective FLOPs" are what an ideal sparse kernel would do, not what ran on this CPU.
9. **Arms alternate** within a seed so machine noise falls on all of them; the load average
   is recorded in `machine`.
10. **Provenance.** `provenance` holds HEAD and every file under `raytrain_eff/` and `bench/`
    (untracked too) that differed from it, with its git blob hash; `commit` reads
    `<sha>+dirty` then. `bench/table.py` marks such a result *verified at* a later commit
    whose files carry exactly those blobs.

A non-finite figure (a target never reached, a diverged run) is written as `null`, and shown
below as "not reached".

## Results

| benchmark | headline | target | met | protocol | eval seeds | machine | code |
|---|---|---|---|---|---|---|---|
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
