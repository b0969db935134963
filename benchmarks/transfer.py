"""Transfer check: a policy meta-trained on the fast backend, evaluated on highway-env and on the fast backend.

    python benchmarks/transfer.py --checkpoint policies/yield_left_directed_maml.pt --tasks 40 --episodes 10

Prints the post-adaptation success rate on both backends (same held-out tasks and seeds) and their difference;
the bar is a difference within 3 percentage points. Exit status 1 if it is missed.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.evaluate import evaluate_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--adapt-steps", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    rows = {}
    for backend in ("fast", "highway"):
        t0 = time.perf_counter()
        report = evaluate_checkpoint(ckpt, n_tasks=args.tasks, adapt_steps=args.adapt_steps,
                                     episodes_per_task=args.episodes, seed=args.seed, backend=backend)
        rows[backend] = (report["steps"][-1], time.perf_counter() - t0)
    print(f"{ckpt.algo} on {ckpt.scenario.name}, {args.tasks} held-out tasks x {args.episodes} episodes, "
          f"{args.adapt_steps} adaptation step(s)")
    for backend, (step, seconds) in rows.items():
        print(f"  {backend:<8} success {step['success_rate']:.1%}  collision {step['collision_rate']:.1%}  "
              f"return {step['return_mean']:.3f}  ({seconds:.1f} s)")
    diff_pp = 100 * abs(rows["fast"][0]["success_rate"] - rows["highway"][0]["success_rate"])
    ok = diff_pp <= 3.0
    print(f"  |success(fast) - success(highway)| = {diff_pp:.2f} pp (bar: <= 3 pp): {'met' if ok else 'MISSED'}")
    print(f"  evaluation wall time ratio highway / fast = {rows['highway'][1] / rows['fast'][1]:.1f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
