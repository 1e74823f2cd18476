"""Which code a run ran: the git commit and whether the working tree differed from it.

It must be read where the checkout is -- the submitting side. ``ray job submit --working-dir .``
uploads the files without ``.git``, so a driver on the cluster cannot ask git; the submitter
hands the answer over in two environment variables instead::

    RAYTRAIN_EFF_COMMIT=<40 hex digits>   RAYTRAIN_EFF_DIRTY=0|1

``raytrain-eff train|tune`` set them from the checkout it is started in (unless already set),
and ``raytrain-eff provenance`` prints a runtime env that carries them through ``ray job
submit --runtime-env-json``. ``current()`` reads, in order: the variables, git in the current
directory, git beside this package, else ``commit: "unknown"``. ``summary.json`` records the
result as ``commit``, ``dirty`` and ``commit_source`` (``submitter`` | ``git`` | ``unknown``).
"""

from __future__ import annotations

import os
import pathlib
import subprocess

ENV_COMMIT = "RAYTRAIN_EFF_COMMIT"
ENV_DIRTY = "RAYTRAIN_EFF_DIRTY"
UNKNOWN = {"commit": "unknown", "dirty": None, "commit_source": "unknown"}


def from_git(where: str | os.PathLike) -> dict | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``where``; None outside git.

    Dirty means a tracked file differs from HEAD (staged or not); untracked files (run
    outputs, caches) do not count.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, cwd=where, timeout=10
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty} if commit else None


def from_env(environ=os.environ) -> dict | None:
    commit = environ.get(ENV_COMMIT)
    if not commit:
        return None
    dirty = environ.get(ENV_DIRTY)
    return {"commit": commit, "dirty": None if dirty is None else dirty not in ("0", "", "false")}


def current(environ=os.environ) -> dict:
    """The run's provenance for ``summary.json`` (see the module docstring for the order)."""
    handed = from_env(environ)
    if handed is not None:
        return {**handed, "commit_source": "submitter"}
    for where in (pathlib.Path.cwd(), pathlib.Path(__file__).resolve().parent):
        found = from_git(where)
        if found is not None:
            return {**found, "commit_source": "git"}
    return dict(UNKNOWN)


def env_vars(where: str | os.PathLike = ".") -> dict[str, str]:
    """The variables that carry the provenance of the checkout at ``where``; {} outside git."""
    found = from_git(where)
    if found is None:
        return {}
    return {ENV_COMMIT: found["commit"], ENV_DIRTY: "1" if found["dirty"] else "0"}


def export_from_checkout(where: str | os.PathLike = ".", environ=os.environ) -> None:
    """Set the variables from the checkout at ``where`` unless the submitter already did, so
    a run started here records them and a Ray job or Tune trial it starts inherits them."""
    if environ.get(ENV_COMMIT):
        return
    environ.update(env_vars(where))


def runtime_env(base: dict | None = None, where: str | os.PathLike = ".") -> dict:
    """``base`` (a runtime env, e.g. clusters/runtime_env.yaml) plus the provenance variables."""
    env = dict(base or {})
    env["env_vars"] = {**env.get("env_vars", {}), **env_vars(where)}
    return env
