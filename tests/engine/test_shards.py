"""Checkpoints as torch.distributed.checkpoint shards: each rank writes only what it holds, a load
reshards to any world size and strategy, a lost shard is never resumed from, and loading runs
no pickled code. Real FSDP2 on real gloo ranks; Ray's upload is a copy of each rank's files."""

import json
import pathlib
import pickle
import shutil

import one_process_checkpoint
import pytest
import torch
from torch import nn

from raytrain_eff.engine import checkpoint, shards
from raytrain_eff.engine.checkpoint import CheckpointError

DATA = pathlib.Path(__file__).parent / "data"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def _trained(model: nn.Module) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 5, generator=torch.Generator().manual_seed(1))).sum().backward()
    opt.step()
    return opt


def _sharded(model: nn.Module, group) -> nn.Module:
    from raytrain_eff.engine import sharding

    device_mesh = sharding.mesh(group, torch.device("cpu"))
    return sharding.shard(model, [model[0]], device_mesh)


def _save_sharded(rank, world, group, root):
    model = _sharded(_model(), group)
    opt = _trained(model)
    checkpoint.save(
        pathlib.Path(root) / f"rank{rank}",
        rank=rank,
        world_size=world,
        step=3,
        attempt=0,
        model=model,
        optimizer=opt,
        methods=[],
        group=group,
    )
    held = [
        sum(p.to_local().numel() for p in model.parameters()),
        sum(v.to_local().numel() for s in opt.state.values() for k, v in s.items() if k != "step"),
    ]
    from raytrain_eff.engine import sharding

    return held, sharding.full_model_state(model)


def _merged(root: pathlib.Path, world: int) -> pathlib.Path:
    """Every rank's files in one directory: what Ray Train's upload makes of them."""
    merged = root / "merged"
    for rank in range(world):
        shutil.copytree(root / f"rank{rank}", merged, dirs_exist_ok=True)
    return merged


def _reference():
    model = _model()
    return model, _trained(model)


def test_fsdp_ranks_write_their_own_shards_and_one_process_reads_them_whole(gloo, tmp_path):
    results = gloo.run(2, _save_sharded, str(tmp_path))
    (held0, full), (held1, _) = results
    total = sum(p.numel() for p in _model().parameters())
    assert held0[0] + held1[0] == total and held0[0] < total  # each rank: its slice
    # every rank wrote a data file of its own; rank 0 also the metadata and the manifest
    assert {p.name for p in (tmp_path / "rank1" / "shards").iterdir()} == {"__1_0.distcp"}
    assert not (tmp_path / "rank1" / "manifest.json").exists()
    merged = _merged(tmp_path, 2)
    files = set(checkpoint.read_manifest(merged)["files"])
    assert {"shards/__0_0.distcp", "shards/__1_0.distcp", "shards/.metadata"} <= files

    model, opt = _model(), None
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    checkpoint.load(merged, rank=0, seed=0, model=model, optimizer=opt, methods=[])
    ref_model, ref_opt = _reference()
    for name, value in ref_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], value) and torch.equal(full[name], value)
    for a, b in zip(
        opt.state_dict()["state"].values(), ref_opt.state_dict()["state"].values(), strict=True
    ):
        assert all(torch.equal(a[k], b[k]) for k in b)


def _load_sharded(rank, world, group, directory):
    model = _sharded(_model(), group)
    for p in model.parameters():  # nothing of the saved weights left in place
        p.data.to_local().zero_()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    checkpoint.load(
        pathlib.Path(directory),
        rank=rank,
        seed=0,
        model=model,
        optimizer=opt,
        methods=[],
        group=group,
    )
    from raytrain_eff.engine import sharding

    moments = {
        n: s["exp_avg"].full_tensor()
        for n, s in zip([n for n, _ in model.named_parameters()], opt.state.values(), strict=True)
    }
    return sharding.full_model_state(model), moments


@pytest.mark.parametrize("world", [2, 3])
def test_a_one_process_checkpoint_reshards_onto_fsdp_ranks(gloo, tmp_path, world):
    model, opt = _reference()
    one_process_checkpoint.save(tmp_path / "c", 3, model, opt)
    state, moments = gloo.run(world, _load_sharded, str(tmp_path / "c"))[0]
    for name, value in model.state_dict().items():
        assert torch.equal(state[name], value)
    for (name, _), s in zip(model.named_parameters(), opt.state.values(), strict=True):
        assert torch.equal(moments[name], s["exp_avg"])


def test_a_checkpoint_that_lost_a_ranks_shard_is_never_resumed_from(gloo, tmp_path):
    """A rank killed mid-save leaves the others' files and, at most, rank 0's manifest: the
    manifest lists every rank's shard, so the checkpoint fails and the one before is used."""
    run = tmp_path / "run"
    _, older = _reference()
    model = _model()
    one_process_checkpoint.save(
        run / checkpoint.dir_name(2), 2, model, torch.optim.AdamW(model.parameters())
    )
    gloo.run(2, _save_sharded, str(tmp_path))
    shutil.copytree(tmp_path / "rank0", run / checkpoint.dir_name(3))  # rank 1's never came
    warnings: list[str] = []
    start = checkpoint.resolve_start(str(run), warn=warnings.append)
    assert start["checkpoint"] == checkpoint.dir_name(2)
    assert warnings == [
        f"{run}/{checkpoint.dir_name(3)}/shards/__1_0.distcp is missing; "
        f"resuming from the previous good checkpoint, {checkpoint.dir_name(2)}"
    ]


def test_checkpoints_of_earlier_versions_still_load():
    directory = DATA / "format2_step00000005"  # written by format 2: model.pt whole
    assert json.loads((directory / "manifest.json").read_text())["format"] == 2
    torch.manual_seed(7)  # how that checkpoint was made
    expected = nn.Linear(3, 2)
    expected_opt = torch.optim.AdamW(expected.parameters(), lr=0.1)
    expected(torch.randn(4, 3)).sum().backward()
    expected_opt.step()
    model = nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    manifest = checkpoint.load(directory, rank=0, seed=0, model=model, optimizer=opt, methods=[])
    assert manifest["step"] == 5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.state_dict().items())
    assert torch.equal(
        opt.state_dict()["state"][0]["exp_avg"], expected_opt.state_dict()["state"][0]["exp_avg"]
    )
    plain = nn.Linear(3, 2)
    checkpoint.load_model(directory, plain)
    assert torch.equal(plain.weight, expected.weight)


class _Payload:
    """Unpickled, it would create the file ``marker``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_shard_metadata_that_names_other_code_is_refused(tmp_path):
    model, opt = _reference()
    one_process_checkpoint.save(tmp_path / "c", 1, model, opt)
    metadata = tmp_path / "c" / "shards" / ".metadata"
    marker = tmp_path / "pickled-code-ran"
    metadata.write_bytes(pickle.dumps(_Payload(marker)))
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["files"]["shards/.metadata"] = checkpoint._digest(metadata)  # checksums agree
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError,
        match=r"shards could not be read: .*names "
        r"pathlib\.Path\.touch, which is not a torch",
    ):
        fresh = _model()
        checkpoint.load(
            tmp_path / "c",
            rank=0,
            seed=0,
            model=fresh,
            optimizer=torch.optim.AdamW(fresh.parameters()),
            methods=[],
        )
    assert not marker.exists()


def test_a_method_optimizer_with_its_own_layout_is_saved_whole(tmp_path):
    from raytrain_eff.methods.base import MethodOptimizer

    class Flat(MethodOptimizer):
        world_size_independent_state = True

        def __init__(self, params):
            super().__init__(params, {"lr": 0.1})
            self.state["flat"] = {"v": torch.arange(4.0)}

    from raytrain_eff.methods.baselines import DecoupledSGD

    model = _model()
    assert shards.optimizer_in_shards(torch.optim.AdamW(model.parameters()))
    # a subclass of torch's keeps its layout: in shards (whole, it was rank 0's slices alone)
    assert shards.optimizer_in_shards(DecoupledSGD(model.parameters(), 0.1, 0.9, False))
    flat = Flat(model.parameters())
    assert not shards.optimizer_in_shards(flat)
    one_process_checkpoint.save(tmp_path / "c", 1, model, flat)
    assert "optimizer.pt" in checkpoint.read_manifest(tmp_path / "c")["files"]
    with pytest.raises(CheckpointError, match="optimizer.pt does not match"):
        (tmp_path / "c" / "optimizer.pt").write_bytes(b"x")
        checkpoint.read_manifest(tmp_path / "c")


def _saves_through_one_plan(rank, world, group, root):
    """Three saves under one plan key: the model alone, then with the optimizer's state (a new
    layout), then after another step (the layout unchanged: the cached plan)."""
    from torch.distributed.checkpoint.planner import SavePlanner

    from raytrain_eff.engine import sharding

    model = _sharded(_model(), group)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    names = [n for n, _ in model.named_parameters()]
    saved, cached = [], []
    for i, with_optimizer in enumerate((False, True, True)):
        model(torch.randn(4, 5, generator=torch.Generator().manual_seed(i))).sum().backward()
        opt.step()
        cached.append("plan-test" in SavePlanner._cached_all_plans)
        directory = pathlib.Path(root) / f"save{i}" / f"rank{rank}"
        optimizer = opt if with_optimizer else None
        shards.begin_save(directory, model, optimizer, group, plan_key="plan-test").wait()
        state = zip(names, opt.state.values(), strict=True)
        moments = {n: s["exp_avg"].full_tensor() for n, s in state}
        saved.append((sharding.full_model_state(model), moments))
    return saved, cached


def test_saves_that_reuse_dcps_plan_hold_each_saves_values(gloo, tmp_path):
    (saved, cached), _ = gloo.run(2, _saves_through_one_plan, str(tmp_path))
    assert cached == [False, True, True]  # the later saves went through the cache
    for i, (state, moments) in enumerate(saved):
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=0.1) if i else None
        shards.load(_merged(tmp_path / f"save{i}", 2), model, opt)
        for name, value in state.items():
            assert torch.equal(model.state_dict()[name], value), (i, name)
        if opt is not None:
            for (name, _), s in zip(model.named_parameters(), opt.state.values(), strict=True):
                assert torch.equal(s["exp_avg"], moments[name]), (i, name)
