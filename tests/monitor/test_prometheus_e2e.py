"""End to end: a real Prometheus scrapes the exporters of a 2-node Ray cluster.

The cluster (``ray.cluster_utils.Cluster``) runs in a subprocess -- this file run as a script --
with its own temp dir: one training actor per node runs a small attention + MLP model and pushes
its real step statistics through ``MetricsPusher``; the driver publishes Tune progress and starts
the file_sd writer, as a run's driver does. Prometheus (from ``scripts/test-deps.sh``; missing
fails the test) loads the repo's ``prometheus.yml`` and rules with the file_sd directory and
intervals of the test. The test checks both targets are up, distinct and discovered without hand
edits, that every PromQL expression of the Grafana dashboard returns data for both nodes, that a
node joining gets a target and that a node lost mid-run leaves the file_sd and Prometheus.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from prometheus_server import PROMETHEUS, PROMTOOL, REPO, api, free_port, wait_for
from timeouts import scaled

SWEEP = "e2e-sweep"
RUN = f"{SWEEP}-4c1d2_00001"  # a trial of the sweep: <sweep>-<trial id>
RUN_MST = "e2e-mst"


# --------------------------------------------------------------------------------------------
# the cluster side (runs in the subprocess)
# --------------------------------------------------------------------------------------------
def _train_and_push(run: str, rank: int, port: int, stop_file: str) -> int:
    """A few real training steps per second until ``stop_file`` exists; returns steps taken."""
    import torch
    from torch import nn

    from raytrain_eff.monitor import keys as K
    from raytrain_eff.monitor.push import MetricsPusher

    torch.set_num_threads(1)
    torch.manual_seed(rank)
    B, T, d, hidden, classes = 16, 8, 16, 64, 4
    x, y = torch.randn(B, T, d), torch.randint(0, classes, (B,))
    band = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= 1  # local attention
    qkv, fc1, fc2 = nn.Linear(d, 3 * d), nn.Linear(d, hidden), nn.Linear(hidden, classes)
    params = [p for m in (qkv, fc1, fc2) for p in m.parameters()]
    mask = fc1.weight.abs() >= fc1.weight.abs().median()  # keep the larger half
    opt = torch.optim.SGD(params, lr=0.05)
    pusher = MetricsPusher(run=run, trial="", rank=rank, port=port, flush_interval_s=0.25)

    def loss_fn():
        q, k, v = qkv(x).chunk(3, dim=-1)  # (B, T, d) each
        scores = (q @ k.transpose(1, 2) / d**0.5).masked_fill(~band, float("-inf"))
        h = torch.relu(fc1((scores.softmax(-1) @ v).mean(1)))  # (B, hidden)
        return nn.functional.cross_entropy(fc2(h), y), h

    n_params = sum(p.numel() for p in params)
    step = 0
    while not os.path.exists(stop_file):
        t0 = time.perf_counter()
        order = torch.randperm(B)  # the step's batch: its wait is real, if short
        x, y = x[order], y[order]
        data_wait_s = time.perf_counter() - t0
        loss, h = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        c0 = time.perf_counter()  # curvature work: one Hessian-vector product
        vec = [torch.randn_like(p) for p in params]
        torch.autograd.grad(grads, params, grad_outputs=vec)
        curvature_s = time.perf_counter() - c0
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= 0.05 * g
            fc1.weight.mul_(mask)
        dense = 6.0 * n_params * B  # forward + backward multiply-adds
        zeros = float((fc1.weight == 0).float().mean())
        pusher.push(
            {
                K.STEP: step,
                K.LOSS: float(loss),
                K.SAMPLES: B,
                K.TOKENS: B * T,
                K.STEP_TIME: time.perf_counter() - t0,
                K.DENSE_FLOPS: dense,
                K.EFFECTIVE_FLOPS: dense - 6.0 * zeros * fc1.weight.numel() * B,
                K.LR: opt.param_groups[0]["lr"],
                K.CURVATURE_SECONDS: curvature_s,
                K.DATA_WAIT_SECONDS: data_wait_s,
                K.SPARSITY: zeros,
                K.ATTENTION_DENSITY: float(band.float().mean()),
                K.ACTIVE_FRACTION: float((h > 0).float().mean()),
                K.WALL: 1.0,
                K.PARAM_BYTES: sum(p.numel() * p.element_size() for p in params),
                K.GRAD_BYTES: sum(g.numel() * g.element_size() for g in grads),
                K.OPTIMIZER_BYTES: 0,  # plain SGD keeps no state
                "grad_norm": float(torch.sqrt(sum((g * g).sum() for g in grads))),
            }
        )
        step += 1
        time.sleep(0.05)  # leave the shared cores to Prometheus
    pusher.close()
    return step


def _cluster_main(workdir: str, port: int) -> None:
    """Steps driven by files in ``workdir``: ready.json, then on ``add_node`` a third node
    (added.json), on ``remove_node`` the first worker node goes, training actor and all
    (removed.json), on ``stop`` the head's training ends (done.json)."""
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from raytrain_eff.monitor import discovery
    from raytrain_eff.monitor.push import TuneProgress

    work = pathlib.Path(workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally: shut the cluster
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": str(work / "ray")},
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        train = ray.remote(num_cpus=0)(_train_and_push)
        stop_file = str(work / "stop")
        refs = {
            n: train.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)
            ).remote(RUN, rank, port, stop_file)
            for rank, n in enumerate(nodes)
        }
        while len(discovery.list_exporters()) < len(nodes):  # the workers create them
            time.sleep(0.2)
        # what a run's driver does: the writer keeps $RAYTRAIN_EFF_FILE_SD_DIR current
        file_sd = discovery.start_file_sd("127.0.0.1", port, refresh_s=0.5)
        tune = TuneProgress(run=SWEEP, port=port)  # a sweep's driver: the same writer
        assert tune.file_sd == file_sd
        tune.update(
            trials_total=4,
            trials_running=2,
            trials_terminated=1,
            trials_errored=0,
            best_metric=0.25,
        )
        (work / "ready.json").write_text(json.dumps({"nodes": nodes, "file_sd": file_sd}))
        _train_mst(work, port)
        _when(work / "add_node")
        cluster.add_node(num_cpus=0)
        (work / "added.json").write_text(
            json.dumps({"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])})
        )
        _when(work / "remove_node")
        gone = worker.node_id
        cluster.remove_node(worker)
        (work / "removed.json").write_text(json.dumps({"node": gone}))
        _when(work / "stop")
        head = ray.get_runtime_context().get_node_id()
        steps = ray.get(refs[head], timeout=scaled(180))
        (work / "done.json").write_text(json.dumps({"steps": steps}))
    finally:
        ray.shutdown()
        cluster.shutdown()


def _train_mst(work: pathlib.Path, port: int) -> None:
    """gpt-mst for real, tiny, one Ray Train worker per node: MST's own sparsity reaches the
    dashboard through the pushers, the exporters and Prometheus."""
    from raytrain_eff import config
    from raytrain_eff.engine import launch

    cfg = config.load(
        preset="gpt-mst",
        overrides=[
            f"run.storage_path={work / 'runs'}",
            f"run.name={RUN_MST}",
            "scaling.num_workers=2",
            "scaling.placement=SPREAD",
            "scaling.cpus_per_worker=1",
            "run.steps=8",
            "run.report_interval=4",
            "run.checkpoint_interval=8",
            "run.eval_interval=0",
            f"monitor.port={port}",
            "monitor.progress=false",
            "task.n_layer=1",
            "task.n_embd=32",
            "task.n_head=2",
            "data.batch_size=4",
            "train.warmup_steps=0",
            "methods.mst.warmup_end=0.25",
            "methods.mst.restore_start=1.0",
            "methods.mst.restore_end=1.0",
            "methods.mst.update_every=1",
            "methods.mst.attention_start=0.0",
            "methods.mst.attention_stop=1.0",
        ],
    )
    launch.fit(cfg)
    (work / "mst.json").write_text(json.dumps({"run": RUN_MST}))


def _when(path: pathlib.Path, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + scaled(timeout_s)
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# the test side
# --------------------------------------------------------------------------------------------
def _prometheus_config(work: pathlib.Path) -> pathlib.Path:
    """The repo's prometheus.yml with the test's file_sd directory and 1 s intervals."""
    import yaml

    config = yaml.safe_load((REPO / "clusters/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (default,) = jobs["raytrain_eff"]["file_sd_configs"][0]["files"]
    assert default.endswith("/*.json")  # one file per cluster in the directory
    jobs["raytrain_eff"]["file_sd_configs"] = [
        {"files": [str(work / "file_sd" / "*.json")], "refresh_interval": "1s"}
    ]
    ray_sd = work / "ray/prom_metrics_service_discovery.json"
    jobs["ray"]["file_sd_configs"] = [{"files": [str(ray_sd)]}]
    shutil.copy(REPO / "clusters/prometheus" / config["rule_files"][0], work)
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run([str(PROMTOOL), "check", "config", str(path)], check=True, capture_output=True)
    return path


def _dashboard():
    return json.loads((REPO / "clusters/grafana/raytrain_eff.json").read_text())


def _dashboard_queries(run: str = SWEEP) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with ``run`` selected (by default the sweep,
    which selects its trials' runs too) and all nodes."""
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", "10s")
                .replace("${run}", run)
                .replace("$run", run)
                .replace("$node", ".*")
            )
            out.append((panel["title"], expr))
    return out


def _recording_rules() -> list[str]:
    import yaml

    rules = yaml.safe_load((REPO / "clusters/prometheus/raytrain_eff.rules.yml").read_text())
    return [r["record"] for g in rules["groups"] for r in g["rules"]]


def test_prometheus_scrapes_two_node_cluster_and_dashboard_has_data():
    assert PROMETHEUS.exists() and PROMTOOL.exists(), "run scripts/test-deps.sh first"
    work = pathlib.Path(tempfile.mkdtemp(prefix="rte-e2e-", dir="/tmp"))  # short socket paths
    env = dict(
        os.environ,
        RAY_TMPDIR=str(work),
        PYTHONPATH=f"{REPO}:{REPO / 'tests'}",
        RAYTRAIN_EFF_FILE_SD_DIR=str(work / "file_sd"),
    )
    env.pop("RAYTRAIN_EFF_MONITOR_HOST", None)
    cluster = subprocess.Popen(
        [sys.executable, __file__, str(work), str(free_port())],
        env=env,
        stdout=open(work / "cluster.log", "w"),  # noqa: SIM115 (the child owns it)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    prometheus = None
    try:
        wait_for("cluster ready", lambda: (work / "ready.json").exists(), 150, cluster)
        ready = json.loads((work / "ready.json").read_text())
        nodes, file_sd = set(ready["nodes"]), pathlib.Path(ready["file_sd"])
        assert file_sd.parent == work / "file_sd" and file_sd.name.startswith("cluster-")

        def file_sd_nodes() -> set[str]:
            return {g["labels"]["node_id"] for g in json.loads(file_sd.read_text())}

        assert file_sd_nodes() == nodes  # discovered, no hand edits
        # both exporters were asked for the same port on one host: the second moved on
        assert len({g["targets"][0] for g in json.loads(file_sd.read_text())}) == 2

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        prometheus = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={_prometheus_config(work)}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=open(work / "prometheus.log", "w"),  # noqa: SIM115 (the child owns it)
            stderr=subprocess.STDOUT,
        )

        def targets_up():
            try:
                active = api(base, "targets")["activeTargets"]
            except OSError:
                return None
            ours = [t for t in active if t["labels"]["job"] == "raytrain_eff"]
            up = {t["discoveredLabels"]["node_id"] for t in ours if t["health"] == "up"}
            return ours if up == nodes else None

        wait_for("both targets up", targets_up, 30, prometheus)

        per_node = [(title, e) for title, e in _dashboard_queries() if not title.startswith("Tune")]
        driver_only = [(title, e) for title, e in _dashboard_queries() if title.startswith("Tune")]
        records = _recording_rules()

        def nodes_of(expr):
            return {s["metric"].get("node_id") for s in api(base, "query", query=expr)["result"]}

        missing: list[str] = []

        def all_have_data():
            missing[:] = [e for _, e in per_node if nodes_of(e) != nodes]
            missing.extend(e for _, e in driver_only if not api(base, "query", query=e)["result"])
            missing.extend(r for r in records if r.startswith("node_run:") and nodes_of(r) != nodes)
            missing.extend(r for r in records if not api(base, "query", query=r)["result"])
            return not missing

        try:
            wait_for("dashboard data for both nodes", all_have_data, 40, prometheus)
        except AssertionError as e:
            raise AssertionError(f"{e}; no data for: {missing}") from None

        # the $run variable lists the sweep beside its trial's run (what selecting it showed
        # is checked above: every panel had data with the sweep selected)
        (variable,) = [v for v in _dashboard()["templating"]["list"] if v["name"] == "run"]
        selector = variable["definition"].removeprefix("label_values(").rsplit(",", 1)[0]
        assert {SWEEP, RUN} <= set(api(base, "label/run/values", **{"match[]": selector}))

        # values are the ones pushed: Tune progress from the driver, real losses from training
        trials = api(base, "query", query=f'raytrain_eff_tune_trials{{run="{SWEEP}"}}')["result"]
        assert {s["metric"]["state"]: float(s["value"][1]) for s in trials} == {
            "running": 2.0,
            "terminated": 1.0,
            "errored": 0.0,
        }
        losses = api(base, "query", query=f'raytrain_eff_loss{{run="{RUN}"}}')["result"]
        assert all(0.0 < float(s["value"][1]) < 10.0 for s in losses) and len(losses) == 2

        # MST's own statistics, from a real gpt-mst run on both nodes, through Prometheus
        wait_for("the gpt-mst run", lambda: (work / "mst.json").exists(), 240, cluster)

        def mst_final_values_on_both_nodes():  # a scrape after the run's last push
            for metric in ("raytrain_eff_sparsity_ratio", "raytrain_eff_attention_density_ratio"):
                if nodes_of(f'{metric}{{run="{RUN_MST}"}}') != nodes:
                    return None
            result = api(base, "query", query=f'raytrain_eff_sparsity_ratio{{run="{RUN_MST}"}}')
            final = all(abs(float(s["value"][1]) - 0.9) < 0.02 for s in result["result"])
            return final or None

        wait_for("MST's final sparsity 0.9 in Prometheus", mst_final_values_on_both_nodes, 30)
        sparsity_panels = [
            e
            for title, e in _dashboard_queries(RUN_MST)
            if "sparsity_ratio" in e or "attention_density_ratio" in e
        ]
        assert sparsity_panels and all(nodes_of(e) == nodes for e in sparsity_panels)

        # a node that joins gets an exporter and a target; a node lost mid-run loses both
        (work / "add_node").touch()
        wait_for("a third node", lambda: (work / "added.json").exists(), 90, cluster)
        grown = set(json.loads((work / "added.json").read_text())["nodes"])
        assert len(grown) == 3
        wait_for("the new node in the file_sd", lambda: file_sd_nodes() == grown, 60, cluster)
        (work / "remove_node").touch()
        wait_for("a node removed", lambda: (work / "removed.json").exists(), 90, cluster)
        gone = json.loads((work / "removed.json").read_text())["node"]
        assert gone in nodes
        wait_for(
            "the lost node out of the file_sd",
            lambda: file_sd_nodes() == grown - {gone},
            60,
            cluster,
        )

        def prometheus_dropped_it():
            active = api(base, "targets")["activeTargets"]
            ours = {
                t["discoveredLabels"]["node_id"]
                for t in active
                if t["labels"]["job"] == "raytrain_eff"
            }
            return ours == grown - {gone}

        wait_for("Prometheus to drop the lost node's target", prometheus_dropped_it, 30)

        (work / "stop").touch()
        wait_for("training to finish", lambda: (work / "done.json").exists(), 60, cluster)
        assert json.loads((work / "done.json").read_text())["steps"] > 0
        assert cluster.wait(timeout=scaled(60)) == 0, (work / "cluster.log").read_text()[-3000:]
    finally:
        for name in ("add_node", "remove_node", "stop"):
            (work / name).touch()
        for proc in (prometheus, cluster):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:  # the cluster driver leads its own group
                    os.killpg(proc.pid, signal.SIGKILL) if proc is cluster else proc.kill()
                    proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    _cluster_main(sys.argv[1], int(sys.argv[2]))
