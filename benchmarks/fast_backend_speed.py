"""Throughput of the fast intersection backend vs highway-env, measured in one run.

Reference: ``TwoVehicleIntersectionEnv`` stepped in a plain loop (one process, the way a
``SyncVectorEnv`` runs it), random actions, resets on episode end. Fast: ``FastIntersectionVectorEnv``
(``--workers 1``) and ``ShardedFastIntersectionVectorEnv`` (``--workers 2``: the scenes split over this
process and one worker process, identical results) with 1, 16, 256, 4096, 16384, 65536 scenes
(``--batches``), random actions, autoreset, timed in steady state (after one episode's worth of decisions).
Env steps/s = sub-env steps per wall-clock second; also per CPU second (``time.process_time`` of this
process plus, for sharded runs, of the workers), which is less sensitive to other processes sharing the
machine. NumPy runs single-threaded here. The bars: fast >= 100x the reference and >= 100,000 env steps/s.

    python benchmarks/fast_backend_speed.py [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from intersection_meta.envs.fast_intersection import FastIntersectionVectorEnv
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.envs.sharded import ShardedFastIntersectionVectorEnv
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
    tasks: list, batch: int, seconds: float, seed: int, warmup_steps: int, workers: int = 1
) -> tuple[float, float]:
    """(wall, cpu) env steps/s of the fast backend with ``batch`` scenes over ``workers`` processes, in
    steady state: measured after ``warmup_steps`` decisions (episodes then end at different times, as in
    training) for at least ``seconds`` and 10 decisions."""
    rng = np.random.default_rng(seed)
    scene_tasks = [tasks[i % len(tasks)] for i in range(batch)]
    if workers == 1:
        env = FastIntersectionVectorEnv(scene_tasks, seed=seed)
        cpu = time.process_time
    else:
        env = ShardedFastIntersectionVectorEnv(scene_tasks, seed=seed, workers=workers)
        cpu = env.cpu_seconds
    try:
        env.reset(seed=seed)
        for _ in range(warmup_steps):
            env.step(rng.integers(3, size=batch))
        steps = 0
        t0, c0 = time.perf_counter(), cpu()
        while time.perf_counter() - t0 < seconds or steps < 10 * batch:
            env.step(rng.integers(3, size=batch))
            steps += batch
        return steps / (time.perf_counter() - t0), steps / max(cpu() - c0, 1e-9)
    finally:
        env.close()


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
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="process counts to time")
    args = parser.parse_args(argv)

    tasks = list(load_scenario(args.scenario).sample_tasks(512, seed=args.seed))
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    warmup = horizon if args.warmup_steps is None else args.warmup_steps
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    ref_wall, ref_cpu = reference_steps_per_s(tasks, args.seconds, args.seed)
    print(
        f"scenario {args.scenario}; reference highway-env (1 env, 1 process): "
        f"{ref_wall:,.0f} env steps/s wall, {ref_cpu:,.0f} per CPU-s"
    )
    print(f"{'workers':>7} {'scenes':>7} {'steps/s wall':>14} {'x ref':>8} {'steps/CPU-s':>14} {'x ref':>8}")
    best_wall = best_cpu = 0.0
    for workers in args.workers:
        for batch in args.batches:
            if batch < workers:
                continue
            wall, cpu = fast_steps_per_s(tasks, batch, args.seconds, args.seed, warmup, workers)
            best_wall, best_cpu = max(best_wall, wall), max(best_cpu, cpu)
            print(
                f"{workers:>7} {batch:>7} {wall:>14,.0f} {wall / ref_wall:>7.0f}x {cpu:>14,.0f} "
                f"{cpu / ref_cpu:>7.0f}x",
                flush=True,
            )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"best: {best_wall:,.0f} env steps/s wall ({best_wall / ref_wall:.0f}x reference), "
        f"{best_cpu:,.0f} per CPU-s ({best_cpu / ref_cpu:.0f}x)"
    )
    for label, best, ref in (("wall-clock", best_wall, ref_wall), ("per CPU-s", best_cpu, ref_cpu)):
        print(
            f"bars ({label}): >=100x reference: {'MET' if best >= 100 * ref else 'NOT MET'}; "
            f">=100,000 env steps/s: {'MET' if best >= 100_000 else 'NOT MET'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
