"""DHO2 / FOSI vs tuned AdamW and SGD-momentum: time and steps to a target validation loss,
and per-worker curvature memory at P = 1, 2, 4.

Workload: a small CNN (2 conv layers + linear head, ~29k parameters, a ~13 ms step on one
core, so steps are compute-bound rather than latency-bound) on scikit-learn's digits (1,797
real 8×8 handwritten digits; 20% held out). Every method runs through the method seam in a
plain PyTorch loop. Fairness: each method's learning rate gets the same number of
random-search trials on the same step budget (FOSI's tuned LR serves DHO2, which is the same
algorithm: tests/methods/test_dho2.py checks DHO2 at P=2 equals FOSI on the concatenated
batch); the target is the median over seeds of tuned AdamW's validation loss at 75% of the
steps, fixed before FOSI/DHO2 run. DHO2 and MR-DHO2 run on 2 gloo processes with half the
batch each (same global batch), and so does AdamW a second time, with the engine's
overlapped gradient all-reduce: the time ratio is taken against the faster AdamW (1 or 2
processes), what a user of this machine would run. Curvature memory is read from the
per-rank tensors (Lanczos basis slice + eigenvector slice) after a real refresh on 1, 2 and
4 gloo ranks. Both HVP modes are timed on the bench model (``hvp_modes`` in the JSON).

    python bench/dho2.py            # full run (~10 min on 2 cores) -> bench/results/dho2.json
    python bench/dho2.py --smoke    # seconds; checks the script end to end
"""
from __future__ import annotations

import math
import os
import pathlib
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.harness import parser, summary, write_result  # noqa: E402
from raytrain_eff.hparams.baselines import AdamWConfig, SGDConfig  # noqa: E402
from raytrain_eff.engine.grad_sync import OverlappedGradientSync  # noqa: E402
from raytrain_eff.hparams.fosi import DHO2Config, FOSIConfig, MRDHO2Config  # noqa: E402
from raytrain_eff.methods.base import MethodContext  # noqa: E402
from raytrain_eff.methods.baselines import SGD, AdamW  # noqa: E402
from raytrain_eff.methods.dho2 import DHO2, MRDHO2, DHO2Optimizer  # noqa: E402
from raytrain_eff.methods.fosi import FOSI  # noqa: E402
from raytrain_eff.methods.lanczos import HessianOperator  # noqa: E402
from raytrain_eff.tasks.base import epoch_batch_indices, step_generator  # noqa: E402

LR_RANGE = {"adamw": (1e-4, 3e-2), "sgd": (1e-3, 0.5), "fosi": (1e-4, 3e-2)}
CURVATURE = dict(base="adamw", k=5, refresh_interval=100, warmup=20)  # m = 4k = 20 HVPs


def load_digits_tensors():
    from sklearn.datasets import load_digits
    d = load_digits()
    X = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    X, y = (X - X.mean()) / X.std(), y
    n_val = len(y) // 5
    return (X[perm[n_val:]], y[perm[n_val:]]), (X[perm[:n_val]], y[perm[:n_val]])


MODEL = "CNN conv(1,32)-conv(32,64)-avgpool-linear(1024,10)"


def cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 4 * 4, 10))


def loss_fn(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def method_for(name: str, lr: float):
    if name == "adamw":
        return AdamW(AdamWConfig(lr=lr, weight_decay=0.0))
    if name == "sgd":
        return SGD(SGDConfig(lr=lr, momentum=0.9))
    if name == "fosi":
        return FOSI(FOSIConfig(lr=lr, **CURVATURE))
    if name == "dho2":
        return DHO2(DHO2Config(lr=lr, **CURVATURE))
    return MRDHO2(MRDHO2Config(lr=lr, lanczos_per_step=4, **CURVATURE))


def train(name, lr, seed, steps, data, eval_every, rank=0, world=1, group=None):
    """One run through the seam; returns per-eval (step, train seconds, val loss, curvature
    seconds so far) and the per-step wall times (evaluation excluded)."""
    (Xt, yt), (Xv, yv) = data
    batch = 64 // world
    model = cnn(seed)
    curvature = step_generator(seed, 7, rank)

    def next_batch():    # a fresh batch from this rank's half of the data for each refresh
        half = len(yt) // world
        idx = torch.randint(rank * half, (rank + 1) * half, (batch,), generator=curvature)
        return Xt[idx], yt[idx]
    ctx = MethodContext(rank=rank, world_size=world, group=group, total_steps=steps,
                        loss_fn=loss_fn, next_batch=next_batch)
    method = method_for(name, lr)
    opt = method.make_optimizer(model, ctx)
    sync = (OverlappedGradientSync(model, group, world)      # the engine's data parallelism
            if world > 1 and not method.owns_gradient_sync else None)
    trace, step_times, elapsed, curvature_s, eigenpairs = [], [], 0.0, 0.0, 0.0
    for step in range(steps):
        idx = epoch_batch_indices(len(yt), seed, step, 0, rank, world, batch)
        start = time.perf_counter()
        opt.zero_grad()
        if sync:
            sync.arm(True)
        loss_fn(model, (Xt[idx], yt[idx])).backward()
        if sync:
            sync.finish()
        opt.step()
        stats = method.after_step(step, ctx)
        curvature_s += stats.get("curvature_seconds", 0.0)
        eigenpairs = max(eigenpairs, stats.get("eigenpairs", 0.0))
        step_times.append(time.perf_counter() - start)
        elapsed += step_times[-1]
        if (step + 1) % eval_every == 0:
            with torch.no_grad():
                val = float(loss_fn(model, (Xv, yv)))
            trace.append((step + 1, elapsed, val if math.isfinite(val) else float("inf"),
                          curvature_s))
    return {"trace": trace, "step_times": step_times, "curvature_seconds": curvature_s,
            "eigenpairs_max": eigenpairs}


def tune(name, trials, steps, data, eval_every):
    """Random search over the LR (log-uniform), one seed, scored by the final val loss."""
    gen = torch.Generator().manual_seed(1234)          # the same draws for every method
    lo, hi = LR_RANGE[name]
    results = []
    for _ in range(trials):
        lr = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * float(torch.rand(1, generator=gen)))
        run = train(name, lr, 100, steps, data, eval_every)
        results.append({"lr": lr, "final_val_loss": run["trace"][-1][2]})
    best = min(results, key=lambda r: r["final_val_loss"])
    return best["lr"], results


def to_target(trace, target):
    """(steps, train seconds, curvature seconds among them) at the first evaluation at or
    below the target; inf if never."""
    for step, seconds, val, curvature in trace:
        if val <= target:
            return step, seconds, curvature
    return float("inf"), float("inf"), float("inf")


# -- gloo ranks: DHO2 / MR-DHO2 at P=2 and curvature memory at P=1, 2, 4 -----------------------
# Timed runs get a group of exactly 2 processes: idle extra ranks waiting in a collective
# would share the 2 cores with the ranks being timed.
def _train_ranks(rank, world, port, jobs, steps, data, eval_every, curvature, queue):
    _join(rank, world, port, curvature)
    runs = [train(name, lr, seed, steps, data, eval_every, rank, world, dist.group.WORLD)
            for name, lr, seed in jobs]
    queue.put((rank, runs))
    dist.destroy_process_group()


def _memory_ranks(rank, world, port, curvature, queue):
    _join(rank, world, port, curvature)
    groups = {p: dist.new_group(list(range(p))) for p in (1, 2, 4)}   # every rank creates each
    memory = {}
    for P in (1, 2, 4):
        if rank < P:
            memory[P] = _curvature_memory(rank, P, groups[P], load_digits_tensors())
        dist.barrier()
    queue.put((rank, memory))
    dist.destroy_process_group()


def _join(rank, world, port, curvature) -> None:
    CURVATURE.update(curvature)                  # a spawned process re-imports this module
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _curvature_memory(rank, P, group, data):
    """Bytes this rank holds after one real refresh: Lanczos basis slice, eigenvector slice.
    Every P sees the same global batch (split over ranks), and all k Ritz pairs are kept
    (ritz_tol = 1e9): the worst-case footprint, equal eigenpair counts at every P."""
    (Xt, yt), _ = data
    idx = torch.randint(0, len(yt), (64,), generator=step_generator(0, 11))
    mine = idx.view(P, -1)[rank]
    opt = DHO2Optimizer(cnn(0), DHO2Config(**{**CURVATURE, "ritz_tol": 1e9}), loss_fn,
                        lambda: (Xt[mine], yt[mine]), group=group, rank=rank, world_size=P)
    opt.refresh()
    return {"n": opt.n, "basis_bytes": opt.eig.basis_bytes,
            "eigenvector_bytes": opt.V.numel() * opt.V.element_size(),
            "curvature_bytes": opt.curvature_bytes(), "transient_bytes": opt.transient_bytes(),
            "eigenpairs": int(opt.V.shape[0])}


def spawn(target, world: int, *args) -> dict:
    """Run ``target(rank, world, port, *args, queue)`` on ``world`` gloo processes; rank -> result."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=900) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return out


# -- figures --------------------------------------------------------------------------------
def figures(runs, target, strict_target):
    hits = [to_target(r["trace"], target) for r in runs]
    strict = [to_target(r["trace"], strict_target) for r in runs]
    times = sorted(t for r in runs for t in r["step_times"])
    return {"steps_to_target": summary([h[0] for h in hits]),
            "seconds_to_target": summary([h[1] for h in hits]),
            "curvature_seconds_to_target": summary([h[2] for h in hits]),
            "steps_to_strict_target": summary([h[0] for h in strict]),
            "seconds_to_strict_target": summary([h[1] for h in strict]),
            "final_val_loss": summary([r["trace"][-1][2] for r in runs]),
            "curvature_seconds": summary([r["curvature_seconds"] for r in runs]),
            "eigenpairs_max": summary([r["eigenpairs_max"] for r in runs]),
            "step_seconds_median": statistics.median(times),
            "step_seconds_max": times[-1], "traces": [r["trace"] for r in runs]}


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    steps, eval_every = (20, 10) if args.smoke else (400, 10)
    trials, seeds = (1, [0]) if args.smoke else (6, [0, 1, 2])
    if args.smoke:     # one short refresh: the script end to end, not the figures
        CURVATURE.update(k=2, warmup=5)
    data = load_digits_tensors()
    wall = time.perf_counter()
    lrs, tuning = {}, {}
    for name in ("adamw", "sgd", "fosi"):
        lrs[name], tuning[name] = tune(name, trials, steps, data, eval_every)
    # the target: tuned AdamW's median val loss at 75% of the steps, fixed before FOSI/DHO2 run
    adamw = [train("adamw", lrs["adamw"], s, steps, data, eval_every) for s in seeds]
    at = int(0.75 * steps) // eval_every * eval_every
    target = statistics.median(dict((st, v) for st, _, v, _ in r["trace"])[at] for r in adamw)
    single = {"sgd": [], "fosi": []}
    for s in seeds:                                   # interleaved: machine noise hits both
        for name in single:
            single[name].append(train(name, lrs[name], s, steps, data, eval_every))
    jobs = [(name, lrs["adamw" if name == "adamw" else "fosi"], s)
            for s in seeds for name in ("dho2", "mr-dho2", "adamw")]
    rank0 = spawn(_train_ranks, 2, jobs, steps, data, eval_every, dict(CURVATURE))[0]
    memory = spawn(_memory_ranks, 4, dict(CURVATURE))[0]
    on_two = {key: [r for (name, _, _), r in zip(jobs, rank0) if name == key]
              for key in ("dho2", "mr-dho2", "adamw")}
    report(args, steps, seeds, trials, lrs, tuning, target, at, data, memory,
           {"adamw": adamw, "adamw-p2": on_two["adamw"], "sgd": single["sgd"],
            "fosi": single["fosi"], "dho2": on_two["dho2"], "mr-dho2": on_two["mr-dho2"]},
           hvp_mode_seconds(data), time.perf_counter() - wall)


def hvp_mode_seconds(data, calls: int = 10) -> dict:
    """Seconds per HVP of each mode on the bench model, at a rank's and at the global batch,
    and of the double-backward gradient-graph build (once per refresh), against a training
    step (forward + backward) on the same batch."""
    (Xt, yt), _ = data
    out = {}
    for batch in (32, 64):
        model, rows = cnn(0), (Xt[:batch], yt[:batch])
        v = torch.randn(sum(p.numel() for p in model.parameters()))
        out[f"train_step_batch{batch}"] = _seconds(
            lambda: loss_fn(model, rows).backward(), calls)
        for mode in ("forward_over_reverse", "double_backward"):
            H = HessianOperator(model, loss_fn, rows, mode=mode)
            start = time.perf_counter()
            H.prepare()
            if mode == "double_backward":
                out[f"graph_build_batch{batch}"] = time.perf_counter() - start
            out[f"{mode}_batch{batch}"] = _seconds(lambda: H(v), calls)
    return out


def _seconds(fn, calls: int) -> float:
    fn()                                                            # warm-up
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def report(args, steps, seeds, trials, lrs, tuning, target, at, data, memory, runs, hvp, wall):
    # a second, stricter target: the median over seeds of tuned AdamW's best val loss
    strict = statistics.median(min(v for _, _, v, _ in r["trace"]) for r in runs["adamw"])
    fig = {name: figures(r, target, strict) for name, r in runs.items()}
    med = lambda name, key: fig[name][key]["median"]
    ratio = lambda a, b: a / b if b > 0 else float("inf")
    fastest_adamw = lambda key: min(med("adamw", key), med("adamw-p2", key))
    time_ratio = ratio(fastest_adamw("seconds_to_target"), med("dho2", "seconds_to_target"))
    base = memory[1]["curvature_bytes"]
    ideal = {f"P{P}": base / (P * memory[P]["curvature_bytes"]) for P in (2, 4)}
    ratios = {"fastest_adamw_over_dho2_seconds_to_target": time_ratio,
              "adamw_p2_over_dho2_seconds_to_target": ratio(med("adamw-p2", "seconds_to_target"),
                                                            med("dho2", "seconds_to_target")),
              "adamw_over_fosi_seconds_to_target": ratio(med("adamw", "seconds_to_target"),
                                                         med("fosi", "seconds_to_target")),
              "adamw_over_dho2_steps_to_target": ratio(med("adamw", "steps_to_target"),
                                                       med("dho2", "steps_to_target")),
              "dho2_over_adamw_p2_step_seconds_median": ratio(
                  fig["dho2"]["step_seconds_median"], fig["adamw-p2"]["step_seconds_median"]),
              "mr_dho2_over_dho2_step_seconds_max": ratio(fig["mr-dho2"]["step_seconds_max"],
                                                          fig["dho2"]["step_seconds_max"]),
              "fastest_adamw_over_dho2_seconds_to_strict_target": ratio(
                  fastest_adamw("seconds_to_strict_target"),
                  med("dho2", "seconds_to_strict_target")),
              "curvature_memory_fraction_of_ideal": ideal}
    time_met = time_ratio >= 1.4
    memory_met = min(ideal.values()) >= 0.9
    notes = [
        f"tuned AdamW reaches val loss {target:.4f} in {med('adamw', 'seconds_to_target'):.2f} s"
        f" / {med('adamw', 'steps_to_target'):.0f} steps on 1 process and "
        f"{med('adamw-p2', 'seconds_to_target'):.2f} s / {med('adamw-p2', 'steps_to_target'):.0f}"
        f" steps on 2 (medians); DHO2 (P=2) in {med('dho2', 'seconds_to_target'):.2f} s / "
        f"{med('dho2', 'steps_to_target'):.0f} steps, "
        f"{med('dho2', 'curvature_seconds_to_target'):.2f} s of it curvature; FOSI (1 process)"
        f" in {med('fosi', 'seconds_to_target'):.2f} s / "
        f"{med('fosi', 'steps_to_target'):.0f} steps. Time target "
        f"{'met' if time_met else 'missed'}: {time_ratio:.2f}x against the faster AdamW. "
        f"To AdamW's best val loss {strict:.4f} (a stricter target, reported beside the issue's): "
        f"AdamW {med('adamw', 'seconds_to_strict_target'):.2f} s on 1 process, "
        f"{med('adamw-p2', 'seconds_to_strict_target'):.2f} s on 2; DHO2 "
        f"{med('dho2', 'seconds_to_strict_target'):.2f} s; FOSI "
        f"{med('fosi', 'seconds_to_strict_target'):.2f} s."]
    if not time_met:
        fastest = min(("adamw", "adamw-p2"), key=lambda name: med(name, "seconds_to_target"))
        fewer = ratio(med(fastest, "steps_to_target"), med("dho2", "steps_to_target"))
        refreshes = len(range(CURVATURE["warmup"], steps, CURVATURE["refresh_interval"]))
        notes.append(
            f"Why: DHO2 needs {fewer:.2f}x fewer steps than the faster AdamW, which bounds the "
            f"time ratio even at equal step cost; its step costs "
            f"{ratios['dho2_over_adamw_p2_step_seconds_median']:.2f}x AdamW's on 2 processes "
            f"(three more sequential gloo collectives of a few floats each: latency-bound on 2 "
            f"shared cores) and each refresh ({DHO2Config(**CURVATURE).order} HVPs) "
            f"{med('dho2', 'curvature_seconds') / refreshes:.2f} s.")
    if not memory_met:
        notes.append(f"memory target missed: fraction of ideal 1/P = {ideal}")
    write_result(
        "dho2", smoke=args.smoke, out=args.out, met=time_met and memory_met,
        notes=" ".join(notes),
        config={"dataset": "sklearn digits (1797 8x8 images, 20% validation)", "model": MODEL,
                "n_params": memory[1]["n"], "steps": steps, "global_batch": 64,
                "seeds": seeds, "lr_trials_per_method": trials, "lr_ranges": LR_RANGE,
                "curvature": CURVATURE, "dho2_workers": 2, "mr_dho2_lanczos_per_step": 4,
                "wall_seconds": wall},
        baseline={"adamw": fig["adamw"], "adamw-p2": fig["adamw-p2"], "sgd": fig["sgd"]},
        method={"dho2": fig["dho2"], "fosi": fig["fosi"], "mr-dho2": fig["mr-dho2"]},
        ratios=ratios,
        target={"val_loss": target, "at_step": at, "from": "tuned AdamW, median over seeds",
                "strict_val_loss": strict,
                "strict_from": "tuned AdamW's lowest val loss in the budget, median over seeds",
                "time_ratio": 1.4, "memory_fraction_of_ideal": 0.9},
        extra={"tuned_lr": lrs, "tuning": tuning,
               "curvature_memory_per_worker": {f"P{P}": m for P, m in memory.items()},
               "hvp_modes": hvp})


if __name__ == "__main__":
    main()
