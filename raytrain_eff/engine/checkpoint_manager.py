"""Where a run starts, and its checkpoints saved and reported: one owner for the Runner.

A run starts from one of five places, a ``StartPoint``:

- ``fresh``: nothing to restore;
- ``own``: the run's own newest good checkpoint in its directory (the engine keeps them:
  local mode, ranks spawned without Ray);
- ``ray``: the checkpoint Ray hands a restart (``ray.train.get_checkpoint``), checked, with a
  fall-back to the good one before it (``checkpoint.choose``);
- ``chosen``: the one ``train --resume [--from-checkpoint]`` picked on the driver
  (``StartPoint.resumed``), unless this fit has written a newer one before a failover;
- ``donor``: another trial's checkpoint (a PBT exploit), when the run has none of its own.

The launcher asks for ``own`` (the default), ``chosen`` or ``donor``; ``CheckpointManager.choose``
resolves that against what the run holds into the start point it loads.

Saves go where the run keeps checkpoints: into the run directory through a ``.partial`` name
(the engine keeps them, every rank writing into one directory), or into a temporary directory
per rank that ``ray.train.report`` uploads. With ``run.checkpoint_async`` the shards are
copied at the step and written in the background while training goes on; at most one save
is in flight, completed (manifest written, checkpoint reported with its own step's metrics)
at the next report or when the run ends. Until then Ray sees nothing of that step.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, Literal

import torch.distributed as dist
from ray.train import Checkpoint  # imported with the engine, not at the first checkpoint

from raytrain_eff import collectives
from raytrain_eff.engine import checkpoint, storage

_MANAGERS = itertools.count()  # a key per manager for DCP's plan cache

Kind = Literal["fresh", "own", "ray", "chosen", "donor"]


@dataclasses.dataclass(frozen=True)
class StartPoint:
    """Where a run starts: asked for by the launcher, resolved by ``CheckpointManager.choose``
    (the kinds: this module's docstring)."""

    kind: Kind = "own"
    path: str | None = None  # chosen: a name in the run directory; resolved, donor: a URI
    existing: tuple[str, ...] = ()  # chosen: the run's checkpoint names when it was chosen
    revision: int = 0  # resolved: > 0 when newer names exist; new checkpoints take none of them

    @classmethod
    def donor(cls, uri: str) -> StartPoint:
        return cls("donor", uri)

    @classmethod
    def resumed(
        cls, run_dir: str, spec: str | None = None, warn: checkpoint.Warn = checkpoint._stderr
    ) -> StartPoint:
        """On the driver, for ``train --resume [--from-checkpoint SPEC]``: that checkpoint,
        verified (``checkpoint.resolve_start``); the run's own newest when it has none."""
        found = checkpoint.resolve_start(run_dir, spec, warn)
        if found is None:
            return cls()
        return cls("chosen", found["checkpoint"], tuple(found["existing"]))


@dataclasses.dataclass
class _Pending:
    saving: checkpoint.Saving
    directory: pathlib.Path  # where it is written
    final: pathlib.Path | None  # the engine keeps it: its name once complete
    name: str
    metrics: dict  # reported with it once it is complete


class CheckpointManager:
    """Chooses the start point, loads it, and saves and reports checkpoints for one rank.

    ``get_checkpoint``: Ray's (checkpoints go to Ray through ``report``); None: the engine
    keeps them in ``run_dir`` (every rank must see that directory). ``keep``: the newest
    checkpoints the engine keeps (Ray applies its own ``num_to_keep``).
    """

    def __init__(
        self,
        run_dir: str,
        *,
        rank: int,
        world: int,
        group,
        keep: int,
        background: bool = False,
        report: Callable[..., None],
        get_checkpoint: Callable[[], Any] | None = None,
        warn: checkpoint.Warn = checkpoint._stderr,
    ):
        self.run_dir, self.rank, self.world, self.group = run_dir, rank, world, group
        self.keep, self.background, self.warn = keep, background, warn
        self._report, self.get_checkpoint = report, get_checkpoint
        self.revision = 0
        self._pending: _Pending | None = None
        self._background_group = None
        # this manager's saves reuse DCP's plan while the layout holds (shards.CachedPlanner)
        self._plan_key = f"raytrain_eff-checkpoints-{next(_MANAGERS)}"

    @property
    def engine_keeps(self) -> bool:
        return self.get_checkpoint is None

    # -- start ---------------------------------------------------------------------------------
    def choose(self, start: StartPoint = StartPoint()) -> StartPoint:
        """The checkpoint to restore, verified, with a fall-back past bad ones (each named):
        the engine, not Ray, picks, since Ray hands every restart its latest, even corrupted."""
        if self.engine_keeps:
            pick, kind = checkpoint.newest_name(self.run_dir), "own"
        else:
            ckpt = self.get_checkpoint()  # type: ignore[misc]
            pick, kind = (None if ckpt is None else pathlib.PurePosixPath(ckpt.path).name), "ray"
        driver = None
        if start.kind == "chosen":
            driver = {"checkpoint": start.path, "existing": list(start.existing)}
        chosen = checkpoint.choose(self.run_dir, pick=pick, start=driver, warn=self.warn)
        if chosen is None:
            return start if start.kind == "donor" else StartPoint("fresh")
        self.revision = chosen.revision
        if start.kind == "chosen" and chosen.name == start.path:
            kind = "chosen"
        return StartPoint(kind, chosen.uri, revision=chosen.revision)  # type: ignore[arg-type]

    def load(self, start: StartPoint, **load_args) -> dict | None:
        """``start``'s checkpoint restored in place (``checkpoint.load``'s arguments, less
        ``rank`` and ``group``); its manifest, or None for a fresh start."""
        if start.path is None:
            return None
        with checkpoint.local_copy(storage.resolve(start.path)) as directory:
            return checkpoint.load(directory, rank=self.rank, group=self.group, **load_args)

    # -- save and report -----------------------------------------------------------------------
    def report(self, metrics: dict, save: dict | None = None) -> None:
        """Ray's report of ``metrics``; with ``save`` (``checkpoint.begin_save``'s arguments,
        less where and how) a checkpoint of ``save['step']`` goes with it, now or, written in
        the background, at the next report. A save still in flight completes first."""
        self.finish()
        if save is None:
            self._report(metrics)
            return
        pending = self._begin(save, metrics)
        if self.background:
            self._pending = pending
        else:
            self._complete(pending)

    def finish(self) -> None:
        """Complete the save in flight, if any (every rank: a collective)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._complete(pending)

    def _begin(self, save: dict, metrics: dict) -> _Pending:
        name = checkpoint.dir_name(save["step"], self.revision)
        final = None
        if self.engine_keeps:
            final = pathlib.Path(self.run_dir) / name
            directory = final.with_name(name + ".partial")  # never listed, so never resumed
            if self.rank == 0:
                shutil.rmtree(directory, ignore_errors=True)
            if self.world > 1:
                collectives.barrier(self.group)  # cleared before any rank writes into it
        else:  # this rank's files, for Ray's upload to merge with the other ranks'
            directory = pathlib.Path(tempfile.mkdtemp(prefix="raytrain_eff_ckpt_"))
        saving = checkpoint.begin_save(
            directory,
            rank=self.rank,
            world_size=self.world,
            group=self.group,
            background=self.background,
            background_group=self._writer_group() if self.background else None,
            shared=self.engine_keeps,
            plan_key=self._plan_key,
            **save,
        )
        return _Pending(saving, directory, final, name, metrics)

    def _complete(self, pending: _Pending) -> None:
        pending.saving.finish()  # every rank's shards on disk, then the manifest
        if pending.final is None:
            self._report(
                pending.metrics,
                checkpoint=Checkpoint.from_directory(str(pending.directory)),
                checkpoint_dir_name=pending.name,
            )
            shutil.rmtree(pending.directory, ignore_errors=True)  # uploaded
            return
        if self.rank == 0:
            shutil.rmtree(pending.final, ignore_errors=True)
            pending.directory.rename(pending.final)
            for old in checkpoint.listing(self.run_dir)[: -self.keep]:
                shutil.rmtree(pathlib.Path(self.run_dir) / old, ignore_errors=True)
        if self.world > 1:
            collectives.barrier(self.group)  # no rank reports a name rank 0 has not yet given
        self._report(pending.metrics, checkpoint=Checkpoint.from_directory(str(pending.final)))

    def _writer_group(self):
        """The background writer's own CPU group: its collectives run while training's run
        on ``group``, and two threads must not share one group's collectives."""
        if not dist.is_initialized():
            return None
        if self._background_group is None:
            ranks = dist.get_process_group_ranks(self.group or dist.group.WORLD)
            self._background_group = dist.new_group(
                ranks, backend="gloo", use_local_synchronization=True
            )
        return self._background_group
