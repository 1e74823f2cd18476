"""A Tune trial's run directories: its own, then one per PBT restart (``NAME-fromSTEP``, the
donor's checkpoint step), stitched into one history. The sweep names them; the sweep's
results and the comparison report read them, so the layout lives here, below both."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pyarrow.fs

from raytrain_eff.engine import records, storage

RESTART = "-from"  # NAME-from00000040: the trial restarted at step 40 from a donor's weights


def segment_name(run_name: str, step: int) -> str:
    """The run directory of ``run_name`` restarted from a checkpoint at ``step``."""
    return f"{run_name}{RESTART}{step:08d}"


def is_restart(name: str) -> bool:
    return RESTART in name


def segments(trials_dir: str, run_name: str) -> list[tuple[int, str]]:
    """(first step, directory name) of a trial's runs: its own, then one per PBT restart."""
    fs, root = storage.filesystem(trials_dir)
    out = []
    prefix = run_name + RESTART
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        name = info.base_name
        if name == run_name:
            out.append((0, name))
        elif name.startswith(prefix) and name[len(prefix) :].isdigit():
            out.append((int(name[len(prefix) :]), name))
    return sorted(out)


def stitched(
    trials_dir: str, run_name: str, config_of: Callable[[str], dict | None] = lambda run_dir: None
) -> tuple[pd.DataFrame, list[dict]]:
    """(a trial's rows, its config history). After PBT exploits, each segment replaces what
    followed its first step; ``config_of(run_dir)``: the values a segment ran with (None: not
    known), which its rows carry as ``config/KEY`` columns."""
    frame, history = pd.DataFrame(), list[dict]()
    for start, name in segments(trials_dir, run_name):
        values = config_of(storage.join(trials_dir, name))
        if values is not None and (
            not history or {k: v for k, v in history[-1].items() if k != "from_step"} != values
        ):
            history.append({"from_step": start, **values})
        table = records.read_table(storage.join(trials_dir, name))
        if table is None:
            continue
        part = table.to_pandas()
        for k, v in (values or {}).items():
            part[f"config/{k}"] = v
        if len(frame):
            frame = frame[frame.step < part.step.min()]
        frame = pd.concat([frame, part], ignore_index=True)
    if "samples" in frame:  # one row per step: the running total the trial trained on
        frame["samples_seen"] = frame["samples"].cumsum()
    return frame, history


def trial_steps(trials_dir: str, run_name: str) -> pd.DataFrame:
    """A trial's rows, stitched over its PBT restarts."""
    return stitched(trials_dir, run_name)[0]
