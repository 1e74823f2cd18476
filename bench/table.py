"""Generate bench/README.md from bench/results/*.json (smoke results excluded): per result the
worst of all its claims, the load, and whether its code is the code at HEAD."""

from __future__ import annotations

import json
import math
import pathlib
import re
import subprocess
import sys
from collections.abc import Callable, Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench import harness

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
HEADER = """# Benchmarks

Each `bench/<name>.py` runs a method and its baselines in one run and writes
`bench/results/<name>.json`. `--smoke` runs a script end to end in seconds (the tests run
every smoke mode; smoke records are never claims). This file is generated from those JSONs by
`python bench/table.py`; do not edit it by hand.

## The protocol (enforced by `bench/harness.py`)

A benchmark exists to survive a skeptic who re-runs it with their own baseline. A script states
no verdict: it hands `harness.write_result` its `Protocol` (arms, claims with their per-seed
data), and the harness derives `met`: every claim met by its own data and no
`protocol_violations` (listed in the JSON).

1. **Claims state their test.** Each `Claim` names its arm and baseline arm, its metric, its
   kind (a paired `ratio` or `difference`, or a `bound` on the arm's own figures), its
   threshold and its statistic: the worst seed, or the bootstrap 90% lower bound of the mean
   (`bootstrap_lower_90`), must be strictly past the threshold. A claim may be informational
   (`required: false`) or count towards a group's quorum (`protocol.quorum`); both are recorded.
2. **Same tuning for every arm.** Each arm's hyper-parameter goes through
   `harness.tune_bracketed`: the same grid size (`budget`) for every arm, scored on tuning seeds
   and validation data only. The winner must lie strictly inside the grid; on an edge the grid
   is extended past that edge by its own spacing and searched again. The JSON keeps every grid,
   every score, the winner and its position (`protocol.tuning`). An arm with nothing to tune
   records why (`protocol.untuned`); overhead benchmarks too.
3. **One stopping rule and one timed region** per claim: every arm carries a `StoppingRule`
   (`kind` target or budget, `metric`, `target`, `cadence`) and a `TimedRegion` (`includes`,
   `excludes`); the two arms of a claim must carry equal ones.
4. **Seeds and splits.** Tuning seeds and evaluation seeds are disjoint; paired claims rest on
   at least 5 evaluation seeds. Selection uses a validation split; reported quality a test
   split that selection never saw.
5. **More than one problem**, one of them standard and not chosen by the method's authors
   (`protocol.problems`, `standard: true`).
6. **The best honest baseline.** Every baseline implements the same maths as well as we
   implement the method (in place, fused, nothing computed twice); a stronger maintained
   library is an arm. `protocol.baselines` says why each is fair.
7. **Reference defaults.** Methods run at their reference implementation's semantics; every
   departure is a named option listed in `protocol.departures`.
8. **Honest units.** Wall-clock beside hardware-independent counts (steps, passes, FLOPs).
   "Effective FLOPs" are what an ideal sparse kernel would do, not what ran on this CPU.
9. **A quiet machine.** Arms alternate within a seed so noise falls on all of them; `load`
   records the load averages at the start and end of the run with the core count, and the CPU
   time other processes took during the run (the machine's busy time less this run's process
   tree's): a run where others took more than a quarter of the cores is flagged
   (`load.overloaded`, and below). The averages alone would flag a run for the minutes of
   work before it, and for its own ranks.
10. **Results at HEAD.** A result's measured code is the package and the bench files its run
    loaded or started (`provenance.paths`). A result from a tree where any of those differs
    from HEAD is a draft: `status: "draft"`, `met: null`, the files in `draft_files` (each with
    its blob in `provenance`). The table below says whether a result's code is the code at
    HEAD: its commit is an ancestor of HEAD and no measured file changed since.

A non-finite figure (a target never reached, a diverged run) is written as `null`, and shown
below as "not reached". Records written before the harness derived `met` (no `harness`
field) are shown as *legacy*: not verified at HEAD, to be re-run.

## Results

The claims column shows the worst claim of each result, over all its claims, informational
ones included (failed claims first, required before informational, then the smallest margin
past its threshold).

| benchmark | headline | met | claims (worst of all) | protocol | eval seeds | load | code at HEAD |
|---|---|---|---|---|---|---|---|
"""


Git = Callable[..., str | None]  # git(*args) -> stdout stripped, or None when git fails


def row(record: dict, git: Git | None = None) -> str:
    """One table row: ``benchmark | headline | met | claims | protocol | eval seeds | load |
    code at HEAD``. ``git`` runs git in the checkout (tests pass another repository)."""
    git = git or repo_git(ROOT)
    cells = [
        record.get("bench", "?"),
        _headline(record),
        _met(record),
        _claims(record),
        _protocol(record),
        _eval_seeds(record),
        _load(record),
        _code(record, git),
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def legacy(record: dict) -> bool:
    """Written by the first harness, which took the script's verdict."""
    return "harness" not in record


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


def _met(record: dict) -> str:
    if legacy(record):
        return f"legacy ({_fmt(bool(record.get('met')))} by the script's own verdict)"
    if record.get("status") == "draft":
        n = len(record.get("draft_files", []))
        return f"draft: {n} uncommitted file{'s' if n != 1 else ''}"
    return _fmt(bool(record.get("met")))


def _claims(record: dict) -> str:
    """The worst claim over all of them: unmet claims first (required before informational),
    then the smallest margin."""
    claims = (record.get("protocol") or {}).get("claims") or {}
    if not claims:
        return "no claim"
    judged = {name: c if "met" in c else _legacy_claim(c) for name, c in claims.items()}
    name, worst = min(
        judged.items(),
        key=lambda kv: (
            kv[1]["met"],
            kv[1]["met"] or not kv[1].get("required", True),
            _margin(kv[1]),
        ),
    )
    met = sum(c["met"] for c in judged.values())
    side = "<" if worst.get("kind") == "bound" and worst.get("lower_is_better") else ">"
    statistic = (
        "90% lower bound" if worst.get("statistic") == "bootstrap_lower_90" else "worst seed"
    )
    role = "" if worst.get("required", True) else " (informational)"
    return (
        f"{met}/{len(judged)} met; worst: {name}{role}: {statistic} "
        f"{_fmt(worst.get('value'))} (needs {side} {_fmt(worst.get('threshold'))})"
    )


def _legacy_claim(claim: dict) -> dict:
    """An old paired() record by its own rule, which reduces to the bootstrap bound against
    no-win (a winning worst seed implies a winning bound)."""
    threshold = 1.0 if claim.get("kind", "ratio") == "ratio" else 0.0
    return {
        **claim,
        "threshold": threshold,
        "value": claim.get("bootstrap_lower_90"),
        "statistic": "bootstrap_lower_90",
        "met": bool(claim.get("wins")),
    }


def _margin(claim: dict) -> float:
    """How far past its threshold a claim's statistic lies, without units: a log ratio for
    ratios and positive bounds, else the difference over the figures' scale."""
    value, threshold = claim.get("value"), claim.get("threshold")
    if value is None or threshold is None:  # a null figure was never reached
        return -math.inf
    lower = claim.get("kind") == "bound" and claim.get("lower_is_better")
    if claim.get("kind") in ("ratio", "bound") and value > 0 and threshold > 0:
        margin = math.log(value / threshold)
        return -margin if lower else margin
    scale = max(
        [abs(v) for v in claim.get("per_seed") or [] if v is not None] + [abs(threshold), 1e-12]
    )
    return (threshold - value if lower else value - threshold) / scale


def _protocol(record: dict) -> str:
    protocol = record.get("protocol")
    if not protocol:
        return "not recorded"
    violations = record.get("protocol_violations", [])
    text = (
        "ok"
        if not violations
        else f"{len(violations)} violation{'s' if len(violations) > 1 else ''}: "
        + "; ".join(_short_violations(violations))
    )
    tuning = protocol.get("tuning") or {}
    if tuning:
        inside = [arm for arm, rec in tuning.items() if rec.get("inside")]
        text += (
            f"; all {len(tuning)} tuned winners inside their grids"
            if len(inside) == len(tuning)
            else f"; {len(inside)}/{len(tuning)} tuned winners inside their grids"
        )
    else:
        text += "; nothing tuned" + (" (overhead)" if protocol.get("kind") == "overhead" else "")
    untuned = protocol.get("untuned") or {}
    if untuned:
        text += f"; {len(untuned)} untuned with reasons"
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
    (r"^no claim backs", "no claim"),
    (r"^stopping_rule and timed_region", "stopping rule or timed region unstated"),
    (
        r"^claim (?P<name>.+?): arms (?P<a>.+) and (?P<b>.+) use different (?P<what>.+)$",
        "{a} and {b} differ in {what}",
    ),
    (r"^(?P<arm>[^:]+): neither tuned nor", "{arm} untuned without a reason"),
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
            if m and short.startswith("winner on grid edge"):
                edge_arms.append(m["arm"])
                if len(edge_arms) == 1:
                    out.append(EDGE)  # filled once every arm is known
            elif m:
                out.append(short.format(**m.groupdict()))
            if m:
                break
        else:
            out.append(_short(v, 60))
    return [f"winner on grid edge ({', '.join(edge_arms)})" if s is EDGE else s for s in out]


EDGE = object()  # where the one "winner on grid edge (...)" entry goes


def _eval_seeds(record: dict) -> str:
    protocol = record.get("protocol")
    return str(len(protocol.get("eval_seeds", []))) if protocol else "not recorded"


def _load(record: dict) -> str:
    """Load averages (1 min) at start and end over the cores, and other processes' share of
    the cores during the run; flagged when the harness judged the run loaded."""
    machine = record.get("machine", {})
    load = record.get("load")
    if load:
        text = f"{_fmt(load['start'][0])} → {_fmt(load['end'][0])} on {load['cores']} cores"
        if "others_share" in load:
            text += f", others {load['others_share']:.0%}"
        over = load.get("overloaded")
    else:  # legacy: one reading, when the JSON was written
        cores, reading = machine.get("nproc"), machine.get("load_average")
        if not reading:
            return f"not recorded ({cores} cores)"
        text = f"{_fmt(reading[0])} at the end on {cores} cores"
        over = cores is not None and max(reading) > cores
    if machine.get("cuda"):
        text += f", {machine['cuda']}"
    return text + (" — LOADED" if over else "")


def _code(record: dict, git: Git) -> str:
    """Whether the measured code is the code at HEAD: the recorded commit is an ancestor of
    HEAD, no measured file changed since, and a dirty run's files are HEAD's blobs."""
    source = record.get("provenance") or {}
    commit = str(source.get("commit") or record.get("commit", "")).split("+")[0]
    dirty = source.get("dirty") if source else str(record.get("commit", "")).endswith("+dirty")
    sha8 = commit[:8] or "unknown"
    label = sha8 + ("+dirty" if dirty else "")
    if legacy(record):
        return f"legacy record ({label}): not verified at HEAD"
    if dirty is None:
        return f"{sha8}: dirty state unknown, not verified"
    files = source.get("dirty_files") or {}
    if dirty and not files:
        return f"{label}: no file list, not verified"
    if git("merge-base", "--is-ancestor", commit, "HEAD") is None:
        return f"no: {label} is not an ancestor of HEAD"
    mismatched = [p for p, blob in files.items() if not _blob_at_head(git, p, blob)]
    if mismatched:
        return f"no: {label}, {len(mismatched)} measured files differ at HEAD"
    changed = _changed_since(git, commit, set(files), source.get("paths") or PROVENANCE_PATHS)
    if changed is None:
        return f"{label}: not verified (git failed)"
    if changed:
        return f"no: {label}, {len(changed)} other files changed since"
    return f"yes ({label})"


def _changed_since(
    git: Git, commit: str, dirty: set[str], paths: Sequence[str]
) -> list[str] | None:
    """Measured code the recorded commit held that HEAD no longer holds: files under the
    record's measured paths (all code, for records older than that list) changed between the
    two, other than the recorded dirty files (None if git does not know the commit)."""
    out = git("diff", "--name-only", commit, "HEAD", "--", *paths)
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
            proc = subprocess.run(
                ["git", *args], capture_output=True, text=True, cwd=root, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    return git


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def main() -> None:
    records = [
        json.loads(p.read_text())
        for p in sorted((HERE / "results").glob("*.json"))
        if not p.name.endswith(".smoke.json")
    ]
    git = repo_git(ROOT)
    (HERE / "README.md").write_text(HEADER + "\n".join(row(r, git) for r in records) + "\n")


if __name__ == "__main__":
    main()
