"""Shared benchmark plumbing: the fair-benchmark protocol of bench/README.md, enforced.

Every ``bench/<name>.py`` runs its method and baselines in one run and hands ``write_result``
its raw figures and a ``Protocol``: how each arm was tuned (``tune_bracketed``), the one
stopping rule and timed region, the tuning and evaluation seeds, the problems, and the paired
per-seed comparisons (``paired``) its claim rests on. ``write_result`` checks the protocol and
writes ``met = claimed and no violations``; the violations, if any, are in the JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import random
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
# the code a result depends on (generated files excluded); git pathspecs relative to ROOT
PROVENANCE_PATHS = ("raytrain_eff", "bench", ":(exclude)bench/results",
                    ":(exclude)bench/README.md")
MIN_EVAL_SEEDS = 5                    # a claim rests on at least this many paired evaluations
BOOTSTRAP_DRAWS = 10_000


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes: checks the script end to end in seconds (run by a test)")
    p.add_argument("--out", default=None, help="result JSON path (default bench/results/)")
    return p


def machine() -> dict:
    import torch
    return {"nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# -- provenance -----------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout


def provenance() -> dict:
    """HEAD, and every file under raytrain_eff/ and bench/ (tracked or not, results excluded)
    that differs from it, with its git blob hash: a dirty result names exactly the code it ran,
    so a later commit holding those blobs can be checked to be what was measured."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        lines = _git("status", "--porcelain", "--untracked-files=all", "--",
                     *PROVENANCE_PATHS).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None, "dirty_files": {}}
    dirty = {}
    for line in lines:
        path = line[3:].split(" -> ")[-1]
        full = ROOT / path
        dirty[path] = _git("hash-object", str(full)).strip() if full.is_file() else "deleted"
    return {"commit": head, "dirty": bool(dirty), "dirty_files": dirty}


# -- earlier results ---------------------------------------------------------------------------
def previous_records(name: str) -> list[tuple[str, dict]]:
    """The result a run replaces (read before it is overwritten) and, when it differs, the
    committed one: what a record's notes compare against."""
    path = RESULTS / f"{name}.json"
    committed = f"HEAD:{path.relative_to(ROOT)}"
    found: list[tuple[str, dict]] = []
    for label, read in (("Previous result", path.read_text),
                        ("Committed result", lambda: _git("show", committed))):
        try:
            record = json.loads(read())
        except (OSError, ValueError, subprocess.CalledProcessError):
            continue
        if not any(r.get("date") == record.get("date") for _, r in found):
            found.append((label, record))
    return found


def verdict_change(held: bool, met: bool) -> str:
    """How this run's verdict reads against an earlier record's."""
    if held:
        return "still holds. " if met else "no longer holds (a finding). "
    return "now holds. " if met else "still does not hold. "


def loaded_machine_note(consequence: str) -> str:
    """A sentence for a result's notes when the load average exceeded the cores, saying what
    that does to this benchmark's figures; empty on a quiet machine."""
    load, cores = os.getloadavg(), os.cpu_count() or 1
    if max(load) <= cores:
        return ""
    return (f"The machine was loaded (load average {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} over 1 / 5 / 15 min on {cores} cores): {consequence} ")


def near(value: float, target: float) -> str:
    """3 significant digits, saying so when rounding would hide which side of the target."""
    text = f"{value:.3g}"
    if text == f"{target:.3g}" and value != target:
        return ("just under " if value < target else "just over ") + text
    return text


# -- figures --------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict:
    """Median, mean, standard deviation and range of per-seed figures, raw values kept."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    return {"median": statistics.median(vals), "mean": statistics.fmean(vals) if finite == vals
            else math.inf, "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "spread": max(vals) - min(vals), "values": vals}


def paired(baseline: dict, method: dict, *, kind: str = "ratio", lower_is_better: bool = True,
           seed: int = 0) -> dict:
    """Paired per-seed comparison of ``method`` against ``baseline`` (seed -> figure).

    kind="ratio": per seed baseline/method when lower is better (time, steps), method/baseline
    otherwise; > 1 means the method wins. kind="difference": baseline - method (lower better)
    or method - baseline; > 0 means the method wins. ``wins`` needs the worst seed to win, or a
    90% bootstrap lower bound on the mean (geometric mean for ratios) above the no-win line.
    A figure that never reached its target is ``inf`` and counts against its arm.
    """
    seeds = sorted(set(baseline) & set(method))
    if set(baseline) != set(method):
        raise ValueError(f"paired: seeds differ: {sorted(baseline)} vs {sorted(method)}")
    b, m = ([float(d[s]) for s in seeds] for d in (baseline, method))
    if not lower_is_better:
        b, m = m, b
    if kind == "ratio":
        per_seed = [_ratio(x, y) for x, y in zip(b, m, strict=True)]
        logs = [math.log(r) if 0 < r < math.inf else (math.inf if r > 0 else -math.inf)
                for r in per_seed]
        bound = math.exp(_bootstrap_lower(logs, seed))
        line = 1.0
    elif kind == "difference":
        per_seed = [x - y for x, y in zip(b, m, strict=True)]
        bound, line = _bootstrap_lower(per_seed, seed), 0.0
    else:
        raise ValueError(f"paired: kind must be 'ratio' or 'difference', got {kind!r}")
    worst = min(per_seed)
    return {"kind": kind, "seeds": seeds, "per_seed": per_seed, **_centre(per_seed, kind),
            "worst": worst, "bootstrap_lower_90": bound,
            "wins": bool(worst > line or bound > line), "n": len(seeds)}


def _ratio(base: float, method: float) -> float:
    if math.isinf(base) and math.isinf(method):
        return 1.0                                   # neither reached: no evidence either way
    return math.inf if method == 0 or math.isinf(base) else base / method


def _centre(values: list[float], kind: str) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if kind == "ratio" and all(v > 0 for v in values) and finite == values:
        geo = math.exp(statistics.fmean(math.log(v) for v in values))
    else:
        geo = None
    return {"median": statistics.median(values), "geometric_mean": geo,
            "std": statistics.stdev(finite) if len(finite) > 1 else 0.0}


def _bootstrap_lower(values: list[float], seed: int) -> float:
    """10th percentile of the resampled mean (a one-sided 90% lower bound)."""
    if not values:
        return -math.inf
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(BOOTSTRAP_DRAWS))
    return means[int(0.1 * BOOTSTRAP_DRAWS)]


# -- tuning ---------------------------------------------------------------------------------
def tune_bracketed(arm: str, score: Callable[[float], Any], grid: Sequence[float], *,
                   max_widenings: int = 4, log: bool = True) -> dict:
    """Grid search over one hyper-parameter whose winner must lie strictly inside the grid.

    ``score(value)`` is evaluated on tuning seeds and validation data only; lower is better (a
    tuple compares lexicographically, e.g. (steps to target, final val loss); non-finite means
    diverged). If the winner sits on an edge, the grid is extended past that edge by its own
    spacing (geometric when ``log``) and searched again, up to ``max_widenings`` times. The
    record keeps every value tried, its score, the winner and its position.
    """
    values = sorted(float(v) for v in grid)
    if len(values) < 3:
        raise ValueError(f"tune_bracketed({arm}): a grid needs >= 3 values to bracket, "
                         f"got {values}")
    scores: dict[float, Any] = {}
    widenings = 0
    while True:
        for v in values:
            if v not in scores:
                scores[v] = score(v)
        winner = min(values, key=lambda v: _sortable(scores[v]))
        at = values.index(winner)
        if 0 < at < len(values) - 1 or widenings == max_widenings:
            break
        widenings += 1
        values.insert(0, _step(values[0], values[1], log)) if at == 0 else \
            values.append(_step(values[-1], values[-2], log))
    return {"arm": arm, "initial_grid": sorted(float(v) for v in grid), "grid": values,
            "scores": [_jsonable(scores[v]) for v in values], "winner": winner,
            "winner_index": at, "inside": 0 < at < len(values) - 1, "widenings": widenings,
            "budget": len(grid), "evaluations": len(scores)}


def _step(edge: float, neighbour: float, log: bool) -> float:
    return edge * (edge / neighbour) if log else edge + (edge - neighbour)


def _sortable(score: Any) -> tuple:
    parts = score if isinstance(score, tuple) else (score,)
    return tuple(p if isinstance(p, float | int) and math.isfinite(p) else math.inf
                 for p in parts)


def _jsonable(score: Any) -> Any:
    return list(score) if isinstance(score, tuple) else score


# -- the protocol -----------------------------------------------------------------------------
@dataclasses.dataclass(kw_only=True)
class Protocol:
    """What a skeptic needs to re-run the comparison, and what ``violations`` checks.

    ``kind="comparison"``: a method against tuned baselines (all rules apply).
    ``kind="overhead"``: the same workload with one component on and off (no tuning; the
    seeds are repetitions; one problem may do).
    """
    kind: str = "comparison"
    stopping_rule: str                       # one rule, the same for every arm
    timed_region: str                        # what the clock covers, the same for every arm
    tuning: dict[str, dict] = dataclasses.field(default_factory=dict)  # arm -> tune_bracketed
    untuned: dict[str, str] = dataclasses.field(default_factory=dict)  # arm -> why no tuning
    tuning_seeds: list[int] = dataclasses.field(default_factory=list)
    eval_seeds: list[int] = dataclasses.field(default_factory=list)
    problems: list[dict] = dataclasses.field(default_factory=list)  # {name, standard, why}
    baselines: dict[str, str] = dataclasses.field(default_factory=dict)  # arm -> why it's fair
    departures: dict[str, str] = dataclasses.field(default_factory=dict)  # option -> reference
    selection_split: str = "validation"
    report_split: str = "test"
    alternation: str = "arms alternate within each seed"
    claims: dict[str, dict] = dataclasses.field(default_factory=dict)  # name -> paired()

    def violations(self) -> list[str]:
        found = []
        if self.kind not in ("comparison", "overhead"):
            found.append(f"kind must be 'comparison' or 'overhead', got {self.kind!r}")
        if not self.stopping_rule.strip() or not self.timed_region.strip():
            found.append("stopping_rule and timed_region must be stated")
        if len(self.eval_seeds) < MIN_EVAL_SEEDS:
            found.append(f"{len(self.eval_seeds)} evaluation seeds; claims need "
                         f">= {MIN_EVAL_SEEDS}")
        if set(self.eval_seeds) & set(self.tuning_seeds):
            found.append(f"evaluation seeds {sorted(set(self.eval_seeds) & set(self.tuning_seeds))}"
                         " were also used for tuning")
        if self.kind == "comparison":
            found += self._comparison_violations()
        for name, claim in self.claims.items():
            if claim.get("n", 0) < MIN_EVAL_SEEDS:
                found.append(f"claim {name!r} rests on {claim.get('n', 0)} paired seeds")
        return found

    def _comparison_violations(self) -> list[str]:
        found = []
        for arm, rec in self.tuning.items():
            if not rec["inside"]:
                found.append(f"{arm}: tuned winner {rec['winner']} on the edge of "
                             f"{rec['grid']} after {rec['widenings']} widenings")
        budgets = {rec["budget"] for rec in self.tuning.values()}
        if len(budgets) > 1:
            found.append(f"tuning budgets differ between arms: "
                         f"{ {a: r['budget'] for a, r in self.tuning.items()} }")
        if not self.tuning and not self.untuned:
            found.append("no arm records how it was tuned")
        if len(self.problems) < 2 or not any(p.get("standard") for p in self.problems):
            found.append("needs >= 2 problems, one a standard problem the authors did not choose")
        if not self.claims:
            found.append("no paired per-seed comparison backs the claim")
        return found


def write_result(name: str, *, headline: str, config: dict, baseline: dict, method: dict,
                 ratios: dict, target: dict, met: bool, notes: str, smoke: bool,
                 out: str | None = None, extra: dict | None = None,
                 protocol: Protocol | None = None) -> pathlib.Path:
    """Write the JSON record; ``met`` is the script's verdict AND-ed with the protocol check.
    ``headline`` is one plain sentence with the claim's figures (2-3 significant digits)."""
    violations = protocol.violations() if protocol else ["no protocol recorded"]
    source = provenance()
    record = {"bench": name, "machine": machine(), "commit": commit_string(source),
              "provenance": source, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "smoke": smoke, "headline": headline, "config": config,
              "protocol": dataclasses.asdict(protocol) if protocol else None,
              "protocol_violations": violations,
              "met_claimed": bool(met), "met": bool(met) and not violations,
              "baseline": baseline, "method": method, "ratios": ratios, "target": target,
              "notes": notes, **(extra or {})}
    default = RESULTS / (f"{name}.smoke.json" if smoke else f"{name}.json")
    path = pathlib.Path(out) if out else default
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_finite(record), indent=2, default=_json_default,
                              allow_nan=False))
    tmp.replace(path)
    return path


def commit_string(source: dict) -> str:
    return source["commit"] + ("+dirty" if source["dirty"] else "")


def _finite(value: Any) -> Any:
    """Standard JSON: a non-finite figure (a target never reached, a diverged run) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, float | int):
        return float(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
