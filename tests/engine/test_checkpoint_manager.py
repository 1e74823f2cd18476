"""engine.checkpoint_manager: where a run starts, and checkpoints that count only once every
rank's shards are on disk. A rank killed for real (``os._exit``) in the middle of a save,
synchronous or in the background, leaves nothing a resume picks: the resume takes the
checkpoint before and continues on the uninterrupted run's trajectory."""

from __future__ import annotations

import os
import pathlib

import one_process_checkpoint
import pytest
import torch
from torch import nn

from raytrain_eff import config
from raytrain_eff.engine import checkpoint, local_ranks, records
from raytrain_eff.engine.checkpoint_manager import CheckpointManager, StartPoint

RUN = [
    "data.batch_size=16",
    "scaling.num_workers=2",
    "scaling.strategy=fsdp",
    "run.steps=12",
    "run.report_interval=4",
    "run.checkpoint_interval=4",
    "run.eval_interval=0",
    "run.num_to_keep=5",
    "train.warmup_steps=1",
    "monitor.enabled=false",
    "monitor.progress=false",
]
KILLED_AT = 8  # the save of this step is cut short


def _manager(run_dir, **kw) -> CheckpointManager:
    return CheckpointManager(
        str(run_dir), rank=0, world=1, group=None, keep=2, report=lambda *a, **k: None, **kw
    )


def test_the_start_point_names_where_the_run_starts(tmp_path):
    run = tmp_path / "run"
    assert _manager(run).choose() == StartPoint("fresh")
    assert _manager(run).choose(StartPoint.donor("/d/c")) == StartPoint("donor", "/d/c")
    for step in (4, 8):
        one_process_checkpoint.save(run / checkpoint.dir_name(step), step)
    own = _manager(run).choose(StartPoint.donor("/d/c"))  # its own first: a restart
    assert own == StartPoint("own", str(run / checkpoint.dir_name(8)))
    chosen = StartPoint.resumed(str(run), "4")
    names = tuple(checkpoint.listing(str(run)))
    assert chosen == StartPoint("chosen", checkpoint.dir_name(4), names)
    manager = _manager(run)
    assert manager.choose(chosen) == StartPoint(
        "chosen", str(run / checkpoint.dir_name(4)), revision=1
    )
    assert manager.revision == 1  # step 8's name is taken
    ray = _manager(run, get_checkpoint=lambda: None).choose()
    assert ray == StartPoint("fresh")  # Ray has none to hand: what is on disk is not Ray's


def test_a_background_save_holds_the_step_and_counts_only_once_finished(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    at_the_step = {k: v.clone() for k, v in model.state_dict().items()}
    saving = checkpoint.begin_save(
        tmp_path / "c",
        rank=0,
        world_size=1,
        step=1,
        attempt=0,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        methods=[],
        background=True,
    )
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on while the shards are written
    assert not (tmp_path / "c" / checkpoint.MANIFEST).exists()
    with pytest.raises(checkpoint.CheckpointError, match="no manifest.json"):
        checkpoint.read_manifest(tmp_path / "c")
    saving.finish()
    restored = nn.Linear(3, 2)
    checkpoint.load_model(tmp_path / "c", restored)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in at_the_step.items())


@pytest.mark.parametrize("ray_keeps", [False, True], ids=["engine-keeps", "ray-keeps"])
def test_a_background_checkpoint_is_reported_with_its_own_steps_metrics(tmp_path, ray_keeps):
    """Ray hears of a background save at the next report, with the metrics of its own step
    and before that report's: its order of steps is kept."""
    reported: list[tuple[int, str | None, str | None]] = []
    read_manifest = checkpoint.read_manifest  # the argument below takes the module's name

    def report(metrics, checkpoint=None, checkpoint_dir_name=None):
        path = None if checkpoint is None else pathlib.Path(checkpoint.path)
        if path is not None:  # what it points at is complete: the manifest checks out
            assert read_manifest(path)["step"] == metrics["step"]
        reported.append((metrics["step"], path and path.name, checkpoint_dir_name))

    manager = CheckpointManager(
        str(tmp_path),
        rank=0,
        world=1,
        group=None,
        keep=2,
        background=True,
        report=report,
        get_checkpoint=(lambda: None) if ray_keeps else None,
    )
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = dict(attempt=0, model=model, optimizer=optimizer, methods=[])
    manager.report({"step": 4}, save=dict(step=4, **state))
    assert reported == []  # in flight
    manager.report({"step": 6})
    manager.report({"step": 8}, save=dict(step=8, **state))
    manager.finish()  # the run's end
    name = checkpoint.dir_name
    if ray_keeps:  # each rank's own directory, uploaded under the checkpoint's name
        assert [(s, d) for s, _, d in reported] == [(4, name(4)), (6, None), (8, name(8))]
    else:
        assert reported == [(4, name(4), None), (6, None, None), (8, name(8), None)]
        assert checkpoint.listing(str(tmp_path)) == [name(4), name(8)]


# -- a rank killed in the middle of a save, on real gloo ranks ----------------------------------
def _train(rank, world, run_dir, overrides, kill_rank):
    """The product's Runner on this rank; with ``kill_rank``, that rank's process dies inside
    DCP's writer once its shard files for step KILLED_AT are written, before any manifest."""
    import torch.distributed.checkpoint as dcp

    if kill_rank == rank:
        write_data = dcp.FileSystemWriter.write_data

        def write_then_die(self, plan, planner):
            done = write_data(self, plan, planner)
            if checkpoint.dir_name(KILLED_AT) in str(self.path):
                done.wait()  # this rank's shards are on disk; the manifest is not
                os._exit(9)
            return done

        dcp.FileSystemWriter.write_data = write_then_die
    cfg = config.load(preset="digits-sgd", overrides=overrides)
    runner = local_ranks.runner(cfg, rank, world, run_dir)
    runner.run()
    return runner.start, runner.start_step


def _rows(run_dir) -> list[dict]:
    return records.read_table(str(run_dir)).to_pylist()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    local_ranks.spawn(_train, 2, str(run_dir), RUN, None, timeout=600)
    return _rows(run_dir)


@pytest.mark.parametrize(
    "async_save, kill_rank", [(False, 1), (True, 0)], ids=["sync-rank1", "async-rank0"]
)
def test_a_rank_killed_mid_save_leaves_nothing_a_resume_picks(
    tmp_path, straight, async_save, kill_rank
):
    run = tmp_path / "run"
    run.mkdir()
    overrides = RUN + [f"run.checkpoint_async={str(async_save).lower()}"]
    with pytest.raises(local_ranks.RankFailed):
        local_ranks.spawn(_train, 2, str(run), overrides, kill_rank, timeout=600)
    killed = run / (checkpoint.dir_name(KILLED_AT) + ".partial")
    assert (killed / checkpoint.SHARDS).is_dir()  # the save had begun: shards on disk
    assert not (killed / checkpoint.MANIFEST).exists()
    assert checkpoint.listing(str(run)) == [checkpoint.dir_name(4)]
    assert checkpoint.newest_verified(str(run)) == run / checkpoint.dir_name(4)

    (start, start_step), _ = local_ranks.spawn(_train, 2, str(run), overrides, None, timeout=600)
    assert (start.kind, pathlib.Path(start.path or "").name, start_step) == (
        "own",
        checkpoint.dir_name(4),
        4,
    )
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(12))
    assert [r["attempt"] for r in rows] == [0] * 4 + [1] * 8
    torch.testing.assert_close(
        torch.tensor([r["loss"] for r in rows]),
        torch.tensor([r["loss"] for r in straight]),
        rtol=1e-6,
        atol=1e-7,
    )
    assert checkpoint.listing(str(run)) == [checkpoint.dir_name(s) for s in (4, 8, 12)]
    assert not killed.exists()  # the resumed run's save of that step cleared the remains
