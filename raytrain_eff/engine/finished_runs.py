"""Work with finished runs without Ray: evaluate, export, sample from the latest checkpoint."""

from __future__ import annotations

import pathlib

import torch

from raytrain_eff import catalog
from raytrain_eff.engine import checkpoint, storage
from raytrain_eff.engine.launch import load_run_config
from raytrain_eff.engine.runner import build_task
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.typed import ConfigError


def latest_checkpoint(run_dir: str) -> pathlib.Path:
    """The newest complete checkpoint (valid manifest) in a local run directory."""
    directory = checkpoint.newest_verified(storage.resolve(run_dir))
    if directory is not None:
        return directory
    raise ConfigError(f"{run_dir}: no complete checkpoint (checkpoint_step*/manifest.json)")


def restore(run_dir: str):
    """(config, task, model, methods) with the latest checkpoint's weights and method state."""
    cfg = load_run_config(run_dir)
    task = build_task(cfg)
    task.load()
    torch.manual_seed(cfg.run.seed)
    model = task.build_model()
    methods = catalog.create_methods(cfg.methods)
    ctx = MethodContext(
        total_steps=cfg.run.steps,
        loss_fn=task.loss,
        task=task,
        next_batch=lambda: task.train_batch(0, 0, 0, 1, cfg.data.batch_size),
    )
    for m in methods:
        model = m.prepare(model, ctx)
    directory = latest_checkpoint(run_dir)
    checkpoint.load_model(directory, model)  # into the model's own tensors: one copy
    states = checkpoint.load_method_states(directory)
    for m in methods:
        if m.name in states:
            m.load_state_dict(states[m.name])
    return cfg, task, model, methods, directory


def evaluate_run(run_dir: str) -> dict:
    cfg, task, model, _, directory = restore(run_dir)
    metrics = task.evaluate(model, cfg.data.batch_size, cfg.run.eval_batches)
    return {"checkpoint": str(directory), **metrics}


def export_run(run_dir: str, out: str) -> str:
    _, _, model, methods, directory = restore(run_dir)
    for m in methods:
        model = m.export(model)
    torch.save(model.state_dict(), out)
    return (
        f"wrote {out} ({sum(t.numel() for t in model.state_dict().values()):,} values) "
        f"from {directory}"
    )


def sample_run(run_dir: str, prompt: str, chars: int, temperature: float, seed: int) -> str:
    cfg, task, model, _, _ = restore(run_dir)
    if not hasattr(task, "sample"):
        raise ConfigError(f"task '{cfg.task.name}' does not generate text; sampling needs task lm")
    model.eval()
    return task.sample(model, prompt, chars, temperature, seed)
