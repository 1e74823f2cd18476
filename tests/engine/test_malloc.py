"""The fsdp worker's malloc settings: on glibc a freed large buffer leaves RSS at once."""

import os
import platform
import subprocess
import sys

import pytest

# a fresh interpreter frees an 8 MiB tensor twice (glibc then serves it from the heap) and
# prints the MiB still resident after the third free
FREED = """
import sys, torch
from raytrain_eff.engine import malloc
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * 4096
print(malloc.return_freed_buffers() if sys.argv[1] == 'fix' else {})
for _ in range(3):
    x = torch.empty(8 << 20, dtype=torch.uint8).fill_(1); del x
base = rss()
x = torch.empty(8 << 20, dtype=torch.uint8).fill_(1); del x
print((rss() - base) >> 20)
"""
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


def _resident_after_free(arm: str, env: dict) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FREED, arm], env=env, check=True, capture_output=True, text=True
    ).stdout.split("\n")
    return out[0], int(out[1])


@glibc
def test_on_glibc_freed_buffers_leave_rss_and_env_settings_win():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _resident_after_free("none", env)[1] >= 8  # glibc's dynamic threshold
    applied, resident = _resident_after_free("fix", env)
    assert applied == "{'MALLOC_MMAP_THRESHOLD_': 65536, 'MALLOC_ARENA_MAX': 2}"
    assert resident == 0
    applied, _ = _resident_after_free("fix", {**env, "MALLOC_ARENA_MAX": "4"})
    assert applied == "{'MALLOC_MMAP_THRESHOLD_': 65536}"
