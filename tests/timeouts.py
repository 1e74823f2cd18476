"""One factor for every wait in the tests.

A busy CI machine raises ``RAYTRAIN_EFF_TEST_TIMEOUT_FACTOR`` (say to 3) and every timeout
grows with it: pytest-timeout's limit and ``timeout`` markers (scaled in conftest) and the
waits inside tests, which go through :func:`scaled`. Tests never sleep for a fixed time to let
something happen; they poll for it until a scaled deadline.
"""

from __future__ import annotations

import os

ENV = "RAYTRAIN_EFF_TEST_TIMEOUT_FACTOR"


def factor() -> float:
    raw = os.environ.get(ENV, "1")
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{ENV}={raw!r}: expected a positive number such as 1 or 2.5")
    return value


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the machine's factor."""
    return seconds * factor()
