"""Throughput of the fast intersection backend vs highway-env, measured in one run.

Reference: ``TwoVehicleIntersectionEnv`` stepped in a plain loop (one process, the way a
``SyncVectorEnv`` runs it), random actions, resets on episode end. Fast: ``FastIntersectionVectorEnv``
with 1, 16, 256, 4096, 16384, 65536 scenes (``--batches``), random actions, autoreset, timed in steady
state (after one episode's worth of decisions). Env steps/s = sub-env
steps per wall-clock second; also per CPU second of this process (``time.process_time``), which is less
sensitive to other processes sharing the machine. Both use one core (NumPy runs single-threaded here).

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


def _rates(steps: int, t0: float, c0: float) -> tuple[float, float]:
    return steps / (time.perf_counter() - t0), steps / max(time.process_time() - c0, 1e-9)


def reference_steps_per_s(tasks: list, seconds: float, seed: int) -> tuple[float, float]:
    """(wall, cpu) env steps/s of the highway-env reference env."""
    rng = np.random.default_rng(seed)
    steps, k = 0, 0
    env = TwoVehicleIntersectionEnv(tasks[0])
    env.reset(seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        steps += 1
        if term or trunc:
            k += 1
            env.reset(options={"task": tasks[k % len(tasks)]})
    return _rates(steps, t0, c0)


def fast_steps_per_s(
    tasks: list, batch: int, seconds: float, seed: int, warmup_steps: int
) -> tuple[float, float]:
    """(wall, cpu) env steps/s of the fast backend with ``batch`` scenes, in steady state: measured after
    ``warmup_steps`` decisions (episodes then end at different times, as in training) for at least
    ``seconds`` and 10 decisions."""
    rng = np.random.default_rng(seed)
    env = FastIntersectionVectorEnv([tasks[i % len(tasks)] for i in range(batch)], seed=seed)
    env.reset(seed=seed)
    for _ in range(warmup_steps):
        env.step(rng.integers(3, size=batch))
    steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or steps < 10 * batch:
        env.step(rng.integers(3, size=batch))
        steps += batch
    return _rates(steps, t0, c0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="random_crossing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 4096, 16384, 65536])
    parser.add_argument(
        "--warmup-steps", type=int, default=None, help="decisions before timing (default: 1 episode)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    tasks = list(load_scenario(args.scenario).sample_tasks(512, seed=args.seed))
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    warmup = horizon if args.warmup_steps is None else args.warmup_steps
    ref_wall, ref_cpu = reference_steps_per_s(tasks, args.seconds, args.seed)
    print(
        f"scenario {args.scenario}; reference highway-env (1 env, 1 process): "
        f"{ref_wall:,.0f} env steps/s wall, {ref_cpu:,.0f} per CPU-s"
    )
    print(f"{'scenes':>7} {'steps/s wall':>14} {'x ref':>8} {'steps/CPU-s':>14} {'x ref':>8}")
    best_wall = best_cpu = 0.0
    for batch in args.batches:
        wall, cpu = fast_steps_per_s(tasks, batch, args.seconds, args.seed, warmup)
        best_wall, best_cpu = max(best_wall, wall), max(best_cpu, cpu)
        print(f"{batch:>7} {wall:>14,.0f} {wall / ref_wall:>7.0f}x {cpu:>14,.0f} {cpu / ref_cpu:>7.0f}x")
    print(
        f"best: {best_wall:,.0f} env steps/s wall ({best_wall / ref_wall:.0f}x reference), "
        f"{best_cpu:,.0f} per CPU-s ({best_cpu / ref_cpu:.0f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
