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
    starts = [
        c
        for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command and "--metrics-export-port=8080" in command
        # each node's exporter binds and advertises the node's private IP (monitor.discovery)
        assert "RAYTRAIN_EFF_MONITOR_HOST=node" in command
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
        assert not any(
            e["name"] == "RAY_AUTH_TOKEN" and "value" in e for e in container.get("env", [])
        )


def _pod_specs(doc: dict) -> list[dict]:
    return [t["spec"] for t in _ray_pod_templates(doc)]


def _ray_pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    return [g["template"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]]


def test_kuberay_job_mounts_the_token_from_a_secret_as_a_file_in_every_pod():
    job = _load("kuberay/rayjob.yaml")[0]
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == "2.60.0"
    submitter = job["spec"]["submitterPodTemplate"]["spec"]
    for pod in [*_pod_specs(job), submitter]:
        secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "RAY_AUTH_TOKEN" not in env  # a file, not an environment value
        path = pathlib.PurePosixPath(env["RAY_AUTH_TOKEN_PATH"]["value"])
        (mount,) = [m for m in container["volumeMounts"] if m["name"] in secrets]
        assert mount["mountPath"] == str(path.parent) and mount["readOnly"] is True
        secret = secrets[mount["name"]]
        assert secret["secretName"] == "raytrain-eff-ray-auth"
        assert secret["defaultMode"] & 0o007 == 0  # not world-readable
        assert pod["securityContext"]["fsGroup"] == 100  # the image's user reads it via group
    assert job["spec"]["entrypoint"].startswith("raytrain-eff train --preset ")


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_pods_have_shm_and_named_metrics_ports(name):
    doc = _load(name)[0]
    for template in _ray_pod_templates(doc):
        assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "raytrain-eff"
        pod = template["spec"]
        (container,) = pod["containers"]
        shm = [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
        assert len(shm) == 1 and shm[0]["emptyDir"]["sizeLimit"]
        assert {"name": shm[0]["name"], "mountPath": "/dev/shm"} in container["volumeMounts"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 8080 and ports["raytrain-eff"] == 9464


@pytest.mark.parametrize("name", ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_kuberay_autoscaling_matches_the_replica_bounds(name):
    spec = _load(name)[0]["spec"]
    spec = spec.get("rayClusterSpec", spec)
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        if group["maxReplicas"] > group["minReplicas"]:
            assert spec.get("enableInTreeAutoscaling") is True, group["groupName"]
    if not spec.get("enableInTreeAutoscaling"):
        assert all(g["minReplicas"] == g["maxReplicas"] for g in spec["workerGroupSpecs"])


def test_kuberay_job_exporters_listen_on_the_pod_ip():
    job = _load("kuberay/rayjob.yaml")[0]
    assert "monitor.host=0.0.0.0" in job["spec"]["entrypoint"].split()


def test_kuberay_monitoring_scrapes_the_labelled_pods_as_the_dashboards_jobs():
    docs = {d["kind"]: d for d in _load("kuberay/monitoring.yaml")}
    monitor, service = docs["PodMonitor"], docs["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = {"app.kubernetes.io/part-of": "raytrain-eff"}
    assert monitor["spec"]["selector"]["matchLabels"] == selector == service["spec"]["selector"]
    endpoints = {e["port"]: e for e in monitor["spec"]["podMetricsEndpoints"]}
    jobs = {
        port: [r["replacement"] for r in e["relabelings"] if r["targetLabel"] == "job"]
        for port, e in endpoints.items()
    }
    assert jobs == {"raytrain-eff": ["raytrain_eff"], "metrics": ["ray"]}
    assert endpoints["raytrain-eff"]["honorLabels"] is True
    assert service["spec"]["clusterIP"] == "None"
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"raytrain-eff", "metrics"}
    # the names the rules and the dashboard select on
    prometheus = yaml.safe_load((CLUSTERS / "prometheus/prometheus.yml").read_text())
    assert {j["job_name"] for j in prometheus["scrape_configs"]} == {"raytrain_eff", "ray"}


def test_docs_match_the_manifests():
    readme = (CLUSTERS / "README.md").read_text()
    main = (REPO / "README.md").read_text()
    for text in (readme, main):
        generate = text.index("ray get-auth-token --generate")
        assert "chmod 600 ~/.ray/auth_token" in text[generate : generate + 200]
    assert "kuberay/monitoring.yaml" in readme and "PodMonitor" in readme
    assert "RAY_AUTH_TOKEN_PATH" in readme and "/dev/shm" in readme
    assert "enableInTreeAutoscaling" in readme
    # the launcher configs keep the dashboard on 127.0.0.1; KubeRay's binds the pod's 0.0.0.0
    assert "0.0.0.0 inside the head pod" in readme


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
    calls = [
        (p, m)
        for p in (REPO / "raytrain_eff").rglob("*.py")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", p.read_text())
    ]
    assert calls, "no torch.load found: the check would pass vacuously"
    unsafe = [
        f"{p.relative_to(REPO)}: {m.group(0)}"
        for p, m in calls
        if "weights_only=True" not in m.group(1)
    ]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
