"""The cluster configs validate against Ray's own schemas and keep token auth on; the code loads
YAML safely and checkpoints without pickle."""
from __future__ import annotations

import pathlib
import re

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
LAUNCHER = ["aws.yaml", "gcp.yaml", "local.yaml"]


def _load(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTERS / name).read_text()))


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_passes_rays_schema(name):
    from ray.autoscaler._private.util import fillout_defaults, validate_config
    validate_config(fillout_defaults(_load(name)[0]))


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_config_starts_ray_with_token_auth_and_a_fixed_metrics_port(name):
    cfg = _load(name)[0]
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
              if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command and "--metrics-export-port=8080" in command
    head = next(c for c in cfg["head_start_ray_commands"] if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    setup = "\n".join(cfg["setup_commands"])
    assert setup.index("torch==2.13.0") < setup.index("~/raytrain_eff")  # CPU torch first
    assert "download.pytorch.org/whl/cpu" in setup


def _containers(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_kuberay_cluster_turns_token_auth_on():
    cluster = _load("kuberay/raycluster.yaml")[0]
    assert cluster["spec"]["authOptions"] == {"mode": "token"}
    assert cluster["spec"]["rayVersion"] == "2.60.0"
    for container in _containers(cluster):
        assert not any(e["name"] == "RAY_AUTH_TOKEN" and "value" in e
                       for e in container.get("env", []))


def test_kuberay_job_takes_the_token_from_a_secret_in_every_container():
    job = _load("kuberay/rayjob.yaml")[0]
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"]
    for container in _containers(job) + submitter:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert job["spec"]["entrypoint"].startswith("raytrain-eff train --preset ")


def test_runtime_env_is_valid_and_carries_no_secret():
    from ray.runtime_env import RuntimeEnv
    raw = _load("runtime_env.yaml")[0]
    RuntimeEnv(**raw)
    assert not any(k.startswith("RAY_AUTH") for k in raw.get("env_vars", {}))


def _sources() -> list[pathlib.Path]:
    return [p for d in ("raytrain_eff", "bench", "tests") for p in (REPO / d).rglob("*.py")]


def test_yaml_is_only_ever_loaded_safely():
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\(|Loader\s*=")
    offenders = [str(p.relative_to(REPO)) for p in _sources() if unsafe.search(p.read_text())]
    assert not offenders, f"unsafe YAML loading in {offenders}"


def test_checkpoints_are_loaded_without_pickle():
    calls = [(p, m) for p in (REPO / "raytrain_eff").rglob("*.py")
             for m in re.finditer(r"torch\.load\(([^)]*)\)", p.read_text())]
    assert calls, "no torch.load found: the check would pass vacuously"
    unsafe = [f"{p.relative_to(REPO)}: {m.group(0)}" for p, m in calls
              if "weights_only=True" not in m.group(1)]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
