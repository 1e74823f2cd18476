"""Seeded random streams keyed by integers or names: the same keys give the same stream on any
machine (batches by step, initial weights by module name: engine.materialize)."""

from __future__ import annotations

import hashlib

import torch


def step_generator(seed: int, *keys: int | str) -> torch.Generator:
    """A generator whose stream depends only on (seed, keys): same step, same batch."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return gen
