"""The erm task: Bible bag-of-words and bundled sets, shards, batches, loss, evaluation."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.dasvrda import DASVRDAConfig
from raytrain_eff.hparams.tasks import ERMConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.dasvrda import DASVRDAMethod
from raytrain_eff.tasks.erm import ERMTask
from raytrain_eff.typed import ConfigError

torch.set_num_threads(1)


def make(dataset="kjv", seed=0, val_fraction=0.05, **params):
    task = ERMTask(
        ERMConfig(**params), DataConfig(dataset=dataset, val_fraction=val_fraction), seed=seed
    )
    task.load()
    return task


@pytest.fixture(scope="module")
def kjv():
    return make(max_rows=4000)


def test_kjv_is_sparse_unit_rows_with_both_testaments(kjv):
    X, y = kjv.X_train, kjv.y_train
    assert X.layout == torch.sparse_csr and X.shape == (kjv.num_train, kjv.d)
    assert kjv.num_train == 3800 and len(kjv.y_val) == 200
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    assert 0.15 < float((y > 0).double().mean()) < 0.35  # 7,957 of 31,102 verses are NT
    row_sq = torch.zeros(X.shape[0], dtype=torch.float64).index_add_(
        0, torch.arange(X.shape[0]).repeat_interleave(X.crow_indices().diff()), X.values() ** 2
    )
    assert torch.allclose(row_sq, torch.full_like(row_sq, 2.0))  # unit row + bias column
    assert X.values().numel() < 0.01 * X.shape[0] * X.shape[1]  # really sparse


def test_shards_cover_the_training_rows_once(kjv):
    parts = [list(kjv.shard_iterator(r, 3, 500)) for r in range(3)]
    ys = torch.cat([y for part in parts for _, y in part])
    assert torch.equal(ys, kjv.y_train)
    cols = torch.cat([X.col_indices() for X, _ in parts[1]])
    lo, hi = kjv.X_train.crow_indices()[[kjv.shard_size(0, 3), 2 * kjv.shard_size(0, 3)]]
    assert torch.equal(cols, kjv.X_train.col_indices()[lo:hi])  # rank 1: the next rows


def test_batches_are_deterministic_and_the_loss_is_the_objective(kjv):
    a, b = kjv.train_batch(5, 0, 1, 2, 32), kjv.train_batch(5, 0, 1, 2, 32)
    assert torch.equal(a[0].to_dense(), b[0].to_dense()) and torch.equal(a[1], b[1])
    model = kjv.build_model()
    with torch.no_grad():
        model.weight.copy_(torch.linspace(-1, 1, kjv.d, dtype=torch.float64))
    X, y = a
    w = model.weight.detach()
    expected = (
        torch.log1p(torch.exp(-y * (X.to_dense() @ w))).mean()
        + 1e-4 * w.abs().sum()
        + 0.5e-6 * w.dot(w)
    )
    assert float(kjv.loss(model, a)) == pytest.approx(float(expected), rel=1e-12)
    assert kjv.counts(a) == (32, 32)


def test_checksum_identifies_the_data():
    assert make("breast_cancer").checksum() == make("breast_cancer").checksum()
    assert make("breast_cancer").checksum() != make("breast_cancer", max_rows=500).checksum()


def test_dasvrda_learns_testament_from_words(kjv):
    task = kjv
    ctx = MethodContext(
        task=task, iterate_shard=lambda bs: task.shard_iterator(0, 1, bs), shard_size=task.num_train
    )
    method = DASVRDAMethod(DASVRDAConfig(eta_scale=2.0))
    model = task.build_model()
    opt = method.make_optimizer(model, ctx)
    before = task.evaluate(model, 100, 2)["val_loss"]
    for _ in range(6 * opt.solver.m):  # six stages, twelve data passes
        opt.step()
    metrics = task.evaluate(model, 100, 2)
    assert metrics["val_loss"] < before and metrics["val_accuracy"] > 0.8
    assert method.after_step(0, ctx)["data_passes"] == pytest.approx(13.0, abs=0.5)


def test_bundled_sets_and_losses():
    cancer = make("breast_cancer")
    assert cancer.X_train.layout == torch.strided and cancer.d == 31
    diabetes = make("diabetes", loss="squared", bias_feature=False, normalize=False)
    assert diabetes.d == 10 and len(diabetes.y_train.unique()) > 50  # real-valued targets
    assert "val_accuracy" not in diabetes.evaluate(diabetes.build_model(), 64, 2)


def test_parquet_user_data(tmp_path):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 3, generator=g)
    label = (X[:, 0] > 0).long()
    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.table(
            {
                "a": X[:, 0].numpy(),
                "b": X[:, 1].numpy(),
                "c": X[:, 2].numpy(),
                "label": label.numpy(),
            }
        ),
        path,
    )
    task = make(str(path), loss="smoothed_hinge")
    assert task.d == 4 and set(task.y_train.unique().tolist()) == {-1.0, 1.0}
    three = tmp_path / "three.parquet"
    pq.write_table(
        pa.table({"a": X[:, 0].numpy(), "label": (label + (X[:, 1] > 1)).numpy()}), three
    )
    with pytest.raises(ValueError, match="need exactly two label values, found 3"):
        make(str(three))


def test_config_errors():
    with pytest.raises(ConfigError, match="l1: -1.0 is invalid; must be >= 0"):
        ERMConfig(l1=-1.0)
    with pytest.raises(ConfigError, match="min_df: 0 is invalid"):
        ERMConfig(min_df=0)


def test_bias_options_and_no_held_out_rows():
    plain = make("breast_cancer", val_fraction=0.0, bias_feature=False)
    assert plain.d == 30 and plain.num_train == 569 and len(plain.y_val) == 0
    assert plain.evaluate(plain.build_model(), 64, 2) == {}  # nothing held out
    free = make("breast_cancer")
    assert free.d == 31 and not free.params.penalise_bias
    ctx = MethodContext(
        task=free, iterate_shard=lambda bs: free.shard_iterator(0, 1, bs), shard_size=free.num_train
    )
    method = DASVRDAMethod(DASVRDAConfig())
    method.make_optimizer(free.build_model(), ctx)
    assert method.solver.P.intercept and method.solver.P.d_pen == 30
    penalised = make("breast_cancer", penalise_bias=True)
    method.make_optimizer(
        penalised.build_model(),
        MethodContext(
            task=penalised,
            iterate_shard=lambda bs: penalised.shard_iterator(0, 1, bs),
            shard_size=penalised.num_train,
        ),
    )
    assert not method.solver.P.intercept and method.solver.P.d_pen == 31
    with pytest.raises(ConfigError, match="penalise_bias: True is invalid; must be false when"):
        ERMConfig(bias_feature=False, penalise_bias=True)


@pytest.mark.parametrize("name,positives", [("digits", 0.5), ("iris", 1 / 3), ("wine", 0.33)])
def test_bundled_multiclass_sets_are_binarised(name, positives):
    task = make(name, loss="squared_hinge", val_fraction=0.0)
    assert set(task.y_train.unique().tolist()) == {-1.0, 1.0}
    assert float((task.y_train > 0).double().mean()) == pytest.approx(positives, abs=0.01)


def test_parquet_regression_labels_and_missing_values(tmp_path):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(120, 2, dtype=torch.float64, generator=g)
    target = X[:, 0] * 3.5 - 1.25  # real-valued labels, float column
    path = tmp_path / "reg.parquet"
    pq.write_table(
        pa.table({"a": X[:, 0].numpy(), "b": X[:, 1].numpy(), "label": target.numpy()}), path
    )
    task = make(str(path), loss="squared", bias_feature=False, normalize=False, val_fraction=0.0)
    assert task.d == 2 and task.X_train.dtype == torch.float64
    assert len(task.y_train.unique()) == 120  # kept as real numbers
    holes = tmp_path / "holes.parquet"
    pq.write_table(pa.table({"a": [1.0, None, 3.0], "label": [0, 1, 0]}), holes)
    with pytest.raises(ValueError, match=r"row 1: column 'a' is nan \(null or not finite\)"):
        make(str(holes))


def test_val_fraction_zero_is_for_erm_only():
    from raytrain_eff import config

    assert config.load(preset="erm-digits").data.val_fraction == 0.0
    with pytest.raises(ConfigError, match="val_fraction: 0 is allowed for task erm only"):
        config.load(preset="digits-adamw", overrides=["data.val_fraction=0"])
