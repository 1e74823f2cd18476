"""World-size-independent checkpoints: a manifest, replicated state from rank 0, RNG per rank.

Layout of one checkpoint directory::

    manifest.json   format, step, world size, attempt, samples seen, sha256 of rank-0 files
    model.pt        model state dict (replicated across ranks)
    optimizer.pt    optimizer state dict (methods that shard it gather it first)
    methods.pt      {method name: method.state_dict()} (world-size independent by contract)
    rng_rank<r>.pt  torch (and CUDA) RNG state of rank r

Every rank writes its files into a local temporary directory and hands it to
``ray.train.report``; Ray registers the checkpoint only once all ranks have reported and
uploaded, so a crash mid-write never leaves a registered checkpoint. The manifest is
written last and checked on load. Everything loads with ``weights_only=True``: no pickled
code runs. A run saved with P ranks resumes with P' ranks: replicated state is shared, and
ranks without an RNG file are seeded from (seed, step, rank).
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import torch

FORMAT = 1
REPLICATED = ("model.pt", "optimizer.pt", "methods.pt")


class CheckpointError(RuntimeError):
    """A checkpoint that is incomplete, corrupted or of an unknown format."""


def dir_name(step: int) -> str:
    return f"checkpoint_step{step:08d}"


def save(directory: pathlib.Path, *, rank: int, world_size: int, step: int, attempt: int,
         model, optimizer, methods, extra: dict | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, directory / f"rng_rank{rank}.pt")
    # methods may gather sharded state collectively: every rank calls state_dict()
    method_states = {m.name: m.state_dict() for m in methods}
    optimizer_state = optimizer.state_dict()
    if rank != 0:
        return
    torch.save(model.state_dict(), directory / "model.pt")
    torch.save(optimizer_state, directory / "optimizer.pt")
    torch.save(method_states, directory / "methods.pt")
    manifest = {"format": FORMAT, "step": step, "world_size": world_size, "attempt": attempt,
                "files": {n: _digest(directory / n) for n in REPLICATED}, **(extra or {})}
    tmp = directory / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(directory / "manifest.json")


def save_local(run_dir: str, *, keep: int, **save_args) -> pathlib.Path:
    """Single-process runs: write into ``run_dir`` via a temporary name, keep the newest
    ``keep``."""
    root = pathlib.Path(run_dir)
    final = root / dir_name(save_args["step"])
    tmp = root / (final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp, **save_args)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(root.glob("checkpoint_step*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: str) -> pathlib.Path | None:
    """The newest complete checkpoint (valid manifest) in a local run directory, or None."""
    for directory in sorted(pathlib.Path(run_dir).glob("checkpoint_step*[0-9]"), reverse=True):
        try:
            read_manifest(directory)
            return directory
        except CheckpointError:
            continue  # an incomplete checkpoint: fall back to the one before
    return None


def read_manifest(directory: pathlib.Path) -> dict:
    path = pathlib.Path(directory) / "manifest.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: no manifest.json (incomplete checkpoint)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{directory}: checkpoint format {manifest.get('format')!r}; "
                              f"this version reads format {FORMAT}")
    for name, expected in manifest["files"].items():
        if not (pathlib.Path(directory) / name).is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if _digest(pathlib.Path(directory) / name) != expected:
            raise CheckpointError(f"{directory}: {name} does not match its manifest checksum")
    return manifest


def load(directory: pathlib.Path, *, rank: int, seed: int, model, optimizer, methods,
         device: torch.device | str = "cpu") -> dict:
    """Restore in place; returns the manifest (its ``step`` is the next step to run)."""
    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    model.load_state_dict(_load(directory / "model.pt", device))
    states = _load(directory / "methods.pt", device)
    for m in methods:  # method state first: it may re-shape the optimizer's parameters
        if m.name in states:
            m.load_state_dict(states[m.name])
    optimizer.load_state_dict(_load(directory / "optimizer.pt", device))
    rng_file = directory / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        rng = _load(rng_file, torch.device("cpu"))
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:  # a new rank after a world-size change
        torch.manual_seed(hash((seed, manifest["step"], rank)) & 0x7FFFFFFF)
    return manifest


def load_model_state(directory: pathlib.Path) -> dict:
    read_manifest(directory)
    return _load(pathlib.Path(directory) / "model.pt", torch.device("cpu"))


def load_method_states(directory: pathlib.Path) -> dict:
    return _load(pathlib.Path(directory) / "methods.pt", torch.device("cpu"))


def _load(path: pathlib.Path, device):
    return torch.load(path, map_location=device, weights_only=True)


def _digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
