"""Throughput of the reference (highway-env) intersection backend: env steps per second.

Run: ``python benchmarks/highway_env_speed.py [--steps N]``. Prints steps/s of one
``TwoVehicleIntersectionEnv`` stepped serially and of ``make_vector_env`` with 8 sub-envs (sync), both with
uniformly random actions and automatic resets, no rendering.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from intersection_meta.envs import make_env, make_vector_env
from intersection_meta.tasks import IntersectionTask

TASKS = [
    IntersectionTask("bench", "south", "left", 8.0, 40.0, "north", "straight", "idm", 9.0, 0.5),
    IntersectionTask("bench", "west", "straight", 7.0, 30.0, "south", "left", "constant_speed", 8.0, -0.5),
    IntersectionTask("bench", "east", "right", 6.0, 35.0, "west", "straight", "idm", 7.0, 1.0),
    IntersectionTask("bench", "north", "straight", 9.0, 50.0, "east", "left", "constant_speed", 6.0, 0.0),
]


def serial_steps_per_s(n_steps: int, seed: int = 0) -> float:
    env = make_env(TASKS[0], seed=seed)
    rng = np.random.default_rng(seed)
    env.reset()
    start = time.perf_counter()
    for _ in range(n_steps):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(3)))
        if terminated or truncated:
            env.reset()
    return n_steps / (time.perf_counter() - start)


def vector_steps_per_s(n_steps: int, num_envs: int = 8, seed: int = 0, asynchronous: bool = False) -> float:
    tasks = [TASKS[i % len(TASKS)] for i in range(num_envs)]
    vec = make_vector_env(tasks, seed=seed, asynchronous=asynchronous)
    rng = np.random.default_rng(seed)
    vec.reset()
    n_calls = max(1, n_steps // num_envs)
    start = time.perf_counter()
    for _ in range(n_calls):
        vec.step(rng.integers(3, size=num_envs))
    elapsed = time.perf_counter() - start
    vec.close()
    return n_calls * num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="env steps per measurement")
    args = parser.parse_args()
    print(f"two-vehicle env, serial:          {serial_steps_per_s(args.steps):8.1f} env steps/s")
    print(f"make_vector_env, 8 sub-envs sync: {vector_steps_per_s(args.steps):8.1f} env steps/s")


if __name__ == "__main__":
    main()
