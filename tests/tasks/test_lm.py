"""The char-level GPT task: shapes, held-out split, analytic attention FLOPs, sampling."""

import pytest
import torch

from raytrain_eff import config
from raytrain_eff.engine.accounting import DenseFlopCounter
from raytrain_eff.engine.runner import build_task


@pytest.fixture(scope="module")
def task():
    cfg = config.load(
        overrides=["task.seq_len=16", "task.n_layer=1", "task.n_embd=32", "task.n_head=2"]
    )
    t = build_task(cfg)
    t.load()
    return t


def test_batches_predict_the_next_character(task):
    x, y = task.train_batch(0, 0, 0, 1, 4)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    val = list(task.val_batches(4, 2))
    assert len(val) == 2 and torch.equal(val[0][0], list(task.val_batches(4, 2))[0][0])


def test_dense_flops_add_attention_the_counter_misses(task):
    torch.manual_seed(0)
    model = task.build_model()
    batch = task.train_batch(0, 0, 0, 1, 4)
    flops = DenseFlopCounter(task).count(model, batch)
    B, T, C, V = 4, 16, 32, len(task.vocab)
    linear = 2 * B * T * (C * 3 * C + C * C + 2 * C * 4 * C) + 2 * B * T * C * V
    attention = 4 * B * T * T * C
    assert flops == pytest.approx(3 * (linear + attention), rel=0.02)


def test_sampling_returns_text_from_the_vocabulary(task):
    torch.manual_seed(0)
    text = task.sample(task.build_model(), "In the", 20, 1.0, seed=1)
    assert text.startswith("In the") and len(text) == 26


def test_test_fraction_splits_the_held_out_tail_into_validation_then_test(task):
    cfg = config.load(
        overrides=["task.seq_len=16", "task.n_layer=1", "task.n_embd=32", "task.n_head=2"]
        + ["data.test_fraction=0.5"]
    )
    split = build_task(cfg)
    split.load()
    text, whole = split.text, task.text
    assert torch.equal(text.train_ids, whole.train_ids)
    assert torch.equal(torch.cat([text.val_ids, text.test_ids]), whole.val_ids)
    assert abs(len(text.test_ids) - len(text.val_ids)) <= 1
    (x, _), *_ = split.test_batches(4, 1)
    assert torch.equal(x[0], text.test_ids[:16].long())  # windows of the test tail only
    assert split.checksum() == task.checksum()  # the same bytes, held out alike
    torch.manual_seed(0)
    scores = split.evaluate_test(split.build_model(), 4, 2)
    assert set(scores) == {"test_loss"} and scores["test_loss"] > 0
