"""Share of a default-shaped training run's iteration time spent sampling (issue 10: must be < 40%).

Runs ``--iterations`` meta-iterations of the default run config on ``--scenario`` in this process (after one
warm-up iteration that loads the compiled kernel) and prints the trainer's own figures: the sum of
``time_sampling_s`` over the sum of ``time_iteration_s`` (metrics.csv columns), with the other phases and the
load average. The full command, ``python -m intersection_meta.train --scenario yield_left --threads 1``, reports
the same columns in its ``metrics.csv``.

    python benchmarks/sampling_share.py --iterations 120
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch

from intersection_meta.config import make_config
from intersection_meta.trainer import Trainer

PHASES = ("sampling", "inner", "directed", "outer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="yield_left")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the trainer's default is 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit or 'unknown'}  load average {os.getloadavg()[0]:.2f} (start)")
    trainer = Trainer(make_config({"train.scenario": args.scenario}))
    trainer.step()  # warm-up: kernel cache load, first allocations
    t0 = time.perf_counter()
    rows = [trainer.step() for _ in range(args.iterations)]
    wall_s = time.perf_counter() - t0
    totals = {p: sum(r[f"time_{p}_s"] for r in rows) for p in PHASES}
    iteration_s = sum(r["time_iteration_s"] for r in rows)
    split = "  ".join(f"{p} {totals[p]:.2f} s" for p in PHASES)
    print(f"{args.scenario}: {args.iterations} iterations in {wall_s:.2f} s ({iteration_s / args.iterations:.3f} s/it)")
    print(f"  {split}")
    print(f"  sampling share {totals['sampling'] / iteration_s:.1%} (bar: < 40%)")
    print(f"load average {os.getloadavg()[0]:.2f} (end)")


if __name__ == "__main__":
    main()
