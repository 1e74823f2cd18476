"""Shared fixtures: one gloo rank pool and one Ray session for the whole test run."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from timeouts import scaled  # noqa: E402 (the tests' own helpers, found through the path above)

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# every Ray here is local: no preemption watcher, one actor process less at each worker-group
# start (engine.launch.ray_train_settings gives a CLI's local Ray the same)
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# runs started by tests write their Prometheus file_sd into a private dir, never into the
# machine's default /tmp/raytrain_eff/file_sd that a real Prometheus may read
os.environ.setdefault("RAYTRAIN_EFF_FILE_SD_DIR", tempfile.mkdtemp(prefix="rte-file-sd-"))


@pytest.fixture(scope="session")
def gloo():
    """``gloo.run(world, fn, *args)`` runs a module-level fn on `world` gloo ranks."""
    from gloo import GlooPool

    pool = GlooPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole run; num_cpus=4 so trial drivers and workers fit on 2 cores."""
    import socket

    import ray

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Train's clean-up queries the State API without an address; with other Ray instances
    # on the machine it must still find this one
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(
        num_cpus=4,
        dashboard_host="127.0.0.1",
        dashboard_port=port,
        include_dashboard=True,
        log_to_driver=True,
        _node_ip_address="127.0.0.1",
        # no idle worker processes per CPU at the start: Train's actors never use them
        # (engine.launch.ensure_ray starts a CLI's local Ray the same way)
        _system_config={"prestart_worker_first_driver": False},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def run_cfg(tmp_path, request):
    """Load a preset with overrides into a unique run name and a tmp storage path."""
    from raytrain_eff import config

    def make(preset: str = "digits-adamw", *overrides: str):
        name = f"{request.node.name[:60]}-{os.getpid()}-{len(os.listdir(tmp_path))}"
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-.")
        return config.load(
            preset=preset,
            overrides=[
                f"run.storage_path={tmp_path}",
                f"run.name={name}",
                "monitor.enabled=false",
                *overrides,
            ],
        )

    return make


def pytest_addoption(parser):
    parser.addoption(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="keep N busy processes running for the whole session, to check that "
        "the tests hold on a loaded machine (see README, Development)",
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its settings
def pytest_configure(config):
    if config.getvalue("timeout") is None and not os.environ.get("PYTEST_TIMEOUT"):
        config.option.timeout = scaled(float(config.getini("timeout")))
    load = config.getoption("--background-load")
    if load < 0:
        raise pytest.UsageError(f"--background-load={load}: expected 0 or more processes")
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    config.background_load = [
        subprocess.Popen([sys.executable, "-c", spin])  # ends with us
        for _ in range(load)
    ]


def pytest_unconfigure(config):
    for proc in getattr(config, "background_load", ()):
        proc.kill()
        proc.wait()


TIERS = ("unit", "ray", "cluster", "bench", "e2e", "presets")
E2E_MODULES = {"test_prometheus_e2e.py"}


def pytest_collection_modifyitems(items):
    """Give every test one tier marker (see pyproject's markers): an explicit one wins, else
    the tier follows from where the test lives and which Ray fixture it uses. A test's own
    ``timeout`` marker is stretched by the machine's factor (tests/timeouts.py)."""
    for item in items:
        limit = item.get_closest_marker("timeout")
        if limit is not None and limit.args:
            item.add_marker(pytest.mark.timeout(scaled(limit.args[0])), append=False)
        if any(item.get_closest_marker(t) for t in TIERS):
            continue
        path = item.path
        if path.name in E2E_MODULES:
            tier = "e2e"
        elif "bench" in path.parts:
            tier = "bench"
        elif "cluster" in path.parts:
            tier = "cluster"
        elif "ray_session" in getattr(item, "fixturenames", ()):
            tier = "ray"
        else:
            tier = "unit"
        item.add_marker(getattr(pytest.mark, tier))
    # the slowest tiers first: the test processes (pyproject's -n) take files in this order,
    # so the long files start at once and the unit tests fill in at the end
    items.sort(key=lambda item: HEAVY_FIRST.index(_tier(item)))


HEAVY_FIRST = ("presets", "cluster", "e2e", "bench", "ray", "unit")


def _tier(item) -> str:
    return next(t for t in HEAVY_FIRST if item.get_closest_marker(t))
