"""Every Prometheus metric raytrain_eff exports: name, type, help text and labels, in one place.

Names follow the Prometheus conventions: prefix ``raytrain_eff_``, base units (seconds, bytes,
FLOPs as a plain count), ``_total`` for counters, ``_ratio`` for fractions in [0, 1]. Labels are
``run``, ``trial``, ``node_id`` and ``rank`` -- never an IP address, because test clusters put
several Ray nodes on one IP. ``node_id`` is the Ray node id (hex), or the host name outside Ray.

A worker pushes one dict of step statistics per step (see ``monitor.push``); the tables below say
which statistic feeds which metric:

* ``COUNTERS``: per-step amounts summed into ``_total`` counters, so ``rate()`` gives per-second
  throughput over any window;
* ``RATES``: the same amounts divided by the wall time of the last push window, for dashboards
  that read a gauge (and for Ray-less single-process runs without Prometheus rate windows);
* ``GAUGES``: last value wins (loss, learning rate, memory, sparsity);
* ``STEP_TIME``: a histogram of step durations;
* any other numeric statistic a method reports goes to ``METHOD_STAT`` with a ``stat`` label;
  the engine's bookkeeping (``keys.is_bookkeeping``: wall time, world size, ``val_*``) goes nowhere.

The statistic keys are the constants of ``monitor.keys``, shared with the methods that emit them.
"""

from __future__ import annotations

import dataclasses

from raytrain_eff.monitor import keys as K

PREFIX = "raytrain_eff_"
WORKER_LABELS = ("run", "trial", "node_id", "rank")
NODE_LABELS = ("node_id",)
TUNE_LABELS = ("run", "node_id")

# Step times from 1 ms (tiny CPU models) to 2 min (large models with curvature refreshes).
STEP_TIME_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str  # full exposition name; counters end in _total
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...]


def _worker(name: str, kind: str, help: str) -> Metric:
    return Metric(PREFIX + name, kind, help, WORKER_LABELS)


# statistic key -> counter fed by its per-step amount
COUNTERS = {
    K.SAMPLES: _worker("samples_total", "counter", "Training samples processed."),
    K.TOKENS: _worker("tokens_total", "counter", "Training tokens processed."),
    K.DENSE_FLOPS: _worker(
        "dense_flops_total", "counter", "FLOPs the dense reference model would have needed."
    ),
    K.EFFECTIVE_FLOPS: _worker(
        "effective_flops_total",
        "counter",
        "FLOPs the method actually needed (after sparsity, compression).",
    ),
    K.CURVATURE_SECONDS: _worker(
        "curvature_seconds_total",
        "counter",
        "Seconds spent on curvature work (Lanczos, Hessian-vector products).",
    ),
    K.DATA_WAIT_SECONDS: _worker(
        "data_wait_seconds_total",
        "counter",
        "Seconds steps waited for their batches (reads, decoding).",
    ),
}
STEPS_KEY = K.STEPS
STEPS = _worker("steps_total", "counter", "Optimizer steps taken.")

# statistic key (or "steps") -> gauge of its per-second rate over the last push window
RATES = {
    STEPS_KEY: _worker("steps_per_second", "gauge", "Steps per second over the last push window."),
    K.SAMPLES: _worker(
        "samples_per_second", "gauge", "Samples per second over the last push window."
    ),
    K.TOKENS: _worker("tokens_per_second", "gauge", "Tokens per second over the last push window."),
    K.DENSE_FLOPS: _worker(
        "dense_flops_per_second", "gauge", "Dense-equivalent FLOP/s over the last push window."
    ),
    K.EFFECTIVE_FLOPS: _worker(
        "effective_flops_per_second", "gauge", "Effective FLOP/s over the last push window."
    ),
}

# statistic key -> gauge holding its last pushed value
GAUGES = {
    K.STEP: _worker("step", "gauge", "Index of the last step pushed."),
    K.LOSS: _worker("loss", "gauge", "Training loss of the last step."),
    K.LR: _worker("learning_rate", "gauge", "Learning rate of the last step."),
    K.RSS: _worker("worker_rss_bytes", "gauge", "Resident set size of the worker process."),
    K.PEAK_MEMORY: _worker(
        "worker_peak_memory_bytes",
        "gauge",
        "Peak memory of the worker so far (device peak on GPU, RSS peak on CPU).",
    ),
    K.GPU_ALLOCATED: _worker(
        "worker_gpu_allocated_bytes", "gauge", "GPU memory allocated by the worker."
    ),
    K.GPU_PEAK: _worker(
        "worker_gpu_peak_bytes", "gauge", "Peak GPU memory allocated by the worker."
    ),
    K.PARAM_BYTES: _worker(
        "worker_param_bytes", "gauge", "Parameter bytes the worker holds (its slice under fsdp)."
    ),
    K.GRAD_BYTES: _worker(
        "worker_grad_bytes",
        "gauge",
        "Gradient bytes the worker holds, all-reduce buffers included.",
    ),
    K.OPTIMIZER_BYTES: _worker(
        "worker_optimizer_state_bytes", "gauge", "Optimizer-state bytes the worker holds."
    ),
    K.SPARSITY: _worker("sparsity_ratio", "gauge", "Fraction of masked (zero) weights."),
    K.ATTENTION_DENSITY: _worker(
        "attention_density_ratio", "gauge", "Fraction of attention scores computed."
    ),
    K.ACTIVE_FRACTION: _worker(
        "active_neurons_ratio", "gauge", "Fraction of wide-layer neurons active in the step."
    ),
}
LAST_PUSH = _worker(
    "last_push_timestamp_seconds", "gauge", "Unix time of the last push from this worker."
)

STEP_TIME = _worker("step_time_seconds", "histogram", "Wall time of one training step.")
STEP_TIME_STAT = K.STEP_TIME

METHOD_STAT = Metric(
    PREFIX + "method_stat",
    "gauge",
    "Other per-step statistic reported by a method, named by the stat label.",
    WORKER_LABELS + ("stat",),
)

NODE_MEMORY = {
    "total": Metric(
        PREFIX + "node_memory_total_bytes", "gauge", "Physical memory of the node.", NODE_LABELS
    ),
    "used": Metric(
        PREFIX + "node_memory_used_bytes",
        "gauge",
        "Memory in use on the node (total minus available).",
        NODE_LABELS,
    ),
    "available": Metric(
        PREFIX + "node_memory_available_bytes",
        "gauge",
        "Memory available for new allocations without swapping.",
        NODE_LABELS,
    ),
}

TUNE_TRIALS = Metric(
    PREFIX + "tune_trials", "gauge", "Tune trials by state.", TUNE_LABELS + ("state",)
)
TUNE_TRIAL_STATES = ("running", "terminated", "errored")
TUNE_TRIALS_EXPECTED = Metric(
    PREFIX + "tune_trials_expected", "gauge", "Trials the Tune run will start in all.", TUNE_LABELS
)
TUNE_BEST = Metric(
    PREFIX + "tune_best_metric",
    "gauge",
    "Best value so far of the metric Tune optimises.",
    TUNE_LABELS,
)

# Statistics that are not method statistics (they feed named metrics or are bookkeeping).

ALL = (
    tuple(COUNTERS.values())
    + (STEPS,)
    + tuple(RATES.values())
    + tuple(GAUGES.values())
    + (LAST_PUSH, STEP_TIME, METHOD_STAT)
    + tuple(NODE_MEMORY.values())
    + (TUNE_TRIALS, TUNE_TRIALS_EXPECTED, TUNE_BEST)
)
