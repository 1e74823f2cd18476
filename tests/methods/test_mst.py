"""MST's DST engine: masks hold, moments reset, resume is exact, ranks agree, FLOPs add up."""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from raytrain_eff.hparams.mst import MSTConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.mst.method import MST
from raytrain_eff.methods.mst.topology import discover, layer_densities, prune_and_grow
from raytrain_eff.tasks.lm import GPT

V, T = 13, 8


def tiny_gpt(seed=0, n_layer=2, n_embd=16):
    torch.manual_seed(seed)
    return GPT(vocab_size=V, seq_len=T, n_layer=n_layer, n_head=2, n_embd=n_embd)


def batch(step, rank=0, B=4):
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randint(0, V, (B, T + 1), generator=g)


def lm_loss(model, b):
    logits = model(b[:, :-1])
    return F.cross_entropy(logits.reshape(-1, V), b[:, 1:].reshape(-1))


def make(cfg, steps, seed=0, sgd=False, ctx=None):
    model = tiny_gpt(seed)
    ctx = ctx or MethodContext(total_steps=steps)
    mst = MST(cfg)
    mst.prepare(model, ctx)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if sgd
        else torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    )
    ctx.optimizer = opt
    return model, mst, opt, ctx


def train(model, mst, opt, ctx, steps, start=0, check=None):
    for t in range(start, steps):
        mst.before_step(t, ctx)
        opt.zero_grad()
        lm_loss(model, batch(t, ctx.rank)).backward()
        if ctx.distributed:
            for p in model.parameters():
                dist.all_reduce(p.grad, group=ctx.group)
                p.grad /= ctx.world_size
        if check:
            check(t)
        opt.step()
        mst.after_step(t, ctx)


CFG = dict(
    sparsity=0.8,
    warmup_end=0.2,
    restore_start=0.6,
    restore_end=0.8,
    update_every=3,
    attention_window=3,
    attention_tile=4,
)


def test_layer_densities_meet_the_budget():
    shapes = [(13, 16), (48, 16), (16, 16), (64, 16), (16, 64)]
    n = [a * b for a, b in shapes]
    for dist_name in ("erk", "er", "uniform"):
        d = layer_densities(shapes, 0.3, dist_name)
        assert sum(di * ni for di, ni in zip(d, n, strict=True)) == pytest.approx(0.3 * sum(n))
    erk = layer_densities([(4, 4), (400, 400)], 0.5, "erk")
    assert erk[0] == 1.0 and erk[1] == pytest.approx((0.5 * 160016 - 16) / 160000)


def test_prune_and_grow_by_hand():
    w = torch.tensor([0.5, -0.1, 0.3, 0.0, 0.0, 0.0, 0.2, 0.0])
    m = torch.tensor([1, 1, 1, 0, 0, 0, 1, 0], dtype=torch.bool)
    g = torch.tensor([9.0, 9.0, 9.0, -0.4, 0.1, 0.3, 9.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    # ζ=0.5 of 4 active: drop the 2 smallest |w| (idx 1, 6); regrow 2 by |grad| (idx 3, 5)
    new = prune_and_grow(w.abs(), m, g, k=4, zeta=0.5, n_grad=1.0, gen=gen)
    assert new.nonzero().flatten().tolist() == [0, 2, 3, 5]
    # restoration: want 7 active, drop 1 (idx 1); regrow 4 > 1, the dropped one last
    new = prune_and_grow(w.abs(), m, g, k=7, zeta=0.25, n_grad=1.0, gen=gen)
    assert int(new.sum()) == 7 and not new[1]
    # warm-up: want 1 active; pruning alone gets there, nothing regrows
    new = prune_and_grow(w.abs(), m, g, k=1, zeta=0.25, n_grad=1.0, gen=gen)
    assert new.nonzero().flatten().tolist() == [0]


def test_discover_ties_head_to_embedding_and_skips_excluded():
    names = [sp.name for sp in discover(tiny_gpt(), ["*"], ["*wpe"])]
    assert names[0] == "transformer.wte.weight" and "lm_head.weight" not in names
    assert not any("wpe" in n for n in names) and len(names) == 1 + 2 * 4
    assert [sp.name for sp in discover(tiny_gpt(), ["*mlp*"], [])] == [
        f"transformer.h.{i}.mlp.{k}.weight" for i in range(2) for k in ("c_fc", "c_proj")
    ]


def test_pruned_weights_stay_zero_and_grads_are_masked():
    model, mst, opt, ctx = make(MSTConfig(**CFG), 30)

    def check(t):
        for sp in mst.params:
            assert torch.all(sp.weight.grad[~sp.mask] == 0)

    train(model, mst, opt, ctx, 12, check=check)
    for sp in mst.params:
        assert torch.all(sp.weight[~sp.mask] == 0)
        assert 0 < sp.mask.float().mean() < 1
    # the tied head computes with the masked embedding
    assert model.lm_head.weight is model.transformer.wte.weight
    global_density = sum(int(sp.mask.sum()) for sp in mst.params) / sum(
        sp.weight.numel() for sp in mst.params
    )
    assert global_density == pytest.approx(0.2, abs=0.01)


@pytest.mark.parametrize("sgd", [False, True])
def test_moments_reset_where_topology_changed(sgd):
    model, mst, opt, ctx = make(MSTConfig(**CFG), 30, sgd=sgd)
    train(model, mst, opt, ctx, 9)  # dense warm-up, then DST at step 9
    before = {sp.name: sp.mask.clone() for sp in mst.params}
    train(model, mst, opt, ctx, 10, start=9)  # step 9 is an update step
    keys = ["momentum_buffer"] if sgd else ["exp_avg", "exp_avg_sq"]
    changed_any = False
    for sp in mst.params:
        changed = before[sp.name] ^ sp.mask
        changed_any |= bool(changed.any())
        for key in keys:
            state = opt.state[sp.weight][key]
            assert torch.all(state[changed] == 0)
            assert torch.all(state[~sp.mask] == 0)
        assert torch.all(sp.weight[changed] == 0)  # regrown weights start at zero
    assert changed_any


def test_restoration_reaches_density_one():
    steps = 40
    model, mst, opt, ctx = make(MSTConfig(**CFG), steps)
    seen = []
    for t in range(steps):
        mst.before_step(t, ctx)
        opt.zero_grad()
        lm_loss(model, batch(t)).backward()
        opt.step()
        seen.append(mst.after_step(t, ctx)["mst_density"])
    assert min(seen) == pytest.approx(0.2, abs=0.01)
    assert seen[-1] == 1.0 and all(sp.mask.all() for sp in mst.params)
    # restoration ends at 0.8·40 = 32, not on an update step (every 3): it completes there
    assert seen[31] < 1.0 and seen[32] == 1.0


def test_resume_restores_masks_and_schedule_exactly():
    steps, cut = 24, 11
    cfg = MSTConfig(**{**CFG, "grow": "mixed"})
    model, mst, opt, ctx = make(cfg, steps)
    train(model, mst, opt, ctx, steps)

    model2, mst2, opt2, ctx2 = make(cfg, steps)
    train(model2, mst2, opt2, ctx2, cut)
    saved = copy.deepcopy((model2.state_dict(), opt2.state_dict(), mst2.state_dict()))
    # resume into a fresh run whose config differs: the checkpoint's schedule wins
    other = MSTConfig(**{**CFG, "sparsity": 0.5, "update_every": 7})
    model3, mst3, opt3, ctx3 = make(other, steps, seed=1)
    mst3.load_state_dict(saved[2])
    model3.load_state_dict(saved[0])
    opt3.load_state_dict(saved[1])
    assert [mst3.sparsity(t) for t in range(steps)] == [mst.sparsity(t) for t in range(steps)]
    train(model3, mst3, opt3, ctx3, steps, start=cut)
    for (n, a), b in zip(model.state_dict().items(), model3.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    for sp, sp3 in zip(mst.params, mst3.params, strict=True):
        assert torch.equal(sp.mask, sp3.mask)


def test_state_loaded_before_prepare_applies_at_prepare():
    model, mst, opt, ctx = make(MSTConfig(**CFG), 30)
    train(model, mst, opt, ctx, 10)
    fresh = MST(MSTConfig(**CFG))
    fresh.load_state_dict(mst.state_dict())
    fresh.prepare(tiny_gpt(), MethodContext(total_steps=30))
    assert all(torch.equal(a.mask, b.mask) for a, b in zip(mst.params, fresh.params, strict=True))
    bad = MST(MSTConfig(**{**CFG, "include": ["*mlp*"]}))
    bad.prepare(tiny_gpt(), MethodContext(total_steps=30))
    with pytest.raises(ValueError, match="do not match this model's sparse weights"):
        bad.load_state_dict(mst.state_dict())


def _ranks_train(rank, world, group):
    torch.set_num_threads(1)
    ctx = MethodContext(rank=rank, world_size=world, group=group, total_steps=20)
    model, mst, opt, ctx = make(MSTConfig(**{**CFG, "grow": "mixed"}), 20, ctx=ctx)
    train(model, mst, opt, ctx, 14)  # different batches per rank
    return [sp.mask.clone() for sp in mst.params]


def test_masks_identical_across_two_ranks(gloo):
    m0, m1 = gloo.run(2, _ranks_train)
    assert all(torch.equal(a, b) for a, b in zip(m0, m1, strict=True))
    assert any(not a.all() for a in m0)


def test_flop_counter_equals_hand_count():
    torch.manual_seed(0)
    model = GPT(vocab_size=10, seq_len=8, n_layer=1, n_head=2, n_embd=8)
    cfg = MSTConfig(
        schedule=0.5,
        distribution="uniform",
        attention="block",
        attention_window=4,
        attention_tile=4,
        attention_start=0.0,
        attention_stop=1.0,
        update_every=100,
        grow="gradient",
    )
    mst = MST(cfg)
    ctx = MethodContext(total_steps=10)
    mst.prepare(model, ctx)
    x = torch.randint(0, 10, (2, 8))
    counts = []
    for t in (0, 1):  # step 0 updates the topology: dense dW
        mst.before_step(t, ctx)
        model(x).sum().backward()
        out = mst.after_step(t, ctx)
        counts.append((out["mst_flops_dense"], out["mst_flops_effective"]))
    R = 2 * 8  # rows through every linear layer
    lin = {
        "c_attn": 8 * 24,
        "attn.c_proj": 8 * 8,
        "c_fc": 8 * 32,
        "mlp.c_proj": 32 * 8,
        "lm_head": 8 * 10,
    }
    dense_lin = sum(3 * 2 * R * n for n in lin.values())  # fwd, dX, dW
    emb = R * 8 + 8 * 8  # scatter-add dW of wte (16 rows) and wpe (8 rows)
    attn = 12 * 2 * 8 * 48  # 12·B·C·pairs; causal T=8, tile 4: 3 tiles of 16
    dense = dense_lin + emb + attn
    sparse_attn = 12 * 2 * 8 * 32  # block(4): 2 diagonal tiles
    eff_1 = dense_lin * 0.5 + R * 8 * 0.5 + 8 * 8 + sparse_attn
    eff_0 = sum(2 * R * n * (0.5 + 0.5 + 1) for n in lin.values()) + R * 8 + 8 * 8 + sparse_attn
    assert counts[0] == (dense, eff_0) and counts[1] == (dense, eff_1)
    assert (dense, eff_1) == (90816, 46976)
    assert mst.step_flops(1000.0, ctx) == pytest.approx(1000.0 * eff_1 / dense)
    assert mst.step_flops(0.0, ctx) == eff_1
