"""Throughput of the fast intersection backend vs highway-env, measured in one run.

Reference: ``TwoVehicleIntersectionEnv`` stepped in a plain loop (one process, the way a
``SyncVectorEnv`` runs it), random actions, resets on episode end. Fast: ``FastIntersectionVectorEnv``
with 1, 16, 256, 4096 scenes (``--batches``), random actions, autoreset. Env steps/s = sub-env steps per
wall-clock second.

    python benchmarks/fast_backend_speed.py
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from intersection_meta.envs.fast_intersection import FastIntersectionVectorEnv
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.scenario import load_scenario


def reference_steps_per_s(tasks: list, seconds: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    steps, k = 0, 0
    env = TwoVehicleIntersectionEnv(tasks[0])
    env.reset(seed=seed)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        steps += 1
        if term or trunc:
            k += 1
            env.reset(options={"task": tasks[k % len(tasks)]})
    return steps / (time.perf_counter() - t0)


def fast_steps_per_s(tasks: list, batch: int, seconds: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    env = FastIntersectionVectorEnv([tasks[i % len(tasks)] for i in range(batch)], seed=seed)
    env.reset(seed=seed)
    env.step(rng.integers(3, size=batch))  # warm-up
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.integers(3, size=batch))
        steps += batch
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="random_crossing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 4096])
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tasks = list(load_scenario(args.scenario).sample_tasks(512, seed=args.seed))
    ref = reference_steps_per_s(tasks, args.seconds, args.seed)
    print(f"scenario {args.scenario}; reference highway-env (1 env, 1 process): {ref:,.0f} env steps/s")
    print(f"{'scenes':>7} {'env steps/s':>14} {'x reference':>12}")
    best = 0.0
    for batch in args.batches:
        rate = fast_steps_per_s(tasks, batch, args.seconds, args.seed)
        best = max(best, rate)
        print(f"{batch:>7} {rate:>14,.0f} {rate / ref:>11.1f}x")
    print(f"best fast / reference ratio: {best / ref:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
