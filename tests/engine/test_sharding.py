"""scaling.strategy=fsdp: the engine's real loop on real 2-rank gloo groups (no Ray, no mocks).

Under fsdp each rank holds a slice of the model, yet the run takes the steps ddp takes: the
same losses, weights and MST masks to float tolerance. A checkpoint written under fsdp holds
the whole model in ddp's format, so it resumes under either strategy and on any worker count.
DHO2's two updates (sharded, replicated) take the same steps and read each other's checkpoints.
"""

import pathlib
import shutil

import pytest
import torch

from raytrain_eff import config
from raytrain_eff.engine.checkpoint_manager import StartPoint
from raytrain_eff.typed import ConfigError

TINY = {
    "gpt": [
        "task.seq_len=16",
        "task.n_layer=2",
        "task.n_head=2",
        "task.n_embd=32",
        "data.batch_size=4",
    ],
    "digits": ["data.batch_size=16"],
}
RUN = [
    "run.steps=6",
    "run.report_interval=1",
    "run.checkpoint_interval=3",
    "run.eval_interval=0",
    "run.eval_batches=2",
    "train.warmup_steps=1",
    "monitor.enabled=false",
    "monitor.progress=false",
]
# MST with a topology update inside six steps: warm-up to 50% by step 2, updates at 2 and 4
MST = [
    "methods.mst.sparsity=0.5",
    "methods.mst.warmup_end=0.34",
    "methods.mst.update_every=2",
    "methods.mst.restore_start=0.67",
    "methods.mst.restore_end=0.84",
    "methods.mst.attention_window=8",
    "methods.mst.attention_tile=8",
]
# DHO2 with two Lanczos refreshes inside six steps (before updates 2 and 5)
DHO2 = ["methods.dho2.k=2", "methods.dho2.refresh_interval=3", "methods.dho2.warmup=2"]
CASES = {
    "adamw": ("gpt-dense", TINY["gpt"]),
    "sgd": ("digits-sgd", TINY["digits"]),
    "mst": ("gpt-mst", TINY["gpt"] + MST),
    "dho2": ("classify-dho2", TINY["digits"] + DHO2),
}


def _train(rank, world, group, preset, overrides, run_dir, resume_from=None, save_to=None):
    """One run of the engine's Runner on this rank; what the test compares, from rank 0."""
    from raytrain_eff.engine import records, sharding
    from raytrain_eff.engine.runner import Runner

    cfg = config.load(preset=preset, overrides=overrides)

    def report(metrics, checkpoint=None, **kw):
        if checkpoint is not None and save_to:  # every rank's files into one dir, as Ray does
            shutil.copytree(
                checkpoint.path,
                pathlib.Path(save_to) / f"step{metrics['step']}",
                dirs_exist_ok=True,
            )

    runner = Runner(
        cfg,
        rank=rank,
        world=world,
        group=group,
        device=torch.device("cpu"),
        run_dir=run_dir,
        run_name="t",
        report=report,
        get_checkpoint=lambda: None,  # Ray's way: each rank's files through report
        start=StartPoint.donor(resume_from) if resume_from else StartPoint(),
    )
    runner.run()
    state = sharding.full_model_state(runner.model) if runner.sharded else runner.model.state_dict()
    masks = [m.state_dict()["masks"] for m in runner.methods if m.name == "mst"]  # collective
    held = runner._state_bytes()
    if rank != 0:
        return held
    rows = records.read_table(run_dir).to_pylist()
    return {"state": state, "masks": masks, "rows": rows, "bytes": held}


def _run(gloo, tmp_path, name, world, preset, overrides, resume_from=None, save_to=None):
    run_dir = tmp_path / name
    run_dir.mkdir()
    return gloo.run(world, _train, preset, overrides, str(run_dir), resume_from, save_to)


def _losses(out, start=0):
    return torch.tensor([r["loss"] for r in out[0]["rows"] if r["step"] >= start])


def _assert_same_model(a, b):
    assert list(a["state"]) == list(b["state"])
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=1e-4, atol=1e-5)
    for ma, mb in zip(a["masks"], b["masks"], strict=True):
        assert ma.keys() == mb.keys()
        assert all(torch.equal(ma[k], mb[k]) for k in ma)


def _compare(gloo, tmp_path, method, save_to=None):
    """ddp and fsdp on 2 ranks: the same steps, with half the bytes held per rank."""
    preset, tiny = CASES[method]
    ddp, fsdp = (
        _run(
            gloo,
            tmp_path,
            s,
            2,
            preset,
            tiny + RUN + [f"scaling.strategy={s}"],
            save_to=save_to if s == "fsdp" else None,
        )
        for s in ("ddp", "fsdp")
    )
    assert len(_losses(ddp)) == 6 and torch.isfinite(_losses(ddp)).all()
    torch.testing.assert_close(_losses(fsdp), _losses(ddp), rtol=1e-4, atol=1e-5)
    _assert_same_model(fsdp[0], ddp[0])
    # each rank holds about half of the parameters and optimizer state (uneven dim-0 slices);
    # DHO2 slices its optimizer state under ddp too, so there fsdp halves the gradients
    halved = ("param_bytes",) if method == "dho2" else ("param_bytes", "optimizer_state_bytes")
    for key in halved:
        assert fsdp[0]["bytes"][key] + fsdp[1][key] == pytest.approx(ddp[1][key], rel=0.01)
        assert fsdp[1][key] <= 0.6 * ddp[1][key]
    if method == "dho2":  # its ddp optimizer state is sliced already: the same under fsdp
        key = "optimizer_state_bytes"
        assert fsdp[0]["bytes"][key] + fsdp[1][key] == pytest.approx(
            ddp[0]["bytes"][key] + ddp[1][key], rel=0.01
        )
        # ddp: a whole .grad, plus the overlapped reduce-scatter's staging (n, padded) and
        # averaged slice (n/2); fsdp: half a .grad per rank
        whole = ddp[1]["param_bytes"]
        assert fsdp[0]["bytes"]["grad_bytes"] + fsdp[1]["grad_bytes"] == pytest.approx(
            whole, rel=0.01
        )
        assert ddp[1]["grad_bytes"] == pytest.approx(2.5 * whole, rel=0.01)
    assert fsdp[0]["rows"][-1]["param_bytes"] == fsdp[0]["bytes"]["param_bytes"]
    return fsdp


@pytest.mark.parametrize("method", ["adamw", "sgd", "dho2"])
def test_fsdp_takes_ddps_steps_with_a_slice_of_the_memory(method, gloo, tmp_path):
    fsdp = _compare(gloo, tmp_path, method)
    if method == "dho2":  # the refreshes ran on the shards: eigenpairs, and a slice of them
        rows = fsdp[0]["rows"]
        assert max(r["eigenpairs"] for r in rows) == 2
        assert sum(r["lanczos_iterations"] for r in rows) == 2 * 8


def test_mst_on_shards_matches_ddp_and_its_checkpoint_resumes_anywhere(gloo, tmp_path):
    """MST masks live on the local shards; the fsdp checkpoint resumes under ddp on the
    uninterrupted trajectory, and on one worker under either strategy alike."""
    ckpts = tmp_path / "ckpts"
    straight = _compare(gloo, tmp_path, "mst", save_to=str(ckpts))
    assert any((r.get("mst_pruned") or 0) > 0 for r in straight[0]["rows"])  # topology moved
    assert 0 < straight[0]["rows"][3]["mst_density"] < 1
    preset, tiny = CASES["mst"]
    at3 = str(ckpts / "step3")
    as_ddp = _run(
        gloo, tmp_path, "ddp2", 2, preset, tiny + RUN + ["scaling.strategy=ddp"], resume_from=at3
    )
    torch.testing.assert_close(_losses(as_ddp), _losses(straight, start=3), rtol=1e-4, atol=1e-5)
    _assert_same_model(as_ddp[0], straight[0])
    one = {
        s: _run(
            gloo,
            tmp_path,
            f"{s}1",
            1,
            preset,
            tiny + RUN + [f"scaling.strategy={s}"],
            resume_from=at3,
        )
        for s in ("ddp", "fsdp")
    }
    assert len(_losses(one["fsdp"])) == 3
    torch.testing.assert_close(_losses(one["fsdp"]), _losses(one["ddp"]), rtol=1e-4, atol=1e-5)
    _assert_same_model(one["fsdp"][0], one["ddp"][0])


def test_a_dho2_checkpoint_in_shards_resumes_on_1_2_and_3_workers(gloo, tmp_path):
    """DHO2's flat state (moments, eigenvectors) saved as every rank's slices, no optimizer.pt.
    The fsdp P=2 checkpoint resumes on P=2 on the uninterrupted trajectory, bit for bit (the
    curvature batches drawn so far are in the manifest), and on one ddp worker and three fsdp
    shards with the saved eigenpairs in place. (Those runs take other steps: each worker
    draws data.batch_size rows, so the global batch changes with the worker count;
    tests/methods/test_dho2.py checks the resharded state value by value.)"""
    from raytrain_eff.engine import checkpoint

    ckpts = tmp_path / "ckpts"
    preset, tiny = CASES["dho2"]
    straight = _run(
        gloo,
        tmp_path,
        "straight",
        2,
        preset,
        tiny + RUN + ["scaling.strategy=fsdp"],
        save_to=str(ckpts),
    )
    at3 = ckpts / "step3"  # after the first refresh: eigenvectors in the state
    assert "optimizer.pt" not in checkpoint.read_manifest(at3)["files"]
    same = _run(
        gloo,
        tmp_path,
        "fsdp2",
        2,
        preset,
        tiny + RUN + ["scaling.strategy=fsdp"],
        resume_from=str(at3),
    )
    torch.testing.assert_close(_losses(same), _losses(straight, start=3), rtol=0, atol=0)
    _assert_same_model(same[0], straight[0])
    saved = next(r for r in straight[0]["rows"] if r["step"] == 3)
    for world, strategy in ((1, "ddp"), (3, "fsdp")):
        resumed = _run(
            gloo,
            tmp_path,
            f"{strategy}{world}",
            world,
            preset,
            tiny + RUN + [f"scaling.strategy={strategy}"],
            resume_from=str(at3),
        )
        first = resumed[0]["rows"][0]  # step 3: no refresh yet, the loaded pairs
        assert first["step"] == 3 and first["lanczos_iterations"] == 0
        assert first["eigenpairs"] == 2
        assert first["lambda_max"] == pytest.approx(saved["lambda_max"], rel=1e-6)
        assert torch.isfinite(_losses(resumed)).all() and len(_losses(resumed)) == 3


def test_dho2s_replicated_update_takes_the_sharded_steps_and_reads_its_checkpoints(gloo, tmp_path):
    """update=replicated (the engine's all-reduce, the whole state on every rank) takes the
    paper's sharded update's steps on 2 ddp ranks, holding twice its optimizer state; its
    checkpoint is in the sharded update's format, so a run resumes from it under the other."""
    preset, tiny = CASES["dho2"]
    ckpts = tmp_path / "ckpts"
    runs = {
        update: _run(
            gloo,
            tmp_path,
            update,
            2,
            preset,
            tiny + RUN + [f"methods.dho2.update={update}"],
            save_to=str(ckpts / update),
        )
        for update in ("sharded", "replicated")
    }
    sharded, replicated = runs["sharded"], runs["replicated"]
    torch.testing.assert_close(_losses(replicated), _losses(sharded), rtol=1e-5, atol=1e-6)
    _assert_same_model(replicated[0], sharded[0])
    rows = replicated[0]["rows"]
    assert max(r["eigenpairs"] for r in rows) == 2
    assert sum(r["lanczos_iterations"] for r in rows) == 2 * 8
    state = {u: r[0]["bytes"]["optimizer_state_bytes"] for u, r in runs.items()}
    assert state["replicated"] == pytest.approx(2 * state["sharded"], rel=0.01)
    resumed = _run(
        gloo,
        tmp_path,
        "swapped",
        2,
        preset,
        tiny + RUN + ["methods.dho2.update=sharded"],
        resume_from=str(ckpts / "replicated" / "step3"),
    )
    torch.testing.assert_close(_losses(resumed), _losses(sharded, start=3), rtol=1e-5, atol=1e-6)
    _assert_same_model(resumed[0], sharded[0])


@pytest.mark.parametrize(
    "preset,field,why",
    [
        ("classify-fosi", "methods.fosi", "whole flattened parameter vector"),
        ("erm-dasvrda", "task.name", "outside forward()"),
        ("wide-sublinear", "task.name", "index over whole weight rows"),
        ("digits-lowdim-head", "methods.lowdim", "whole weight matrices"),
    ],
)
def test_methods_that_cannot_shard_are_refused_before_launch(preset, field, why):
    with pytest.raises(
        ConfigError, match=f"{field}: .* cannot run under scaling.strategy=fsdp.*{why}"
    ):
        config.load(preset=preset, overrides=["scaling.strategy=fsdp"])
    config.load(preset=preset)  # the same preset is fine under ddp


def test_fsdp_needs_workers():
    with pytest.raises(ConfigError, match="strategy.*local mode"):
        config.load(
            preset="gpt-dense", overrides=["scaling.strategy=fsdp", "scaling.num_workers=0"]
        )


def test_fsdp_on_ray_train_resumes_on_one_worker(run_cfg, ray_session):
    """Through launch.fit on real Ray Train workers: 2 shards, a checkpoint, then 1 worker."""
    import pyarrow.parquet as pq

    from raytrain_eff.engine import launch

    paused = launch.fit(
        run_cfg(
            "digits-adamw",
            "scaling.strategy=fsdp",
            "run.steps=8",
            "run.report_interval=4",
            "run.checkpoint_interval=4",
            "run.stop_after=4",
            "run.eval_interval=0",
        )
    )
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null", "scaling.num_workers=1"]
    )
    launch.fit(resumed, resume=True)
    table = pq.read_table(pathlib.Path(paused.run_dir) / "metrics.parquet").to_pandas()
    assert table["step"].tolist() == list(range(8))
    assert table["world_size"].tolist() == [2] * 4 + [1] * 4
    assert torch.isfinite(torch.tensor(table["loss"].values)).all()
    # one worker holds the whole model that two shared
    two, one = table["param_bytes"].iloc[0], table["param_bytes"].iloc[-1]
    assert one == pytest.approx(2 * two, rel=0.02)
