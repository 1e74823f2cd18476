"""Checkpoints: every file under the manifest's checksums, the newest good one chosen with a
warning that names the bad file, a start the user picks, and names that never collide."""

import json
import pathlib
import shutil

import one_process_checkpoint
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from raytrain_eff import cli, config
from raytrain_eff.engine import checkpoint, launch
from raytrain_eff.engine.checkpoint import CheckpointError


def _save(directory, step, seed=0, **kw):
    torch.manual_seed(seed)  # the seed picks the weights
    return one_process_checkpoint.save(directory, step, **kw)


def _flip_a_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _run_dir(tmp_path, steps=(10, 20, 30)):
    run = tmp_path / "run"
    for step in steps:
        _save(run / checkpoint.dir_name(step), step, seed=step)
    return run


def test_every_file_is_in_the_manifest_and_a_bad_rng_file_is_named(tmp_path):
    _save(tmp_path / "c", 5)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    on_disk = {
        str(p.relative_to(tmp_path / "c")) for p in (tmp_path / "c").rglob("*") if p.is_file()
    } - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and "rng_rank0.pt" in on_disk
    assert {"shards/.metadata", "shards/__0_0.distcp"} <= on_disk
    _flip_a_byte(tmp_path / "c" / "rng_rank0.pt")
    with pytest.raises(
        CheckpointError,
        match=r"c/rng_rank0.pt does not match its manifest "
        r"checksum",
    ):
        checkpoint.read_manifest(tmp_path / "c")


def _save_on_ranks(rank, world, group, root):
    torch.manual_seed(100 + rank)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = torch.get_rng_state()
    checkpoint.save(
        pathlib.Path(root) / f"rank{rank}",
        rank=rank,
        world_size=world,
        step=1,
        attempt=0,
        model=model,
        optimizer=opt,
        methods=[],
        group=group,
    )
    return expected


def test_rng_states_of_all_ranks_are_gathered_under_rank0s_manifest(gloo, tmp_path):
    states = gloo.run(2, _save_on_ranks, str(tmp_path))
    merged = tmp_path / "merged"  # every rank's files in one directory, as Ray uploads
    for rank in (0, 1):
        shutil.copytree(tmp_path / f"rank{rank}", merged, dirs_exist_ok=True)
    files = set(checkpoint.read_manifest(merged)["files"])
    assert {"methods.pt", "rng_rank0.pt", "rng_rank1.pt", "shards/.metadata"} <= files
    assert "optimizer.pt" not in files  # torch's SGD: its state is in the shards
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for rank in (0, 1):
        checkpoint.load(merged, rank=rank, seed=0, model=model, optimizer=opt, methods=[])
        assert torch.equal(torch.get_rng_state(), states[rank])


def test_names_sort_by_step_then_revision(tmp_path):
    names = [
        "checkpoint_step00000020-r10",
        "checkpoint_step00000030",
        "checkpoint_step00000020",
        "checkpoint_step00000020-r2",
        "checkpoint_step00000020.partial",
        "other",
    ]
    for n in names:
        (tmp_path / n).mkdir()
    assert checkpoint.listing(str(tmp_path)) == [
        "checkpoint_step00000020",
        "checkpoint_step00000020-r2",
        "checkpoint_step00000020-r10",
        "checkpoint_step00000030",
    ]


def test_a_bad_pick_falls_back_to_the_newest_good_one_with_a_warning(tmp_path):
    run = _run_dir(tmp_path)
    _flip_a_byte(run / "checkpoint_step00000030" / "shards" / "__0_0.distcp")
    warnings = []
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000030", warn=warnings.append)
    assert chosen.name == "checkpoint_step00000020"
    assert warnings == [
        f"{run}/checkpoint_step00000030/shards/__0_0.distcp does not match its "
        f"manifest "
        f"checksum; resuming from the previous good checkpoint, "
        f"checkpoint_step00000020"
    ]
    assert chosen.revision == 1  # a newer name exists: this attempt's names must differ
    # a good pick is taken as it is, silently; newer (unregistered) ones are not considered
    warnings.clear()
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000010", warn=warnings.append)
    assert (chosen.name, chosen.revision, warnings) == ("checkpoint_step00000010", 1, [])


def test_a_pick_deleted_by_hand_falls_back_and_all_bad_is_an_error(tmp_path):
    run = _run_dir(tmp_path)
    shutil.rmtree(run / "checkpoint_step00000030")
    warnings = []
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000030", warn=warnings.append)
    assert (chosen.name, chosen.revision) == ("checkpoint_step00000020", 0)
    assert warnings == [
        f"{run}/checkpoint_step00000030 is missing; falling back to the checkpoint before"
    ]
    for step in (10, 20):
        (run / checkpoint.dir_name(step) / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no usable checkpoint up to checkpoint_step0000003"):
        checkpoint.choose(str(run), pick="checkpoint_step00000030", warn=warnings.append)
    assert checkpoint.choose(str(run), pick=None) is None  # Ray has none: a fresh start


def test_the_drivers_start_wins_unless_this_fit_wrote_a_newer_one(tmp_path):
    run = _run_dir(tmp_path)
    start = checkpoint.resolve_start(str(run), "10")
    assert start == {
        "checkpoint": "checkpoint_step00000010",
        "existing": [checkpoint.dir_name(s) for s in (10, 20, 30)],
    }
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000030", start=start)
    assert (chosen.name, chosen.revision) == ("checkpoint_step00000010", 1)
    shutil.rmtree(run / "checkpoint_step00000030")  # Ray's pick, deleted by hand
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000030", start=start)
    assert chosen.name == "checkpoint_step00000010"
    _save(run / "checkpoint_step00000020-r1", 20)  # written by this fit before a failover
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000020-r1", start=start)
    assert (chosen.name, chosen.revision) == ("checkpoint_step00000020-r1", 0)  # none newer
    _save(run / "checkpoint_step00000030", 30)
    chosen = checkpoint.choose(str(run), pick="checkpoint_step00000020-r1", start=start)
    assert (chosen.name, chosen.revision) == ("checkpoint_step00000020-r1", 2)


def test_from_checkpoint_accepts_a_step_a_name_or_a_directory(tmp_path):
    run = _run_dir(tmp_path)
    for spec in ("20", "checkpoint_step00000020", str(run / "checkpoint_step00000020") + "/"):
        assert checkpoint.resolve_start(str(run), spec)["checkpoint"] == "checkpoint_step00000020"
    with pytest.raises(
        CheckpointError,
        match=r"--from-checkpoint 25: no such checkpoint of .*; "
        r"give a step or one of: checkpoint_step00000010, ",
    ):
        checkpoint.resolve_start(str(run), "25")
    other = _run_dir(tmp_path / "other")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.resolve_start(str(run), str(other / "checkpoint_step00000020"))
    _flip_a_byte(run / "checkpoint_step00000020" / "shards" / ".metadata")
    with pytest.raises(
        CheckpointError, match="checkpoint_step00000020/shards/.metadata does not match"
    ):
        checkpoint.resolve_start(str(run), "20")  # an explicit choice never falls back
    warnings = []
    _flip_a_byte(run / "checkpoint_step00000030" / "methods.pt")
    assert (
        checkpoint.resolve_start(str(run), None, warn=warnings.append)["checkpoint"]
        == "checkpoint_step00000010"
    )
    assert [w.split(f"{run}/")[1].split("/")[0] for w in warnings] == [
        "checkpoint_step00000030",
        "checkpoint_step00000020",
    ]
    assert checkpoint.resolve_start(str(tmp_path / "empty"), None) is None


def _table(run_dir):
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pandas()


def _same_trajectory(run, straight, attempts):
    """30 steps with these attempt numbers, on the uninterrupted run's losses."""
    table = _table(run)
    assert table["step"].tolist() == list(range(30))
    assert table["attempt"].tolist() == attempts
    torch.testing.assert_close(
        torch.tensor(table["loss"].values),
        torch.tensor(_table(straight.run_dir)["loss"].values),
        rtol=1e-6,
        atol=1e-7,
    )


def test_local_resume_past_a_corrupted_checkpoint_keeps_the_trajectory(run_cfg, capsys):
    common = [
        "scaling.num_workers=0",
        "run.steps=30",
        "run.report_interval=5",
        "run.checkpoint_interval=5",
        "run.eval_interval=0",
        "run.num_to_keep=10",
    ]
    straight = launch.fit(run_cfg("digits-sgd", *common))
    paused = launch.fit(run_cfg("digits-sgd", *common, "run.stop_after=20"))
    run = pathlib.Path(paused.run_dir)
    bad = run / "checkpoint_step00000020" / "shards" / "__0_0.distcp"
    _flip_a_byte(bad)
    bad_bytes = bad.read_bytes()
    capsys.readouterr()
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed, resume=True)
    err = capsys.readouterr().err
    assert (
        f"warning: {bad} does not match its manifest checksum; resuming from the previous "
        f"good checkpoint, checkpoint_step00000015"
    ) in err
    _same_trajectory(run, straight, [0] * 15 + [1] * 15)
    # nothing written is overwritten: the bad checkpoint is as it was, the new ones are beside
    assert bad.read_bytes() == bad_bytes
    assert checkpoint.listing(str(run))[-4:] == [
        "checkpoint_step00000020",
        "checkpoint_step00000020-r1",
        "checkpoint_step00000025-r1",
        "checkpoint_step00000030-r1",
    ]
    # and the user can go back to any good checkpoint: the same trajectory from step 10
    launch.fit(resumed, resume=True, from_checkpoint="10")
    _same_trajectory(run, straight, [0] * 10 + [2] * 20)


def test_ray_mode_restore_falls_back_and_reports_under_new_names(run_cfg, tmp_path):
    """Ray's latest checkpoint is corrupted: the runner (which takes Ray's entry points as
    arguments) picks the one before, warns, and never reuses a name Ray has registered."""
    from ray.train import Checkpoint

    from raytrain_eff.engine.runner import Runner

    cfg = run_cfg(
        "digits-sgd",
        "scaling.num_workers=0",
        "run.steps=20",
        "run.report_interval=5",
        "run.checkpoint_interval=5",
        "run.eval_interval=0",
        "run.stop_after=10",
    )
    run = pathlib.Path(launch.fit(cfg).run_dir)
    _flip_a_byte(run / "checkpoint_step00000010" / "methods.pt")
    logged, reported = [], []
    runner = Runner(
        dataclasses_replace_steps(cfg),
        rank=0,
        world=1,
        group=None,
        device=torch.device("cpu"),
        run_dir=str(run),
        run_name="r",
        get_checkpoint=lambda: Checkpoint(str(run / "checkpoint_step00000010")),
        report=lambda metrics, checkpoint=None, **kw: reported.append(kw),
        log=lambda event: logged.append(event["text"]),
    )
    runner.run()
    assert runner.start_step == 5
    assert any(
        "warning: " in t and "checkpoint_step00000010/methods.pt does not match" in t
        for t in logged
    )
    names = [kw["checkpoint_dir_name"] for kw in reported if kw]
    assert names == [
        "checkpoint_step00000010-r1",
        "checkpoint_step00000015-r1",
        "checkpoint_step00000020-r1",
    ]


def dataclasses_replace_steps(cfg):
    import dataclasses

    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, stop_after=None))


def test_cli_from_checkpoint_names_what_exists(run_cfg, capsys):
    cfg = run_cfg(
        "digits-sgd",
        "scaling.num_workers=0",
        "run.steps=10",
        "run.report_interval=5",
        "run.checkpoint_interval=5",
        "run.eval_interval=0",
    )
    run = launch.fit(cfg).run_dir
    capsys.readouterr()
    assert cli.main(["train", "--resume", run, "--from-checkpoint", "7"]) != 0
    err = capsys.readouterr().err
    assert "--from-checkpoint 7: no such checkpoint" in err
    assert "checkpoint_step00000005, checkpoint_step00000010" in err
    assert "Traceback" not in err
