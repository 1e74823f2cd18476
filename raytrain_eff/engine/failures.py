"""A failed run told in one line: the root cause, the run directory, the full log, the fix.

Ray wraps a worker's exception in a ``WorkerGroupError`` (or a ``ControllerError``) whose text
is the whole traceback of every rank; the user needs the innermost exception's type and
message, and how to go on. The full traceback goes to the run's log file.
"""

from __future__ import annotations

import os
import traceback


class RunFailed(Exception):
    """A run that failed after it started; ``str()`` is the one-line account."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception: through Train's worker/controller errors, Ray's task errors
    (``.cause``) and ``raise ... from`` chains."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        failures = getattr(err, "worker_failures", None)
        inner = (
            failures[min(failures)]
            if failures
            else getattr(err, "controller_failure", None)
            or getattr(err, "cause", None)
            or err.__cause__
        )
        if not isinstance(inner, BaseException):
            break
        err = inner
    return err


def summary(err: BaseException) -> str:
    """'Type: message' with the message's last non-empty line (Ray appends tracebacks)."""
    cause = root_cause(err)
    name = type(cause).__name__
    # RayTaskError(ValueError) types are named after the user's class; show the user's name
    name = name.removeprefix("RayTaskError(").removesuffix(")")
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Traceback"):
        lines = lines[-1:]
    text = lines[0] if len(lines) == 1 else (lines[-1] if lines else "")
    prefix = f"{name}: "
    return text if text.startswith(prefix) else prefix + text


def write_log(path: str, err: BaseException) -> None:
    """Append the full traceback, and each failed rank's, to the run's log."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write("".join(traceback.format_exception(err)))
        for rank, failure in sorted((getattr(err, "worker_failures", None) or {}).items()):
            f.write(f"\n-- rank {rank} --\n" + "".join(traceback.format_exception(failure)))


def has_checkpoint(run_dir: str) -> bool:
    import pyarrow.fs

    from raytrain_eff.engine import storage

    fs, path = storage.filesystem(run_dir)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except OSError:
        return False
    return any(
        i.base_name.startswith("checkpoint_") and i.type == pyarrow.fs.FileType.Directory
        for i in infos
    )


def run_failed(
    err: BaseException, *, name: str, run_dir: str, log: str, max_failures: int
) -> RunFailed:
    """The ``RunFailed`` to raise for a Train error (after writing its traceback to ``log``)."""
    write_log(log, err)
    parts = [f"run '{name}' failed: {summary(err)}", f"run dir: {run_dir}", f"full log: {log}"]
    if has_checkpoint(run_dir):
        retry = " run.max_failures=2" if max_failures == 0 else ""
        parts.append(
            f"continue from its latest checkpoint with "
            f"`raytrain-eff train --resume {run_dir}{retry}`"
        )
        if max_failures == 0:
            parts.append(
                "run.max_failures=0, so Ray did not retry; N > 0 restarts failed "
                "workers from the latest checkpoint by itself"
            )
    else:
        parts.append("no checkpoint yet, so nothing to resume: fix the cause and start again")
    return RunFailed("; ".join(parts), err)
