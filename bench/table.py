"""Regenerate bench/README.md's table from bench/results/*.json (smoke results excluded)."""
from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench import harness

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
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


Git = Callable[..., str | None]     # git(*args) -> stdout stripped, or None when git fails


def row(record: dict, git: Git | None = None) -> str:
    """One table row: ``benchmark | headline | target | met | protocol | eval seeds | machine |
    code``. ``git`` runs git in the checkout (tests pass a fake or another repository)."""
    git = git or repo_git(ROOT)
    cells = [record.get("bench", "?"), _headline(record), _target(record), _met(record),
             _protocol(record), _eval_seeds(record), _machine(record), _code(record, git)]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


# -- numbers --------------------------------------------------------------------------------
def _fmt(value) -> str:
    """A figure at 3 significant digits (trailing zeros dropped); null or non-finite is a target
    that was never reached; a summary dict shows its median, a dict its items."""
    if value is None:
        return "not reached"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _num(float(value))
    if isinstance(value, dict):
        if "median" in value:
            return _fmt(value["median"])
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _num(v: float) -> str:
    if not math.isfinite(v):
        return "not reached"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    if -3 <= mag < 6:
        text = f"{round(v, 2 - mag):.{max(0, 2 - mag)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mant, exp = f"{v:.2e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# -- columns --------------------------------------------------------------------------------
def _headline(record: dict) -> str:
    if record.get("headline"):
        return record["headline"]
    text = "pre-protocol record, not re-run under the protocol"
    # one plain figure, if the first ratio is one (nested ratios of old records held sentinels)
    name, value = next(iter(record.get("ratios", {}).items()), (None, None))
    if isinstance(value, dict) and "median" in value:
        value = value["median"]
    if isinstance(value, int | float | None) and name is not None:
        text += f"; {name} {_fmt(value)}"
    return text


def _target(record: dict) -> str:
    return "; ".join(f"{k} {_fmt(v)}" for k, v in record.get("target", {}).items())


def _met(record: dict) -> str:
    if record.get("met"):
        return "yes"
    return "no (claimed yes)" if record.get("met_claimed") else "no"


def _protocol(record: dict) -> str:
    protocol = record.get("protocol")
    if not protocol:
        return "not recorded"
    violations = record.get("protocol_violations", [])
    text = "ok" if not violations else \
        f"{len(violations)} violation{'s' if len(violations) > 1 else ''}: " + \
        "; ".join(_short_violations(violations))
    tuning = protocol.get("tuning") or {}
    if tuning:
        inside = [arm for arm, rec in tuning.items() if rec.get("inside")]
        text += (f"; all {len(tuning)} tuned winners inside their grids"
                 if len(inside) == len(tuning)
                 else f"; {len(inside)}/{len(tuning)} tuned winners inside their grids")
    else:
        text += "; nothing tuned" + (" (overhead)" if protocol.get("kind") == "overhead" else "")
    return text


_SHORT = [  # harness.Protocol.violations() messages -> (pattern, short form)
    (r"^(?P<arm>.+?): tuned winner .* on the edge of ", "winner on grid edge ({arm})"),
    (r"^(?P<n>\d+) evaluation seeds; ", "{n} eval seeds"),
    (r"^evaluation seeds .* also used for tuning", "eval seeds also tuned on"),
    (r"^claim (?P<name>.+) rests on (?P<n>\d+) paired seeds", "claim {name} on {n} seeds"),
    (r"^tuning budgets differ", "tuning budgets differ"),
    (r"^no arm records how it was tuned", "tuning not recorded"),
    (r"^needs >= 2 problems", "needs 2 problems, one standard"),
    (r"^no paired per-seed comparison", "no paired claim"),
    (r"^stopping_rule and timed_region", "stopping rule or timed region unstated"),
    (r"^kind must be", "unknown kind"),
    (r"^no protocol recorded", "no protocol"),
]


def _short_violations(violations: list[str]) -> list[str]:
    """Short forms, in order; edge winners of several arms share one entry."""
    out: list = []
    edge_arms: list[str] = []
    for v in violations:
        for pattern, short in _SHORT:
            m = re.match(pattern, v)
            if m and "arm" in m.groupdict():
                edge_arms.append(m["arm"])
                if len(edge_arms) == 1:
                    out.append(EDGE)                       # filled once every arm is known
            elif m:
                out.append(short.format(**m.groupdict()))
            if m:
                break
        else:
            out.append(_short(v, 60))
    return [f"winner on grid edge ({', '.join(edge_arms)})" if s is EDGE else s for s in out]


EDGE = object()                     # where the one "winner on grid edge (...)" entry goes


def _eval_seeds(record: dict) -> str:
    protocol = record.get("protocol")
    if not protocol:
        return "not recorded"
    text = str(len(protocol.get("eval_seeds", [])))
    claims = protocol.get("claims") or {}
    name = record.get("main_claim")
    if name not in claims:                   # records name their main claim, else the first
        name = next(iter(claims), None)
    if name is None:
        return text + "; no claim"
    claim = claims[name]
    what = "difference" if claim.get("kind") == "difference" else "ratio"
    return f"{text}; worst-seed {what} {_fmt(claim.get('worst'))}"


def _machine(record: dict) -> str:
    machine = record.get("machine", {})
    text = f"{machine.get('nproc')} cores"
    if machine.get("cuda"):
        text += f", {machine['cuda']}"
    load = machine.get("load_average")
    if load:
        text += f", load {_fmt(load[0])}"
    return text


def _code(record: dict, git: Git) -> str:
    source = record.get("provenance") or {}
    commit = str(source.get("commit") or record.get("commit", "")).split("+")[0]
    dirty = source.get("dirty") if source else str(record.get("commit", "")).endswith("+dirty")
    sha8 = commit[:8] or "unknown"
    if dirty is None:
        return f"{sha8} (dirty state unknown)"
    if not dirty:
        return sha8
    files = source.get("dirty_files") or {}
    head = git("rev-parse", "HEAD") if files else None   # no file list: nothing to verify
    if head and all(_blob_at_head(git, path, blob) for path, blob in files.items()):
        changed = _changed_since(git, commit, set(files))
        if changed == []:
            return f"{sha8}+dirty, verified at {head[:8]}"
        if changed:
            return f"{sha8}+dirty (unverified: {len(changed)} other files changed since)"
    return f"{sha8}+dirty (unverified)"


def _changed_since(git: Git, commit: str, dirty: set[str]) -> list[str] | None:
    """Measured code the recorded commit held that HEAD no longer holds: files under the
    provenance's paths changed between the two, other than the recorded dirty files (None if
    git does not know the commit)."""
    out = git("diff", "--name-only", commit, "HEAD", "--", *PROVENANCE_PATHS)
    if out is None:
        return None
    return [path for path in out.splitlines() if path and path not in dirty]


PROVENANCE_PATHS = harness.PROVENANCE_PATHS


def _blob_at_head(git: Git, path: str, blob: str) -> bool:
    """HEAD holds exactly the recorded file: the same blob, or no file where it was deleted."""
    at_head = git("rev-parse", "--verify", "--quiet", f"HEAD:{path}")
    return at_head is None if blob == "deleted" else at_head == blob


def repo_git(root: pathlib.Path) -> Git:
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root,
                                  timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None
    return git


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def main() -> None:
    records = [json.loads(p.read_text()) for p in sorted((HERE / "results").glob("*.json"))
               if not p.name.endswith(".smoke.json")]
    git = repo_git(ROOT)
    (HERE / "README.md").write_text(HEADER + "\n".join(row(r, git) for r in records) + "\n")


if __name__ == "__main__":
    main()
