"""One rule for collectives: every collective in the package goes through
``raytrain_eff.collectives``, which puts its tensors on the group's device and the results back
where the caller's tensors live."""

from __future__ import annotations

import ast
import os
import pathlib
import socket

import pytest
import torch

import raytrain_eff
from raytrain_eff import collectives

PACKAGE = pathlib.Path(raytrain_eff.__file__).parent
# the helper itself is the only module that calls torch.distributed's collectives; FSDP's own
# communication (fully_shard, DTensor, torch.distributed.checkpoint) is not a c10d call here
ALLOWED = {"collectives.py"}
COLLECTIVES = {
    "all_reduce",
    "all_reduce_coalesced",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_coalesced",
    "_all_gather_base",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "_reduce_scatter_base",
    "broadcast",
    "reduce",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
    "gather_object",
    "all_gather_object",
    "broadcast_object_list",
    "scatter_object_list",
    "barrier",
    "monitored_barrier",
    "send",
    "recv",
    "isend",
    "irecv",
    "batch_isend_irecv",
    "send_object_list",
    "recv_object_list",
}


def direct_collectives(source: str) -> list[str]:
    """``line: name`` of every torch.distributed collective called or imported in ``source``."""
    tree = ast.parse(source)
    aliases: set[str] = set()  # names bound to torch.distributed or a submodule of it
    torch_names: set[str] = set()  # names bound to torch itself
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch" or (a.name.startswith("torch.") and a.asname is None):
                    torch_names.add((a.asname or a.name).split(".")[0])
                elif a.name.startswith("torch.distributed"):
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                if node.module.startswith("torch.distributed") and a.name in COLLECTIVES:
                    found.append(f"{node.lineno}: {a.name}")
                elif node.module.startswith("torch") and (
                    a.name == "distributed" or node.module.startswith("torch.distributed")
                ):
                    aliases.add(a.asname or a.name)

    def from_distributed(value: ast.expr) -> bool:
        chain = []
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name):
            return False
        return value.id in aliases or (value.id in torch_names and chain[-1:] == ["distributed"])

    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in COLLECTIVES
            and from_distributed(node.func.value)
        ):
            found.append(f"{node.lineno}: {node.func.attr}")
    return found


def test_every_collective_in_the_package_goes_through_the_helper():
    offences = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in ALLOWED:
            hits = direct_collectives(path.read_text())
            if hits:
                offences[rel] = hits
    assert offences == {}, f"call raytrain_eff.collectives instead: {offences}"


def test_the_scan_finds_every_spelling_of_a_direct_collective():
    source = """
import torch
import torch.distributed as dist
import torch.distributed
from torch import distributed as D
from torch.distributed import barrier, get_rank
import torch.distributed.nn.functional as F
from raytrain_eff import collectives
dist.all_reduce(t)
torch.distributed.broadcast(t, 0)
D.all_gather_into_tensor(o, t)
F.all_reduce(t)
dist.nn.functional.reduce_scatter(o, ts)
dist.get_rank()
collectives.all_reduce(t)
t.all_reduce()
"""
    assert direct_collectives(source) == [
        "6: barrier",
        "9: all_reduce",
        "10: broadcast",
        "11: all_gather_into_tensor",
        "12: all_reduce",
        "13: reduce_scatter",
    ]


def test_a_tensor_already_in_place_is_handed_over_as_it_is():
    cpu = torch.device("cpu")
    t = torch.ones(3)
    assert collectives._staged(t, cpu) is t
    strided = torch.ones(3, 2).t()
    copy = collectives._staged(strided, cpu)
    assert copy is not strided and copy.is_contiguous()
    assert copy.data_ptr() != strided.data_ptr()


def _exercise(rank, world, group):
    import torch

    from raytrain_eff import collectives as C

    out = {"device": str(C.device_of(group))}
    t = torch.tensor([rank + 1.0])
    ptr = t.data_ptr()
    out["same_tensor"] = C.all_reduce(t, group) is t and t.data_ptr() == ptr
    out["sum"] = t.tolist()
    base = torch.arange(6.0) * (rank + 1)
    view = base.view(2, 3).t()  # not contiguous: staged, written back
    C.all_reduce(view, group, op=C.ReduceOp.MAX)
    out["strided_max"] = base.tolist()
    bucket = torch.full((4,), float(rank))
    pending = C.all_reduce_async(bucket, group)
    out["async"] = pending.wait().tolist()
    token = torch.tensor([10 * rank + 7], dtype=torch.int64)
    C.broadcast(token, 0, group)
    out["broadcast"] = token.tolist()
    gathered = torch.empty(2, world).t()  # a non-contiguous output buffer
    C.all_gather_into_tensor(gathered, torch.tensor([[rank, -rank]], dtype=torch.float32), group)
    out["gathered"] = gathered.tolist()
    shard = torch.empty(2)
    C.reduce_scatter_tensor(shard, torch.arange(2.0 * world) + rank, group)
    out["shard"] = shard.tolist()
    parts = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    C.all_gather(parts, torch.tensor([rank * rank]), group)
    out["parts"] = [int(p) for p in parts]
    # async: launched, then waited; a non-contiguous output is written back at the wait
    column = torch.zeros(2, 3)[:, 1]
    pending = C.reduce_scatter_tensor_async(column, torch.arange(2.0 * world) + rank, group)
    out["shard_async"] = pending.wait().tolist()
    grid = torch.zeros(2, world).t()  # (world, 2), not contiguous
    C.all_gather_into_tensor_async(grid, torch.tensor([[rank, 1.0]]), group).wait()
    out["gathered_async"] = grid.tolist()
    objs = [None] * world
    C.all_gather_object(objs, {"rank": rank}, group)
    out["objects"] = objs
    at_0 = [None] * world if rank == 0 else None
    C.gather_object(f"r{rank}", at_0, group, group_dst=0)
    out["gathered_objects"] = at_0
    C.barrier(group)
    return out


@pytest.mark.parametrize("world", [2, 3])
def test_the_helper_on_gloo_ranks(gloo, world):
    results = gloo.run(world, _exercise)
    total = world * (world + 1) / 2
    for rank, r in enumerate(results):
        assert r["device"] == "cpu"
        assert r["same_tensor"] and r["sum"] == [total]
        assert r["strided_max"] == [float(world * i) for i in range(6)]
        assert r["async"] == [float(sum(range(world)))] * 4
        assert r["broadcast"] == [7]
        assert r["gathered"] == [[float(p), float(-p)] for p in range(world)]
        lo = 2 * rank
        assert r["shard"] == [float(world * (lo + i) + sum(range(world))) for i in range(2)]
        assert r["parts"] == [p * p for p in range(world)]
        assert r["shard_async"] == r["shard"]
        assert r["gathered_async"] == [[float(p), 1.0] for p in range(world)]
        assert r["objects"] == [{"rank": p} for p in range(world)]
        assert r["gathered_objects"] == ([f"r{p}" for p in range(world)] if rank == 0 else None)


def _nccl_rank(rank: int, world: int, port: int) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    try:
        assert collectives.device_of(None) == torch.device("cuda", rank)
        cpu = torch.tensor([rank + 1.0], dtype=torch.float64)  # a host scalar, as before
        assert collectives.all_reduce(cpu) is cpu and cpu.device.type == "cpu"
        assert cpu.item() == world * (world + 1) / 2
        on_gpu = torch.ones(3, device="cuda")
        assert collectives.all_reduce(on_gpu) is on_gpu
        assert on_gpu.tolist() == [float(world)] * 3
        token = torch.tensor([rank + 5], dtype=torch.int64)
        collectives.broadcast(token, 0)
        assert token.item() == 5
        parts = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
        collectives.all_gather(parts, torch.tensor([rank]))
        assert [int(p) for p in parts] == list(range(world))
        collectives.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL needs a CUDA GPU")
def test_host_tensors_under_nccl_go_to_the_gpu_and_come_back():
    import torch.multiprocessing as mp

    world = min(2, torch.cuda.device_count())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_nccl_rank, args=(world, port), nprocs=world, join=True)
