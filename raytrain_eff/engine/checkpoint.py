"""World-size-independent checkpoints: a manifest, the model in shards, RNG per rank.

Layout of one checkpoint directory (format 3)::

    manifest.json   format, step, world size, attempt, samples seen, sha256 of every file
    shards/         the model and the optimizer's state as torch.distributed.checkpoint
                    shards: every rank writes what it holds, a load reshards (engine.shards);
                    torch optimizers by parameter name, an optimizer that offers its own
                    shards (FOSI/DHO2's flat vectors, ``MethodOptimizer.sharded_state``) so
    optimizer.pt    the state of an optimizer with a layout of its own and no shards, whole
                    from rank 0 (the VR solvers; FOSI/DHO2 in older checkpoints, still read)
    methods.pt      {method name: method.state_dict()} (world-size independent by contract)
    rng_rank<r>.pt  torch (and CUDA) RNG state of rank r, gathered to rank 0

Every rank writes its files into a local temporary directory and hands it to
``ray.train.report``, which uploads them all into one checkpoint directory; Ray registers the
checkpoint only once all ranks have reported and uploaded; without Ray (local mode, ranks
spawned by ``engine.local_ranks``) every rank writes into one ``<name>.partial`` directory of
the run, renamed once complete (``engine.checkpoint_manager``). The manifest, written last by
rank 0 once every rank's shards are on disk (``begin_save`` then ``Saving.finish``; shards may
be written in the background), lists every rank's files with their checksums, so a checkpoint
that lost a rank's shard (a rank killed mid-save) fails verification and is never resumed
from. Nothing loads pickled
code (``weights_only=True``; DCP's metadata through a restricted unpickler). A run saved with
P ranks resumes with P' ranks under either strategy: shards are resharded on load, and ranks
without an RNG file are seeded from (seed, step, rank). Formats 1 and 2 (``model.pt`` and
``optimizer.pt`` whole, from rank 0) still load.

Choosing the checkpoint to resume from is the engine's, not Ray's: Ray hands every restart
its latest registered checkpoint, even a corrupted one (Train V2's ``CheckpointManager``
gives each new worker group ``latest_checkpoint_result``, restored from its snapshot on
``--resume``; ``ray.train.get_checkpoint()`` returns it). ``choose`` verifies it and falls
back to the newest good one before it, with a warning that names the bad file, in local
mode and with Ray workers alike. Checkpoints written after a fallback get a revision
suffix (``checkpoint_step00000020-r1``), so they never overwrite a checkpoint that Ray has
registered (Ray deletes by path when it retires one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import posixpath
import re
import sys
import tempfile
from collections.abc import Callable, Iterator

import pyarrow.fs
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from raytrain_eff import collectives
from raytrain_eff.engine import sharding, shards, storage
from raytrain_eff.methods.base import sharded_state
from raytrain_eff.tasks.base import step_generator
from raytrain_eff.typed import ConfigError

FORMAT = 3  # 3: model (and torch optimizers) as DCP shards; 2: every file in the checksums
READABLE = (1, 2, 3)
SHARDS = "shards"
MANIFEST = "manifest.json"
_NAME = re.compile(r"checkpoint_step(\d{8})(?:-r(\d+))?")

Warn = Callable[[str], None]


def _stderr(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class CheckpointError(ConfigError):
    """A checkpoint that is incomplete, corrupted or of an unknown format (one line on the
    command line)."""


def dir_name(step: int, revision: int = 0) -> str:
    return f"checkpoint_step{step:08d}" + (f"-r{revision}" if revision else "")


def order(name: str) -> tuple[int, int]:
    """(step, revision) of a checkpoint directory name; (-1, -1) for any other name."""
    m = _NAME.fullmatch(name)
    return (-1, -1) if m is None else (int(m.group(1)), int(m.group(2) or 0))


def listing(run_dir: str) -> list[str]:
    """Names of the checkpoint directories in ``run_dir`` (any storage), oldest first."""
    fs, path = storage.filesystem(storage.resolve(run_dir))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    found = fs.get_file_info(pyarrow.fs.FileSelector(path))
    names = [posixpath.basename(f.path) for f in found if f.type == pyarrow.fs.FileType.Directory]
    return sorted((n for n in names if order(n)[0] >= 0), key=order)


def save(directory: pathlib.Path, **save_args) -> None:
    """Every rank calls this and writes its own shards into ``directory``; rank 0 writes the
    rest, and the manifest last (``begin_save`` then ``finish``)."""
    begin_save(directory, **save_args).finish()


@dataclasses.dataclass
class Saving:
    """A save under way: every file but the manifest written, or (asynchronously) the shards
    still being written. ``finish`` (a collective) waits for every rank's shards to be on disk
    and only then has rank 0 write the manifest, so a rank that dies first leaves a directory
    that no resume picks."""

    directory: pathlib.Path
    rank: int
    world_size: int
    group: object
    writing: shards.Writing
    manifest: dict  # rank 0's, without the shards' checksums
    shared: bool  # every rank writes into this one directory (no upload merges them)

    def finish(self) -> None:
        written = self.writing.wait()
        # in a shared directory rank 0 checksums every rank's files once all are written (the
        # gather is then only the barrier); else each rank its own files, for the upload
        mine = {} if self.shared else written
        digests = {f"{SHARDS}/{n}": _digest(self.directory / SHARDS / n) for n in mine}
        everyones = _gather_to_rank0(digests, self.rank, self.world_size, self.group)
        if self.rank != 0:
            return
        if self.shared:
            everyones = [{f"{SHARDS}/{n}": _digest(p) for n, p in _files(self.directory / SHARDS)}]
        for digests in everyones:
            self.manifest["files"].update(digests)
        _durable_write(self.directory / MANIFEST, json.dumps(self.manifest, indent=1).encode())


def begin_save(
    directory: pathlib.Path,
    *,
    rank: int,
    world_size: int,
    step: int,
    attempt: int,
    model,
    optimizer,
    methods,
    group=None,
    extra: dict | None = None,
    background: bool = False,
    background_group=None,
    shared: bool = False,
    plan_key: str | None = None,
) -> Saving:
    """Every rank: what this step holds, captured now. Rank 0 writes the RNG states, method
    state and a whole optimizer's state; every rank starts writing its shards (with
    ``background``, in a thread, over ``background_group``: a process group of its own).
    ``group``: the ranks' process group (None: the default); ``shared``: all ranks write into
    ``directory`` itself, not each into its own directory for an upload to merge;
    ``plan_key``: saves that pass the same key reuse DCP's plan (``shards.CachedPlanner``)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    rngs = _gather_to_rank0(rng, rank, world_size, group)  # the manifest covers them all
    # methods may gather sharded state collectively: every rank calls state_dict()
    method_states = {m.name: m.state_dict() for m in methods}
    in_shards = shards.optimizer_in_shards(optimizer)
    optimizer_state = None if in_shards else optimizer.state_dict()  # may gather, too
    writing = shards.begin_save(
        directory / SHARDS,
        model,
        optimizer if in_shards else None,
        background_group if background else group,
        background,
        plan_key,
    )
    files: dict[str, str] = {}
    if rank == 0:
        for r, state in enumerate(rngs):
            files[f"rng_rank{r}.pt"] = _write(state, directory / f"rng_rank{r}.pt")
        files["methods.pt"] = _write(method_states, directory / "methods.pt")
        if optimizer_state is not None:
            files["optimizer.pt"] = _write(optimizer_state, directory / "optimizer.pt")
    manifest = {
        "format": FORMAT,
        "step": step,
        "world_size": world_size,
        "attempt": attempt,
        "files": files,
        **(extra or {}),
    }
    return Saving(directory, rank, world_size, group, writing, manifest, shared)


def _durable_write(path: pathlib.Path, data: bytes) -> None:
    """``data`` at ``path`` all at once: written and synced under a temporary name first."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _files(directory: pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    return sorted((p.name, p) for p in directory.iterdir() if p.is_file())


def _write(obj, path: pathlib.Path) -> str:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # durable before the manifest that vouches for it
    return _digest(path)


def _gather_to_rank0(obj, rank: int, world_size: int, group) -> list:
    """[obj of rank 0, obj of rank 1, ...] on rank 0 (a collective); [] on other ranks."""
    if world_size == 1:
        return [obj]
    if not (dist.is_available() and dist.is_initialized()):
        raise CheckpointError(
            f"saving from rank {rank} of {world_size} needs the process "
            f"group: rank 0 writes every rank's RNG state"
        )
    out: list | None = [None] * world_size if rank == 0 else None
    collectives.gather_object(obj, out, group, group_dst=0)
    return out or []


def newest_verified(run_dir: str, warn: Warn = _stderr) -> pathlib.Path | None:
    """The newest checkpoint of a local run directory whose files match its manifest, or
    None; the bad ones skipped on the way are named."""
    chosen = _newest_good(run_dir, listing(run_dir), warn)
    return None if chosen is None else pathlib.Path(run_dir) / chosen


def read_manifest(directory) -> dict:
    """The manifest of a checkpoint (local path or URI) once every file it lists matches its
    checksum; otherwise CheckpointError naming the file."""
    uri = storage.resolve(str(directory))
    fs, path = storage.filesystem(uri)
    if fs.get_file_info(posixpath.join(path, MANIFEST)).type != pyarrow.fs.FileType.File:
        raise CheckpointError(f"{uri}: no {MANIFEST} (incomplete checkpoint)")
    with fs.open_input_stream(posixpath.join(path, MANIFEST)) as f:
        try:
            manifest = json.loads(f.read())
        except ValueError as err:
            raise CheckpointError(f"{uri}/{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE:
        found = manifest.get("format") if isinstance(manifest, dict) else manifest
        raise CheckpointError(
            f"{uri}: checkpoint format {found!r}; this version reads "
            f"formats {', '.join(map(str, READABLE))}"
        )
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{uri}/{MANIFEST} lists no files")
    for name, expected in manifest["files"].items():
        file = posixpath.join(path, name)
        if fs.get_file_info(file).type != pyarrow.fs.FileType.File:
            raise CheckpointError(f"{uri}/{name} is missing")
        if _digest(fs, file) != expected:
            raise CheckpointError(f"{uri}/{name} does not match its manifest checksum")
    return manifest


@dataclasses.dataclass(frozen=True)
class Choice:
    name: str  # the checkpoint directory's name in the run directory
    uri: str
    revision: int  # for the checkpoints this attempt writes: never an existing name


def choose(
    run_dir: str, *, pick: str | None, start: dict | None = None, warn: Warn = _stderr
) -> Choice | None:
    """The checkpoint to restore: ``pick`` if it is good, else the newest good one before it,
    each bad one named; None when there is nothing to restore.

    ``pick``: the name of the checkpoint Ray hands this attempt (None: it has none); local
    runs pass ``newest_name(run_dir)``. ``start`` (``resolve_start``'s, from the driver) overrides
    ``pick`` unless ``pick`` was written after the driver chose: by an earlier attempt of
    this same fit, whose failover must resume from it.
    """
    names = listing(run_dir)
    if start and not (pick in names and pick not in start["existing"]):
        pick = start["checkpoint"]  # Ray's pick is older than the driver's choice, or gone
    if pick is None or order(pick)[0] < 0:
        return None
    older = [n for n in names if order(n) <= order(pick)]
    if pick not in older:  # registered with Ray, then deleted by hand
        warn(f"{storage.join(run_dir, pick)} is missing; falling back to the checkpoint before")
    name = _newest_good(run_dir, older, warn)
    if name is None:
        raise CheckpointError(
            f"{run_dir}: no usable checkpoint up to {pick} (checked: "
            f"{', '.join(older) or 'none'}); start a new run instead"
        )
    return Choice(name, storage.join(run_dir, name), _revision(names, name))


def newest_name(run_dir: str) -> str | None:
    """The name of the newest checkpoint directory on disk, unverified (``choose`` checks)."""
    names = listing(run_dir)
    return names[-1] if names else None


def resolve_start(run_dir: str, spec: str | None = None, warn: Warn = _stderr) -> dict | None:
    """On the driver, for ``train --resume [--from-checkpoint SPEC]``: the checkpoint to start
    from (SPEC: a directory or its name, or a step), verified, and the names that exist now.
    Without SPEC, the newest good one (bad ones are named); None when the run has none."""
    names = listing(run_dir)
    if spec is None:
        if not names:
            return None
        chosen = _newest_good(run_dir, names, warn)
        if chosen is None:
            raise CheckpointError(
                f"{run_dir}: none of its checkpoints is usable "
                f"({', '.join(names)}); start a new run instead"
            )
    else:
        chosen = _match(run_dir, spec, names)
        read_manifest(storage.join(run_dir, chosen))  # an explicit choice never falls back
    return {"checkpoint": chosen, "existing": names}


def _match(run_dir: str, spec: str, names: list[str]) -> str:
    spec = str(spec).rstrip("/")
    if spec.isdigit():
        found = [n for n in names if order(n)[0] == int(spec)]
    else:
        found = [n for n in names if n == posixpath.basename(spec)]
        parent = posixpath.dirname(storage.resolve(spec)) if "/" in spec else ""
        if parent not in ("", storage.resolve(run_dir).rstrip("/")):
            found = []  # a checkpoint of another run: not this run's trajectory
    if not found:
        raise CheckpointError(
            f"--from-checkpoint {spec}: no such checkpoint of {run_dir}; "
            f"give a step or one of: {', '.join(names) or '(none)'}"
        )
    return found[-1]


def _newest_good(run_dir: str, names: list[str], warn: Warn) -> str | None:
    bad: list[str] = []
    for name in reversed(names):
        try:
            read_manifest(storage.join(run_dir, name))
        except CheckpointError as err:
            bad.append(str(err))
            continue
        for reason in bad:
            warn(f"{reason}; resuming from the previous good checkpoint, {name}")
        return name
    for reason in bad:
        warn(reason)
    return None


def _revision(names: list[str], chosen: str) -> int:
    """0 unless checkpoints newer than ``chosen`` exist (a fallback, an explicit start): then
    one above every revision so far, so no name of this attempt is taken."""
    step = order(chosen)[0]
    if all(order(n)[0] <= step for n in names):
        return 0
    return 1 + max(order(n)[1] for n in names)


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[pathlib.Path]:
    """A checkpoint as a local directory: itself when local, else a temporary download."""
    fs, path = storage.filesystem(uri)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        yield pathlib.Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="raytrain_eff_restore_") as tmp:
        pyarrow.fs.copy_files(
            path, tmp, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
        )
        yield pathlib.Path(tmp)


def load(
    directory: pathlib.Path,
    *,
    rank: int,
    seed: int,
    model,
    optimizer,
    methods,
    device: torch.device | str = "cpu",
    group=None,
) -> dict:
    """Restore in place (every rank: shards are read collectively); returns the manifest (its
    ``step`` is the next step to run)."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    states = _load(directory / "methods.pt", device)
    for m in methods:  # method state first: it may re-shape the optimizer's parameters
        if m.name in states:
            m.load_state_dict(states[m.name])
    whole = "optimizer.pt" in manifest["files"]
    if manifest["format"] >= 3:
        _read_shards(
            directory, lambda d: shards.load(d, model, None if whole else optimizer, group)
        )
    else:  # model.pt whole, as formats 1 and 2 wrote it
        _legacy_model(model).load_state_dict(_load(directory / "model.pt", device))
    if whole:
        _legacy_optimizer(model, optimizer).load_state_dict(
            _load(directory / "optimizer.pt", device)
        )
    rng_name = f"rng_rank{rank}.pt"
    # format 1 left RNG files out of the checksums; from format 2 only checked files are read
    if rng_name in manifest["files"] or (
        manifest["format"] == 1 and (directory / rng_name).is_file()
    ):
        rng = _load(directory / rng_name, torch.device("cpu"))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:  # a new rank after a world-size change
        torch.manual_seed(step_generator(seed, manifest["step"], rank).initial_seed())
    return manifest


def _read_shards(directory: pathlib.Path, read: Callable[[pathlib.Path], None]) -> None:
    """``read(directory / SHARDS)``; DCP's many-line account of a failure becomes one line."""
    try:
        read(directory / SHARDS)
    except CheckpointException as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise CheckpointError(f"{directory}/{SHARDS} could not be read: {lines[-1]}") from err


def _legacy_model(model):
    """A loader of a whole model state dict: the model itself, or one that keeps each rank's
    slices of a sharded model."""
    return sharding.ShardedModelLoader(model) if sharding.is_sharded(model) else model


def _legacy_optimizer(model, optimizer):
    """A loader of a whole, integer-keyed optimizer state dict. An optimizer whose state is
    world-size independent (DHO2's flat vectors in an earlier checkpoint's optimizer.pt)
    loads it as it is."""
    if (
        sharding.is_sharded(model)
        and shards.optimizer_in_shards(optimizer)
        and not sharded_state(optimizer)
    ):
        return sharding.ShardedOptimizerLoader(model, optimizer)
    return optimizer


def load_model(directory: pathlib.Path, model) -> None:
    """The checkpoint's weights into ``model`` (one process, any format), in place."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if manifest["format"] >= 3:
        _read_shards(directory, lambda d: shards.load_model(d, model))
    else:
        model.load_state_dict(_load(directory / "model.pt", torch.device("cpu")))


def load_method_states(directory: pathlib.Path) -> dict:
    return _load(pathlib.Path(directory) / "methods.pt", torch.device("cpu"))


def _load(path: pathlib.Path, device):
    return torch.load(path, map_location=device, weights_only=True)


def _digest(fs: pyarrow.fs.FileSystem | pathlib.Path, path: str | None = None) -> str:
    """sha256 of a file: ``_digest(local_path)`` or ``_digest(filesystem, path)``."""
    if isinstance(fs, pathlib.Path):
        fs, path = pyarrow.fs.LocalFileSystem(), str(fs.absolute())
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
