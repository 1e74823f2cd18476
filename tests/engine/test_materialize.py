"""Meta-device construction (engine.materialize) on real gloo ranks.

The weights a run starts from depend on the seed alone: gathered from P = 1, 2, 3 FSDP
shards they are bitwise the unsharded model's (ddp and local mode build that one), ties stay
tied, buffers are filled. Construction holds this rank's slices plus one module, never the
model: the live bytes of torch's CPU allocator (the profiler's memory events) say so.
"""

import contextlib

import pytest
import torch
from torch import nn
from torch.autograd import DeviceType
from torch.distributed.tensor import DTensor
from torch.profiler import ProfilerActivity, profile

from raytrain_eff import config
from raytrain_eff.engine import materialize
from raytrain_eff.engine.runner import build_task
from raytrain_eff.tasks.base import Task

GPT = ["task.seq_len=16", "task.n_layer=2", "task.n_head=2", "task.n_embd=32"]


class Causal(nn.Module):
    """A buffer only reset_parameters fills: meta construction must not leave it empty."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mask", torch.empty(n, n, dtype=torch.bool))
        self.reset_parameters()

    def reset_parameters(self):
        self.mask.copy_(torch.ones_like(self.mask).tril())


class Odd(Task):
    """Uneven dim-0 chunks (7 rows over 2 or 3 ranks), an empty one (2 rows over 3), buffers
    (batch norm statistics, a mask) and a tied embedding/head."""

    def __init__(self, width: int = 4):
        super().__init__(None, None)
        self.width = width

    def build_model(self):
        emb, head = nn.Embedding(7, self.width), nn.Linear(self.width, 7, bias=False)
        head.weight = emb.weight
        return nn.Sequential(emb, nn.Linear(self.width, 2), nn.BatchNorm1d(2), Causal(5), head)

    def shard_units(self, model):
        return [model[1]]


class Wide(Task):
    """Six 768-wide layers (about 14 MB): construction's peak is measured against it."""

    def __init__(self, builds_on_meta: bool):
        super().__init__(None, None)
        self.builds_on_meta = builds_on_meta

    def build_model(self):
        return nn.Sequential(*(nn.Linear(768, 768) for _ in range(6)))

    def shard_units(self, model):
        return list(model)


def _gpt_task():
    task = build_task(config.load(preset="gpt-dense", overrides=GPT))
    task.load()
    return task


def _tensors(model):
    """Every parameter and buffer by name, whole (sharded ones gathered: collective)."""
    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        out[name] = (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()
    return out


def _build_sharded(rank, world, group, task, seed):
    from raytrain_eff.engine import sharding

    if task is None:
        task = _gpt_task()
    model, built = materialize.build(
        task, seed, torch.device("cpu"), mesh=sharding.mesh(group, torch.device("cpu"))
    )
    assert built == materialize.META
    assert all(isinstance(p, DTensor) for p in model.parameters())
    tied = (
        model[0].weight is model[-1].weight
        if isinstance(model, nn.Sequential)
        else model.lm_head.weight is model.transformer.wte.weight
    )
    return _tensors(model), tied


def _assert_bitwise(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("which", ["gpt", "odd"])
def test_gathered_shards_are_bitwise_the_unsharded_model_at_any_world_size(which, gloo):
    task = _gpt_task() if which == "gpt" else Odd()
    whole, built = materialize.build(task, 3, torch.device("cpu"))  # ddp's and local mode's
    assert built == materialize.META
    expected = _tensors(whole)
    for world in (1, 2, 3):
        # the GPT task is rebuilt on the ranks (its corpus need not travel)
        results = gloo.run(world, _build_sharded, None if which == "gpt" else task, 3)
        for gathered, tied in results:
            assert tied
            _assert_bitwise(gathered, expected)
    other = _tensors(materialize.build(task, 4, torch.device("cpu"))[0])
    assert any(not torch.equal(other[n], expected[n]) for n in expected)  # the seed matters
    if which == "odd":  # buffers hold what plain construction puts there
        plain = task.build_model()
        assert torch.equal(expected["3.mask"], plain[3].mask) and expected["3.mask"].any()
        assert torch.equal(expected["2.running_var"], torch.ones(2))
        assert whole[0].weight is whole[-1].weight


def test_gpt_init_keeps_its_distributions():
    """normal(0, 0.02), residual projections at 0.02/√(2·n_layer), zero biases, LayerNorm 1/0."""
    model, _ = materialize.build(_gpt_task(), 0, torch.device("cpu"))
    residual = 0.02 / (2 * 2) ** 0.5
    for name, p in model.named_parameters():
        if name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(0.02, rel=0.15), name
        elif name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(residual, rel=0.15), name
        elif name.endswith("bias"):
            assert not p.any(), name
        elif "ln" in name:
            assert torch.equal(p, torch.ones_like(p)), name


def test_a_module_without_reset_parameters_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

    class NoReset(Odd):
        def build_model(self):
            return nn.Sequential(nn.Linear(3, 3), Scale())

    with pytest.raises(
        TypeError,
        match=r"module '1' \(Scale\).*no reset_parameters.*"
        r"builds_on_meta = False on the task NoReset",
    ):
        materialize.build(NoReset(), 0, torch.device("cpu"))


def test_tasks_that_draw_their_own_init_are_built_whole_as_before():
    task = build_task(config.load(preset="wide-sublinear"))
    task.load()
    model, built = materialize.build(task, 5, torch.device("cpu"))
    assert built == materialize.WHOLE
    torch.manual_seed(5)
    _assert_bitwise(_tensors(model), _tensors(task.build_model()))


@contextlib.contextmanager
def _peak_live_bytes(out: dict):
    """The peak of live bytes that torch's CPU allocator handed out inside the block (only
    blocks allocated inside it count, so the baseline is 0)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield
    events = sorted(
        (
            e
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
        ),
        key=lambda e: e.start_ns(),
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    out["peak"] = peak


def _construction_peak(rank, world, group, builds_on_meta):
    from raytrain_eff.engine import sharding

    mesh = sharding.mesh(group, torch.device("cpu"))
    out: dict = {}
    with _peak_live_bytes(out):
        model, _ = materialize.build(Wide(builds_on_meta), 0, torch.device("cpu"), mesh=mesh)
    return out["peak"], sum(p.to_local().nbytes for p in model.parameters())


def test_construction_holds_its_slices_and_one_module_not_the_model(gloo):
    model_bytes = sum(p.nbytes for p in Wide(True).build_model().parameters())
    layer_bytes = model_bytes // 6
    for (peak, local), (whole_peak, _) in zip(
        gloo.run(2, _construction_peak, True), gloo.run(2, _construction_peak, False), strict=True
    ):
        print(
            f"construction peak at P=2: meta {peak / 2**20:.1f} MiB, whole "
            f"{whole_peak / 2**20:.1f} MiB; model {model_bytes / 2**20:.1f} MiB, "
            f"this rank's slices {local / 2**20:.1f} MiB"
        )
        assert local == pytest.approx(model_bytes / 2, rel=0.01)
        assert peak <= local + 1.5 * layer_bytes  # its slices plus about one module
        assert whole_peak >= model_bytes  # the meter sees a whole build


def _units_and_warnings(rank, world, group):
    import warnings

    from torch.distributed.fsdp import FSDPModule

    from raytrain_eff.engine import sharding

    task = _gpt_task()
    with warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("always", append=True)  # every warning not filtered on purpose
        model, _ = materialize.build(
            task, 0, torch.device("cpu"), mesh=sharding.mesh(group, torch.device("cpu"))
        )
        task.loss(model, task.batch_at(0, rank, world, 2)).backward()
    units = [n for n, m in model.named_modules() if isinstance(m, FSDPModule)]
    sizes = [sum(p.numel() for p in m.parameters()) for m in task.shard_units(model)]
    return units, max(sizes), [str(w.message) for w in seen if "FSDP" in str(w.message)]


def test_gpt_units_are_each_blocks_attention_and_mlp(gloo):
    """A unit is a third (attention) or two thirds (MLP) of a block, so no forward or backward
    gathers a whole block; FSDP's warning that these units return views is silenced on
    purpose (Block adds them out of place), and no other FSDP warning appears."""
    for units, largest, fsdp_warnings in gloo.run(2, _units_and_warnings):
        assert units == ["", *(f"transformer.h.{i}.{u}" for i in range(2) for u in ("attn", "mlp"))]
        assert largest == 2 * 4 * 32 * 32 + 4 * 32 + 32  # the MLP: c_fc and c_proj
        assert fsdp_warnings == []
