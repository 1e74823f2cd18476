"""One rank of bench/startup.py's torchrun arm: the package's ``Runner`` on the gloo group
that torchrun's environment names (RANK, WORLD_SIZE, MASTER_ADDR/PORT), no Ray.

    torchrun --standalone --nproc_per_node 2 bench/startup_torchrun.py RUN_DIR COMMAND_START \\
        key=value ...
"""

from __future__ import annotations

import os
import sys


def main(run_dir: str, command_start: float, overrides: list[str]) -> None:
    import torch.distributed as dist

    from raytrain_eff import config
    from raytrain_eff.engine import local_ranks, startup

    marks = {"command": command_start}
    startup.mark(marks, "worker_process", startup.process_started())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo")
    startup.mark(marks, "train_fn")
    cfg = config.load(preset="default", overrides=overrides)
    runner = local_ranks.runner(cfg, rank, world, run_dir, run_name=os.path.basename(run_dir))
    runner.marks.update(marks)
    runner.run()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3:])
