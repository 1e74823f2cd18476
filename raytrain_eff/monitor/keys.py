"""The one vocabulary of step-statistic keys: what methods, the engine, the pusher and the
exporter call each statistic, defined once.

A method that reports a quantity the dashboard has a panel for returns it under the constant
here (``{keys.SPARSITY: ...}``), never under a look-alike string; ``monitor.metrics`` maps each
constant to its Prometheus metric, and the Grafana dashboard queries those metrics (a test
checks that every dashboard query names a defined metric, and one runs MST and reads
``raytrain_eff_sparsity_ratio`` from a real scrape). Any other numeric key a *method* reports is
a method statistic (``raytrain_eff_method_stat{stat=...}``); the engine's bookkeeping columns
(``BOOKKEEPING``, ``val_*``) live in the per-step table only and are never exported as one.

No imports: methods (pure maths) depend on this module and on nothing else of the monitor.
"""

from __future__ import annotations

# -- per-step amounts, summed into counters ---------------------------------------------------
SAMPLES = "samples"
TOKENS = "tokens"
DENSE_FLOPS = "dense_flops"  # what the dense reference model would have needed
EFFECTIVE_FLOPS = "effective_flops"  # what the method needed
CURVATURE_SECONDS = "curvature_seconds"  # Lanczos, Hessian-vector products (FOSI, DHO2)
DATA_WAIT_SECONDS = "data_wait_s"  # a step's wait for its batches (reads, decoding)
STEPS = "steps"  # optimizer steps (the exporter counts pushes)

# -- last value wins ----------------------------------------------------------------------------
STEP = "step"
LOSS = "loss"
LR = "lr"
RSS = "rss_bytes"
PEAK_MEMORY = "peak_memory_bytes"  # device peak on GPU, peak RSS on CPU
GPU_ALLOCATED = "gpu_allocated_bytes"  # CUDA only
GPU_PEAK = "gpu_peak_bytes"  # CUDA only
PARAM_BYTES = "param_bytes"  # parameters this rank holds (1/P of them under fsdp)
GRAD_BYTES = "grad_bytes"  # gradients this rank holds, sync buffers included
OPTIMIZER_BYTES = "optimizer_state_bytes"  # optimizer state this rank holds
SPARSITY = "sparsity"  # fraction of masked (zero) weights (MST)
ATTENTION_DENSITY = "attention_density"  # fraction of attention scores computed (MST)
ACTIVE_FRACTION = "active_fraction"  # fraction of wide-layer neurons active (sublinear)

# -- a histogram --------------------------------------------------------------------------------
STEP_TIME = "step_time_s"

# -- bookkeeping of the per-step table: never a metric ------------------------------------------
WALL = "wall_s"  # seconds since the attempt started
WORLD_SIZE = "world_size"
ATTEMPT = "attempt"
BOOKKEEPING = frozenset({WALL, WORLD_SIZE, ATTEMPT})
EVAL_PREFIX = "val_"  # held-out evaluation (val_loss, val_accuracy, ...)


def is_bookkeeping(key: str) -> bool:
    """True for the engine's table columns that are neither named metrics nor method stats."""
    return key in BOOKKEEPING or key.startswith(EVAL_PREFIX)
