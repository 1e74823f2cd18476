"""Make glibc hand freed large buffers back to the OS, so an FSDP worker's RSS stays flat.

FSDP all-gathers each unit's parameters into a fresh buffer and frees it after use. glibc's
malloc raises its mmap threshold to the size of every mmapped chunk it frees (up to 32 MiB),
so from the second step on those buffers come from the heap and, once freed, stay resident:
RSS grows to the largest gathered units and no longer measures what the worker holds. A fixed
threshold keeps every allocation of 64 KiB or more mmapped (freed means unmapped), and fewer
arenas keep freed small blocks from piling up per thread. The environment variables glibc
reads (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``; bench/shards.py sets them) win: a
setting given there is left alone. Elsewhere than glibc this is a no-op.
"""

from __future__ import annotations

import ctypes
import os

# mallopt parameters from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = {
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 65536),  # bytes; glibc default 128 KiB,
    "MALLOC_ARENA_MAX": (M_ARENA_MAX, 2),
}  # dynamic; default 8 x cores


def return_freed_buffers() -> dict[str, int]:
    """Apply the settings the environment does not give; returns those glibc accepted ({} off
    glibc). A rejected one is skipped: it costs memory readings, never the run."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl, macOS: their allocators differ
        return {}
    applied = {}
    for env, (param, value) in SETTINGS.items():
        if env in os.environ:
            continue
        if libc.mallopt(param, value) == 1:
            applied[env] = value
    return applied
