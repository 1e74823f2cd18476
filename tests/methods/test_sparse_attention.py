"""Sparse-Transformer patterns, tile accounting, the block kernel and the training window."""

import pytest
import torch
import torch.nn.functional as F

from raytrain_eff.methods.sparse_attention import (
    AttentionSchedule,
    HybridAttention,
    block_sparse_attention,
    pattern,
    tile_pairs,
    touched_tiles,
)
from raytrain_eff.tasks.lm import GPT


def rows(mask):
    return [torch.nonzero(r).flatten().tolist() for r in mask]


def test_patterns_by_hand():
    assert rows(pattern("local", 5, 2)) == [[0], [0, 1], [1, 2], [2, 3], [3, 4]]
    assert rows(pattern("strided", 5, 2)) == [[0], [1], [0, 2], [1, 3], [0, 2, 4]]
    assert rows(pattern("local_strided", 5, 2)) == [[0], [0, 1], [0, 1, 2], [1, 2, 3], [0, 2, 3, 4]]
    assert rows(pattern("block", 5, 2)) == [[0], [0, 1], [2], [2, 3], [4]]
    assert torch.equal(pattern("dense", 4, 1), torch.ones(4, 4, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="unknown attention pattern 'lokal'; choose one of"):
        pattern("lokal", 4, 2)


def test_tile_accounting():
    # T=8, tile 4: dense causal touches 3 of 4 tiles; block(4) only the 2 diagonal ones;
    # strided(4) reaches below the diagonal, so it touches as many tiles as dense.
    assert tile_pairs(pattern("dense", 8, 1), 4) == 48
    assert tile_pairs(pattern("block", 8, 4), 4) == 32
    assert tile_pairs(pattern("strided", 8, 4), 4) == 48
    # a ragged edge: T=6, tile 4 -> tiles of 4 and 2 rows; dense touches 4·4 + 2·4 + 2·2
    assert tile_pairs(pattern("dense", 6, 1), 4) == 28
    assert touched_tiles(pattern("local", 12, 2), 4).tolist() == [
        [True, False, False],
        [True, True, False],
        [False, True, True],
    ]


@pytest.mark.parametrize("name", ["local", "block", "local_strided"])
def test_block_kernel_equals_masked_sdpa(name):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 13, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = pattern(name, 13, 3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(block_sparse_attention(q, k, v, mask, tile=4), expected)


def test_schedule_sets_pattern_only_inside_window():
    model = GPT(vocab_size=11, seq_len=8, n_layer=2, n_head=2, n_embd=8)
    hybrid = HybridAttention(AttentionSchedule("local", 3, t0=5, t1=10))
    assert hybrid.attach(model) == 2
    x = torch.randint(0, 11, (2, 8))
    seen, out = {}, {}
    for step in (4, 5, 9, 10):
        hybrid.step = step
        out[step] = model(x)
        seen[step] = [b.attn.pattern_mask for b in model.transformer.h]
    assert seen[4] == [None, None] and seen[10] == [None, None]
    assert all(torch.equal(m, pattern("local", 8, 3)) for m in seen[5] + seen[9])
    # the pattern changes what the model computes: later tokens no longer see early ones
    torch.testing.assert_close(out[4], out[10])
    torch.testing.assert_close(out[4][:, :3], out[5][:, :3])
    assert not torch.allclose(out[4][:, 3:], out[5][:, 3:])


def test_tiles_kernel_in_the_gpt_equals_masked_attention():
    from raytrain_eff.methods.sparse_attention import AttentionSchedule, HybridAttention
    from raytrain_eff.tasks.lm import GPT

    torch.manual_seed(0)
    masked, tiled = GPT(20, 32, 1, 2, 16), GPT(20, 32, 1, 2, 16)
    tiled.load_state_dict(masked.state_dict())
    HybridAttention(AttentionSchedule("local", 8, 0, 10)).attach(masked)
    HybridAttention(AttentionSchedule("local", 8, 0, 10), kernel="tiles", tile=8).attach(tiled)
    x = torch.randint(0, 20, (2, 32))
    a, b = masked(x), tiled(x)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    a.sum().backward()
    b.sum().backward()
    for p, q in zip(masked.parameters(), tiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["local", "strided", "local_strided", "block"])
def test_flex_kernel_equals_masked_attention_in_evaluation(name):
    # FlexAttention has no CPU backward: here its forward (the evaluation path) is checked;
    # training with it runs on CUDA, where it is compiled
    from raytrain_eff.methods.sparse_attention import AttentionSchedule, HybridAttention
    from raytrain_eff.tasks.lm import GPT

    torch.manual_seed(0)
    masked, flex = GPT(20, 32, 1, 2, 16), GPT(20, 32, 1, 2, 16)
    flex.load_state_dict(masked.state_dict())
    HybridAttention(AttentionSchedule(name, 8, 0, 10)).attach(masked)
    HybridAttention(AttentionSchedule(name, 8, 0, 10), kernel="flex", tile=16).attach(flex)
    x = torch.randint(0, 20, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(flex(x), masked(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["tiles", "flex"])
def test_hvps_through_each_kernel_equal_the_masked_ones(kernel):
    # the curvature methods' HVPs differentiate attention twice; flex has no such path, so
    # under the HVP's math-only SDPA it gives way to masked SDPA (same values)
    from raytrain_eff.methods.lanczos import HessianOperator

    torch.manual_seed(0)
    masked, other = GPT(20, 32, 1, 2, 16), GPT(20, 32, 1, 2, 16)
    other.load_state_dict(masked.state_dict())
    HybridAttention(AttentionSchedule("local", 8, 0, 10)).attach(masked)
    HybridAttention(AttentionSchedule("local", 8, 0, 10), kernel=kernel, tile=8).attach(other)
    x = torch.randint(0, 20, (2, 33))
    batch = x[:, :-1], x[:, 1:]

    def loss(model, b):
        return F.cross_entropy(model(b[0]).flatten(0, 1), b[1].flatten())

    v = torch.randn(sum(p.numel() for p in masked.parameters()))
    torch.testing.assert_close(
        HessianOperator(other, loss, batch)(v),
        HessianOperator(masked, loss, batch)(v),
        rtol=1e-4,
        atol=1e-5,
    )


def test_an_unknown_kernel_is_refused():
    from raytrain_eff.methods.sparse_attention import AttentionSchedule, HybridAttention

    with pytest.raises(ValueError, match="choose one of masked, tiles, flex"):
        HybridAttention(AttentionSchedule("local", 8, 0, 10), kernel="sdpa")
