"""Search-space YAML -> validated spec: every entry type and every error message."""

import textwrap

import pytest

from raytrain_eff.tune import space
from raytrain_eff.typed import ConfigError

GOOD = """\
base: digits-adamw
metric: val_loss
mode: min
num_samples: 3
scheduler: {type: asha}
space:
  methods.adamw.lr: {loguniform: [1.0e-4, 1.0e-2]}
  methods.adamw.weight_decay: {uniform: [0.0, 0.1]}
  data.batch_size: {choice: [16, 32]}
  train.warmup_steps: {randint: [0, 10]}
  methods.adamw.beta2: {grid: [0.95, 0.99]}
  train.grad_clip: {uniform: [0.5, 2.0], when: {data.batch_size: 32}}
"""


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_entry_type_parses(tmp_path):
    spec, base = space.load(write(tmp_path, GOOD), ["run.steps=20"])
    kinds = {e.key: e.kind for e in spec.entries}
    assert kinds == {
        "methods.adamw.lr": "loguniform",
        "methods.adamw.weight_decay": "uniform",
        "data.batch_size": "choice",
        "train.warmup_steps": "randint",
        "methods.adamw.beta2": "grid",
        "train.grad_clip": "uniform",
    }
    assert spec.entries[-1].when == {"data.batch_size": 32}
    assert base["run"]["steps"] == 20 and spec.scheduler.type == "asha"


def test_param_space_uses_ray_tune_domains(tmp_path):
    from ray import tune

    from raytrain_eff.tune.sweep import param_space

    spec, _ = space.load(write(tmp_path, GOOD))
    ps = param_space(spec)
    assert isinstance(ps["methods.adamw.lr"], tune.search.sample.Float)
    assert ps["methods.adamw.beta2"] == {"grid_search": [0.95, 0.99]}
    # a plain domain, never a sample_from function: Tune draws those again on restore
    assert isinstance(ps["train.grad_clip"], tune.search.sample.Float)


def test_conditional_entries_are_masked_where_their_condition_fails():
    conds = {"train.grad_clip": {"data.batch_size": 32}, "a": {"train.grad_clip": 1.0}}
    drawn = {"data.batch_size": 16, "train.grad_clip": 1.0, "a": 3}
    assert space.effective(conds, drawn) == {
        "data.batch_size": 16,
        "train.grad_clip": None,
        "a": None,
    }
    drawn["data.batch_size"] = 32
    assert space.effective(conds, drawn) == drawn


def test_overrides_round_trip_values():
    assert space.overrides_for({"a.b": 1e-4, "c": "cosine", "d": None, "e": [1, 2]}) == [
        "a.b=0.0001",
        "c=cosine",
        "e=[1, 2]",
    ]


@pytest.mark.parametrize(
    "snippet, message",
    [
        (
            "space:\n  methods.adamw.lrr: {uniform: [0.1, 0.2]}",
            "space.methods.adamw.lrr: value 0.1 is rejected by the config: "
            "methods.adamw.lrr: unknown key (did you mean 'lr'?)",
        ),
        (
            "space:\n  methods.adamw.lr: {uniform: [-1.0, 0.2]}",
            "space.methods.adamw.lr: value -1.0 is rejected by the config: "
            "methods.adamw.lr: -1.0 is invalid; must be > 0",
        ),
        (
            "space:\n  methods.adamw.lr: {unifrom: [0.1, 0.2]}",
            "space.methods.adamw.lr: unknown entry type 'unifrom' (did you mean 'uniform'?)",
        ),
        (
            "space:\n  methods.adamw.lr: {uniform: [0.2, 0.1]}",
            "space.methods.adamw.lr.uniform: expected [low, high] numbers with low < high",
        ),
        (
            "space:\n  methods.adamw.lr: {loguniform: [0.0, 0.1]}",
            "space.methods.adamw.lr.loguniform: bounds must be > 0",
        ),
        (
            "space:\n  train.warmup_steps: {randint: [0, 1.5]}",
            "space.train.warmup_steps.randint: bounds must be integers",
        ),
        (
            "space:\n  data.batch_size: {choice: []}",
            "space.data.batch_size.choice: expected a non-empty list",
        ),
        ("space:\n  data.batch_size: 32", "space.data.batch_size: expected a mapping"),
        (
            "space:\n  data.batch_size: {choice: [8], grid: [8]}",
            "space.data.batch_size: expected exactly one of",
        ),
        (
            "space:\n  train.grad_clip: {uniform: [0.5, 1.0], when: {data.bs: 32}}",
            "space.train.grad_clip.when: 'data.bs' is not a space entry",
        ),
        ("space: {}", "space: no entries"),
        (
            "metrik: val_loss\nspace:\n  data.batch_size: {choice: [8]}",
            "metrik: unknown key (did you mean 'metric'?)",
        ),
        (
            "mode: mni\nspace:\n  data.batch_size: {choice: [8]}",
            "mode: 'mni' is not allowed (did you mean 'min'?)",
        ),
        (
            "search: grid\nspace:\n  methods.adamw.lr: {uniform: [0.1, 0.2]}",
            "search: grid needs every entry",
        ),
        (
            "scheduler: {type: pbt}\nsearch: grid\nspace:\n  data.batch_size: {grid: [8]}",
            "pbt mutates trials itself",
        ),
        (
            "search: optuna\nspace:\n  data.batch_size: {grid: [8]}",
            "search: optuna supports neither",
        ),
        (
            "overrides: [scaling.num_workers=0]\nspace:\n  data.batch_size: {choice: [8]}",
            "use >= 1 worker",
        ),
        (
            "scheduler: {type: asha, time_attr: sample_seen}\nspace:\n  data.batch_size: "
            "{choice: [8]}",
            "scheduler.time_attr: 'sample_seen' is not a counter trials report "
            "(did you mean 'samples_seen'?); use one of samples_seen, step,",
        ),
        (
            "scheduler: {type: asha, time_attr: wall_s}\nspace:\n  data.batch_size: {choice: [8]}",
            "scheduler.max_t: required with time_attr: wall_s",
        ),
        (
            "scheduler: {type: pbt, time_attr: time_total_s}\nspace:\n  methods.adamw.lr: "
            "{uniform: [0.1, 0.2]}",
            "scheduler.perturbation_interval: required with time_attr",
        ),
    ],
)
def test_errors_name_the_file_key_and_problem(tmp_path, snippet, message):
    path = write(tmp_path, "base: digits-adamw\n" + snippet + "\n")
    with pytest.raises(ConfigError) as err:
        space.load(path)
    assert str(err.value).startswith(path) and message in str(err.value)


def test_missing_file_and_unknown_base(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        space.load(str(tmp_path / "nope.yaml"))
    path = write(tmp_path, "base: digits-adamx\nspace:\n  data.batch_size: {choice: [8]}\n")
    with pytest.raises(
        ConfigError, match="'digits-adamx' is neither a preset \\(did you mean 'digits-adamw'\\?\\)"
    ):
        space.load(path)


def test_packaged_space_files_validate():
    import pathlib

    files = sorted((pathlib.Path(__file__).resolve().parents[2] / "tune_spaces").rglob("*.yaml"))
    assert files
    for path in files:
        space.load(str(path))


def test_the_module_docstring_example_is_a_valid_space(tmp_path):
    block = space.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    spec, _ = space.load(write(tmp_path, textwrap.dedent(block)))
    assert {e.key for e in spec.entries if e.when} == {"train.grad_clip"}
