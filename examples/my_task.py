"""Bring your own model and data: a task factory that raytrain_eff imports by name.

    raytrain-eff train --config examples/my_task.yaml

The factory returns a UserTask: a model constructor, a loss on (outputs, targets), and
(X_train, y_train, X_val, y_val) tensors. Rows are sharded across the Ray workers.
"""

import torch
from sklearn.datasets import load_breast_cancer

from raytrain_eff.tasks.custom import UserTask


def make_task(hidden: int = 32) -> UserTask:
    data = load_breast_cancer()  # 569 real tumour measurements shipped with scikit-learn
    X = torch.tensor(data.data, dtype=torch.float32)
    X = (X - X.mean(0)) / X.std(0)
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    X, y = X[order], y[order]

    def model():
        return torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
        )

    def accuracy(logits, targets):
        return {"val_accuracy": float((logits.argmax(1) == targets).float().mean())}

    return UserTask(
        model_fn=model,
        loss_fn=torch.nn.functional.cross_entropy,
        data=(X[:450], y[:450], X[450:], y[450:]),
        metrics_fn=accuracy,
    )
