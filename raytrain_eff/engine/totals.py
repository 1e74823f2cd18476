"""Run totals that survive failover: checkpointed with the step, restored with it.

A run that loses a worker resumes from its last checkpoint at step s; the per-step table keeps
the rows of steps < s and recomputes the rest. Every total the run reports -- to Tune, to
Prometheus, in ``summary.json`` -- is therefore the sum over the *kept* steps, which is what the
checkpoint at step s holds plus what this attempt has added since:

    total_x(t) = total_x(s) [manifest] + Σ_{s <= u < t} x_u

so the metrics, Tune's results, ``raytrain-eff compare`` (sums of the table) and
``summary.json`` agree however many attempts the run took. ``wall_seconds`` is wall time of
the kept work: each attempt adds the seconds since it started (compare's ``elapsed_s``).

For Prometheus each rank exports its *share* (counters are summed over ranks): the restored
part divided evenly over the current world size plus the rank's own amounts since, so the sum
over ranks is the run total even after an elastic change of world size.
"""

from __future__ import annotations

import dataclasses

from raytrain_eff.monitor import keys as K

MANIFEST_KEY = "totals"
WALL_SECONDS = "wall_seconds"  # wall time of the kept work, over attempts
SUMMED = (K.SAMPLES, K.TOKENS, K.DENSE_FLOPS, K.EFFECTIVE_FLOPS)


@dataclasses.dataclass
class RunTotals:
    samples: float = 0.0
    tokens: float = 0.0
    dense_flops: float = 0.0
    effective_flops: float = 0.0
    train_seconds: float = 0.0  # Σ step times of the kept steps
    wall_seconds: float = 0.0  # up to the start of this attempt; see ``wall``

    @classmethod
    def from_manifest(cls, manifest: dict, samples_fallback: float = 0.0) -> RunTotals:
        """The totals a checkpoint holds; checkpoints older than ``totals`` knew samples only."""
        saved = manifest.get(MANIFEST_KEY)
        if saved is None:
            return cls(samples=float(manifest.get("samples_seen", samples_fallback)))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(saved) - names
        if unknown:
            raise ValueError(
                f"checkpoint totals: unknown keys {sorted(unknown)}; known: {sorted(names)}"
            )
        return cls(**{k: float(v) for k, v in saved.items()})

    def add_step(self, row: dict) -> None:
        """Add one step's row (the run's amounts over all ranks)."""
        for key in SUMMED:
            setattr(self, key, getattr(self, key) + float(row[key]))
        self.train_seconds += float(row[K.STEP_TIME])

    def wall(self, attempt_seconds: float) -> float:
        """Wall seconds of the kept work when this attempt has run ``attempt_seconds``."""
        return self.wall_seconds + attempt_seconds

    def to_manifest(self, attempt_seconds: float) -> dict:
        return {**dataclasses.asdict(self), WALL_SECONDS: self.wall(attempt_seconds)}

    def summary(self, attempt_seconds: float) -> dict:
        return self.to_manifest(attempt_seconds)


class RankShare:
    """One rank's share of the run totals, as absolute counter values for its exporter."""

    def __init__(self, restored: RunTotals, world: int, start_step: int):
        self._values = {key: getattr(restored, key) / world for key in SUMMED}
        self._values[K.STEPS] = float(start_step)

    def add_step(self, rank_amounts: dict) -> dict[str, float]:
        """Add this rank's amounts of one step; returns the counters' new absolute values."""
        for key in SUMMED:
            self._values[key] += float(rank_amounts[key])
        self._values[K.STEPS] += 1
        return dict(self._values)
