"""Scheduler budgets in each trial's own units, over the whole space."""

import textwrap

import pytest

from raytrain_eff.tune import schedulers, space


def load(tmp_path, entries: str, scheduler: str = "{type: asha}"):
    path = tmp_path / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        base: digits-adamw
        overrides: [run.steps=40, scaling.num_workers=1, data.batch_size=32]
        scheduler: {scheduler}
        space:
        """)
        + textwrap.indent(textwrap.dedent(entries), "  ")
    )
    return space.load(str(path))


def test_asha_budget_spans_every_batch_size_and_accumulation(tmp_path):
    spec, base = load(
        tmp_path,
        """\
        data.batch_size: {choice: [32, 64]}
        train.grad_accum: {choice: [1, 2]}
        """,
    )
    assert schedulers.budget_range(spec, base) == (40 * 32, 40 * 64 * 2)
    asha = schedulers.scheduler(spec, base)
    assert asha._max_t == 40 * 64 * 2  # a batch-64 x 2 trial is never cut short
    rungs = [milestone for milestone, _ in asha._brackets[0]._rungs]
    assert min(rungs) == 40 * 32 / 8  # the smallest trial reaches the first rung


def test_conditional_entries_keep_the_base_value_in_range(tmp_path):
    spec, base = load(
        tmp_path,
        """\
        methods.adamw.lr: {loguniform: [1.0e-4, 1.0e-2]}
        data.batch_size: {choice: [64], when: {methods.adamw.lr: 1.0e-3}}
        """,
    )
    assert schedulers.budget_range(spec, base) == (40 * 32, 40 * 64)


@pytest.mark.parametrize(
    "time_attr, budget", [("step", 40.0), ("training_iteration", 8.0), ("samples_seen", 40.0 * 32)]
)
def test_budget_units(tmp_path, time_attr, budget):
    spec, base = load(
        tmp_path,
        "methods.adamw.lr: {uniform: [0.1, 0.2]}\n",
        f"{{type: asha, time_attr: {time_attr}}}",
    )
    base["run"]["report_interval"] = 5
    assert schedulers.budget_range(spec, base) == (budget, budget)


def test_planned_steps_follow_the_trial(tmp_path):
    _, base = load(tmp_path, "methods.adamw.lr: {uniform: [0.1, 0.2]}\n")
    assert schedulers.planned_steps(base, {}) == 40
    assert schedulers.planned_steps(base, {"run.steps": 60, "run.stop_after": 30}) == 30
