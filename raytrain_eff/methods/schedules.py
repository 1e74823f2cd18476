"""Typed schedules: a value as a function of the training step, for sparsity-variation training.

Mixed Sparsity Training (Hu, Li, Huang; arXiv 2408.11746) varies sparsity over training —
warm-up (dense → sparse), ultra-sparse hold, restoration (sparse → dense) — and anneals the
drop fraction ζ. Each schedule here is a small object with ``value(t)`` and a plain-data
``spec`` (its whole state: schedules are pure functions of the step), so a checkpoint holds
the schedule exactly. Shapes, for ``t0 <= t <= t1`` (the value holds outside ``[t0, t1]``)::

    linear:  v(t) = a + (b − a)·u                      u = (t − t0)/(t1 − t0)
    cubic:   v(t) = b + (a − b)·(1 − u)³               (Zhu & Gupta's gradual pruning)
    cosine:  v(t) = b + (a − b)·(1 + cos πu)/2
    step:    v(t) = values[#{boundaries ≤ t}]
    piecewise: the last piece whose start ≤ t;  keypoints: linear through (step, value) pairs
    cycling: inner(t0 + (t − t0) mod period)

Every shape goes up, holds or comes down (``a > b`` or ``a < b``). ``"when to update"`` is kept
apart from ``"how sparse"``: ``UpdateFrequency`` says on which steps a topology update runs.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, ClassVar

from raytrain_eff.typed import ConfigError, check, nearest


@dataclasses.dataclass
class Schedule:
    """Base: subclasses are dataclasses whose fields are the whole state (``spec``)."""

    kind: ClassVar[str] = ""

    def value(self, t: int) -> float:
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        return self.value(t)

    def spec(self) -> dict:
        """Plain data that ``make_schedule`` turns back into an equal schedule."""
        out: dict[str, Any] = {"type": self.kind}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = (
                v.spec()
                if isinstance(v, Schedule)
                else [[s, p.spec()] for s, p in v]
                if f.name == "pieces"
                else v
            )
        return out


@dataclasses.dataclass
class Constant(Schedule):
    kind: ClassVar[str] = "constant"
    value_: float

    def value(self, t):
        return self.value_

    def spec(self):
        return {"type": "constant", "value": self.value_}


@dataclasses.dataclass
class _Ramp(Schedule):
    """From ``start`` at step ``t0`` to ``end`` at ``t1``; holds outside."""

    start: float
    end: float
    t0: int
    t1: int

    def __post_init__(self):
        check(self.t1 > self.t0, f"{self.kind}.t1", self.t1, f"> t0 ({self.t0})")

    def value(self, t):
        u = min(max((t - self.t0) / (self.t1 - self.t0), 0.0), 1.0)
        return self.start + (self.end - self.start) * self.shape(u)

    def shape(self, u: float) -> float:
        raise NotImplementedError


class Linear(_Ramp):
    kind = "linear"

    def shape(self, u):
        return u


class Cubic(_Ramp):
    kind = "cubic"

    def shape(self, u):
        return 1.0 - (1.0 - u) ** 3


class Cosine(_Ramp):
    kind = "cosine"

    def shape(self, u):
        return (1.0 - math.cos(math.pi * u)) / 2.0


@dataclasses.dataclass
class Step(Schedule):
    """``values[0]`` before ``boundaries[0]``, ``values[i]`` from ``boundaries[i-1]``."""

    kind: ClassVar[str] = "step"
    boundaries: list
    values: list

    def __post_init__(self):
        check(
            len(self.values) == len(self.boundaries) + 1,
            "step.values",
            self.values,
            f"one longer than boundaries ({len(self.boundaries)})",
        )
        check(
            list(self.boundaries) == sorted(self.boundaries),
            "step.boundaries",
            self.boundaries,
            "increasing",
        )

    def value(self, t):
        return self.values[bisect.bisect_right(self.boundaries, t)]


@dataclasses.dataclass
class Keypoints(Schedule):
    """Linear interpolation through ``[[step, value], ...]``; holds before and after."""

    kind: ClassVar[str] = "keypoints"
    points: list

    def __post_init__(self):
        steps = [p[0] for p in self.points]
        check(
            len(self.points) >= 1 and steps == sorted(steps),
            "keypoints",
            self.points,
            "a non-empty list of [step, value] pairs with increasing steps",
        )

    def value(self, t):
        steps = [p[0] for p in self.points]
        i = bisect.bisect_right(steps, t)
        if i == 0:
            return float(self.points[0][1])
        if i == len(steps):
            return float(self.points[-1][1])
        (s0, v0), (s1, v1) = self.points[i - 1], self.points[i]
        return v0 + (v1 - v0) * (t - s0) / (s1 - s0)


@dataclasses.dataclass
class Piecewise(Schedule):
    """``[[start_step, schedule], ...]``: the last piece whose start ≤ t (the first before)."""

    kind: ClassVar[str] = "piecewise"
    pieces: list

    def __post_init__(self):
        self.pieces = [(int(s), make_schedule(p)) for s, p in self.pieces]
        starts = [s for s, _ in self.pieces]
        check(
            len(starts) >= 1 and starts == sorted(starts),
            "piecewise.pieces",
            starts,
            "a non-empty list of [start_step, schedule] with increasing starts",
        )

    def value(self, t):
        i = max(bisect.bisect_right([s for s, _ in self.pieces], t) - 1, 0)
        return self.pieces[i][1].value(t)


@dataclasses.dataclass
class Cycling(Schedule):
    """Repeats ``inner`` over ``[t0, t0 + period)`` from ``t0`` on."""

    kind: ClassVar[str] = "cycling"
    inner: Any
    period: int
    t0: int = 0

    def __post_init__(self):
        self.inner = make_schedule(self.inner)
        check(self.period > 0, "cycling.period", self.period, "an integer > 0")

    def value(self, t):
        return self.inner.value(t if t < self.t0 else self.t0 + (t - self.t0) % self.period)


KINDS: dict[str, type] = {
    c.kind: c for c in (Constant, Linear, Cubic, Cosine, Step, Keypoints, Piecewise, Cycling)
}
USAGE = (
    "a number (constant), a list of [step, value] pairs (linear through keypoints), or a "
    "mapping with 'type' in: "
    + ", ".join(KINDS)
    + " — e.g. {type: cosine, start: 0.3, end: 0.0, t0: 0, t1: 1000}"
)


def make_schedule(spec: Any) -> Schedule:
    """A float, a list of [step, value] pairs, a typed mapping or a Schedule -> Schedule."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(float(spec))
    if isinstance(spec, (list, tuple)):
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in spec):
            raise ConfigError(
                f"schedule {spec!r}: a list must hold [step, value] pairs; a schedule is {USAGE}"
            )
        return Keypoints([[int(s), float(v)] for s, v in spec])
    if isinstance(spec, dict):
        kind = spec.get("type")
        if kind not in KINDS:
            raise ConfigError(
                f"schedule type {kind!r} is unknown{nearest(kind, KINDS)}; a schedule is {USAGE}"
            )
        args = {k: v for k, v in spec.items() if k != "type"}
        if kind == "constant":
            args = {"value_": args.pop("value", None), **args}
        try:
            return KINDS[kind](**args)
        except TypeError as err:
            fields = [f.name for f in dataclasses.fields(KINDS[kind])]
            raise ConfigError(
                f"schedule {spec!r}: {err}; '{kind}' takes "
                f"{', '.join(f.rstrip('_') for f in fields)}"
            ) from None
    raise ConfigError(
        f"schedule {spec!r} ({type(spec).__name__}) is not understood; a schedule is {USAGE}"
    )


def ramp(shape: str, start: float, end: float, t0: int, t1: int) -> Schedule:
    """A ramp of the named shape; a zero-length window is a jump at ``t0``."""
    if t1 <= t0:
        return Step([t0], [start, end])
    return KINDS[shape](start, end, t0, t1)


@dataclasses.dataclass
class UpdateFrequency:
    """Topology updates every ``every`` steps in ``[start, stop)`` (stop None: no end)."""

    every: int
    start: int = 0
    stop: int | None = None

    def __post_init__(self):
        check(self.every > 0, "every", self.every, "an integer > 0")
        check(self.start >= 0, "start", self.start, "an integer >= 0")

    def is_update(self, t: int) -> bool:
        in_window = t >= self.start and (self.stop is None or t < self.stop)
        return in_window and (t - self.start) % self.every == 0

    def spec(self) -> dict:
        return dataclasses.asdict(self)
