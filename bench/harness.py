"""Shared benchmark plumbing: the JSON record of DESIGN.md, machine facts, medians and spread.

Every ``bench/<name>.py`` builds its baseline and method figures in one run and hands them
to ``write_result``; ``met`` is computed by the script from raw per-seed numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


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
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def commit() -> str:
    """HEAD, with "+dirty" when tracked code differs from it (the figures are not HEAD's);
    earlier results under bench/results/ do not count."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=pathlib.Path(__file__).parent).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)bench/results")
        return git("rev-parse", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summary(values: list[float]) -> dict:
    """Median and spread of per-seed (or per-repetition) figures, raw values kept."""
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "spread": max(vals) - min(vals), "values": vals}


def write_result(name: str, *, config: dict, baseline: dict, method: dict, ratios: dict,
                 target: dict, met: bool, notes: str, smoke: bool, out: str | None = None,
                 extra: dict | None = None) -> pathlib.Path:
    record = {"bench": name, "machine": machine(), "commit": commit(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": smoke,
              "config": config, "baseline": baseline, "method": method, "ratios": ratios,
              "target": target, "met": bool(met), "notes": notes, **(extra or {})}
    path = pathlib.Path(out) if out else RESULTS / (f"{name}.smoke.json" if smoke else f"{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    tmp.replace(path)
    return path
