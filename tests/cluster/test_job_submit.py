"""A preset submitted with ``ray job submit`` to a real ``ray start --head`` with token auth on.

The head runs in its own session (its own --temp-dir, TMPDIR and ports, all on 127.0.0.1) and
is stopped by killing the process group this test started — never ``ray stop``, which would
stop every Ray on the machine. The token is the cluster's secret: generated here, handed to the
head and to the submitter as a file (RAY_AUTH_TOKEN_PATH), exactly as clusters/README.md says.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pyarrow.parquet as pq
import pytest
from timeouts import scaled

REPO = pathlib.Path(__file__).resolve().parents[2]
RAY = str(pathlib.Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.timeout(480)
# what the jobs API says while its agent is still starting: worth a retry, not a failure
TRANSIENT_SUBMIT_ERRORS = ("No available agent", "Connection refused")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface: Ray binds some ports to 0.0.0.0
        return s.getsockname()[1]


def auth_env(token_file: pathlib.Path, tmpdir: pathlib.Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in (
            "RAY_ADDRESS",
            "RAY_AUTH_TOKEN",
            "RAY_API_SERVER_ADDRESS",
            "RAYTRAIN_EFF_MONITOR_HOST",
        )
    }
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        TMPDIR=str(tmpdir),
        RAYTRAIN_EFF_FILE_SD_DIR=str(tmpdir.parent / "file_sd"),
        PATH=f"{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.5",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


class Head:
    """``ray start --head --block`` in a new process group, with every port chosen here."""

    def __init__(self, root: pathlib.Path, token_file: pathlib.Path):
        self.root, self.env = root, auth_env(token_file, root / "tmp")
        (root / "tmp").mkdir()
        self.dashboard_port, self.metrics_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        # Train's placement-group cleaner asks the State API without an address: on a machine
        # with several Ray clusters "auto" may pick another one, so name ours for every process
        self.env["RAY_API_SERVER_ADDRESS"] = self.address
        ports = {
            "--port": free_port(),
            "--dashboard-port": self.dashboard_port,
            "--metrics-export-port": self.metrics_port,
            "--ray-client-server-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
        }
        args = [
            RAY,
            "start",
            "--head",
            "--block",
            "--temp-dir",
            str(root / "ray"),
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--include-dashboard",
            "true",
            "--num-cpus",
            "2",
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            "--disable-usage-stats",
        ]
        for flag, port in ports.items():
            args += [flag, str(port)]
        self.log = open(root / "head.log", "w")  # noqa: SIM115 (held open for the head process)
        self.proc = subprocess.Popen(
            args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + scaled(timeout_s)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.root / 'head.log').read_text()}")
            if self.job("list", check=False, timeout=60).returncode == 0:
                return
            time.sleep(2)
        raise TimeoutError(f"head not ready: {(self.root / 'head.log').read_text()}")

    def job(self, command: str, *args: str, check: bool = True, timeout: float = 360):
        """``ray job COMMAND --address <this head> ARGS``."""
        out = subprocess.run(
            [RAY, "job", command, "--address", self.address, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=scaled(timeout),
            cwd=REPO,
        )
        if check and out.returncode != 0:
            raise AssertionError(
                f"ray job {command} {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
            )
        return out

    def submit(self, *args: str, timeout_s: float = 120.0):
        """``ray job submit`` that waits out the head's start-up: the jobs API can answer
        ``list`` before an agent takes submissions ("No available agent", a refused
        connection). A fixed submission id makes a retry safe: a job is created at most once."""
        submission_id = f"raysubmit_{secrets.token_hex(8)}"
        deadline = time.monotonic() + scaled(timeout_s)
        while True:
            out = self.job("submit", "--submission-id", submission_id, *args, check=False)
            transient = any(m in out.stdout + out.stderr for m in TRANSIENT_SUBMIT_ERRORS)
            if out.returncode == 0 or not transient or time.monotonic() > deadline:
                break
            time.sleep(1)
        if out.returncode != 0:
            raise AssertionError(f"ray job submit failed:\n{out.stdout}\n{out.stderr}")
        return out

    def stop(self) -> None:
        """SIGTERM the process group (ray start --block stops its children), then SIGKILL it."""
        pgid = self.proc.pid
        for sig, grace_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.5)
        self.proc.wait(timeout=10)
        self.log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def cluster():
    # short, private paths: Ray's unix sockets live under --temp-dir (108-byte limit)
    root = pathlib.Path(tempfile.mkdtemp(prefix="rtjob-", dir="/tmp"))
    token = secrets.token_hex(32)
    token_file = root / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    head = Head(root, token_file)
    try:
        head.wait_ready()
        yield head, token
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_submitted_preset_succeeds_and_leaves_its_records(cluster):
    head, token = cluster
    runs, exporter_port = head.root / "runs", free_port()
    # the submitter hands over its commit: the uploaded working dir has no .git
    from raytrain_eff.engine import provenance

    runtime_env = provenance.runtime_env(where=REPO)
    out = head.submit(
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "raytrain-eff",
        "train",
        "--preset",
        "digits-adamw",
        "run.steps=20",
        "run.report_interval=10",
        "run.checkpoint_interval=10",
        "run.eval_interval=10",
        f"run.storage_path={runs}",
        "run.name=submitted",
        "monitor.host=127.0.0.1",
        f"monitor.port={exporter_port}",
    )
    job_id = re.search(r"raysubmit_\w+", out.stdout).group(0)
    assert f"Job '{job_id}' succeeded" in plain(head.job("status", job_id).stdout)
    logs = head.job("logs", job_id).stdout

    run_dir = runs / "submitted"  # <run.storage_path>/<run.name>, as the README says
    # the end-of-run table names the run directory
    assert re.search(rf"^run dir\s+{re.escape(str(run_dir))}$", logs, re.M), logs
    table = pq.read_table(run_dir / "metrics.parquet").to_pandas()
    assert table["step"].tolist() == list(range(20))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 20
    assert summary["commit"] == runtime_env["env_vars"][provenance.ENV_COMMIT]
    assert summary["commit_source"] == "submitter" and isinstance(summary["dirty"], bool)
    assert sorted(p.name for p in run_dir.glob("checkpoint_step*")) == [
        "checkpoint_step00000010",
        "checkpoint_step00000020",
    ]

    # metrics: the run's exporter on monitor.host only, Ray's on the fixed export port
    assert listening_hosts(exporter_port) == {"127.0.0.1"}
    assert 'run="submitted"' in scrape(exporter_port)
    # the job's driver left the cluster's file_sd on the head, listing that exporter
    (file_sd,) = (head.root / "file_sd").glob("cluster-*.json")
    assert [g["targets"] for g in json.loads(file_sd.read_text())] == [
        [f"127.0.0.1:{exporter_port}"]
    ]
    assert "ray_node_cpu_utilization" in scrape(head.metrics_port)

    # the token reaches no log, result or checkpoint: not the job's, not Ray's
    assert token not in logs
    leaks = [
        p
        for p in [*run_dir.rglob("*"), *(head.root / "ray").rglob("*")]
        if p.is_file() and token.encode() in _read(p)
    ]
    assert not leaks, f"auth token found in {leaks}"


def test_a_submitter_without_the_token_is_refused(cluster):
    head, _ = cluster
    env = {**head.env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_AUTH_TOKEN_PATH")
    out = subprocess.run(
        [RAY, "job", "list", "--address", head.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(120),
    )
    assert out.returncode != 0
    assert "auth" in (out.stdout + out.stderr).lower()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        return response.read().decode()


def listening_hosts(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    hosts = set()
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            hosts.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return hosts


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # without the CLI's colours


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
