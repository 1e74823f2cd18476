"""What the tests that run a real Prometheus share: its binaries, its HTTP API, waiting."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import time
import urllib.parse
import urllib.request

from timeouts import scaled

REPO = pathlib.Path(__file__).resolve().parents[1]
PROMETHEUS = REPO / ".test-deps" / "bin" / "prometheus"  # scripts/test-deps.sh fetches both
PROMTOOL = REPO / ".test-deps" / "bin" / "promtool"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, endpoint: str, **params) -> dict:
    url = f"{base}/api/v1/{endpoint}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check, timeout_s: float, proc: subprocess.Popen | None = None):
    """Poll ``check`` until it returns something true (returned), up to a scaled deadline."""
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: subprocess exited with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
