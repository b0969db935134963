"""Throughput of the fast (numba) intersection backend vs highway-env, measured in one run.

Random discrete actions on the tasks of ``--scenario`` (default yield_left), one process, steady state
(timed after one episode of decisions, so episodes end at different times as in training). Batches of
1, 100 and 400 scenes run on one thread; 65,536 scenes on 1 and on 2 numba threads. Prints scene-steps/s,
scene-steps per CPU-second of the process (all its threads; less sensitive to other processes sharing the
machine), the ratio to highway-env's own env (``TwoVehicleIntersectionEnv``, one env, timed in the same run)
and the issue-10 bars (>= 20,000 at 1 scene, >= 50,000 at 100 and 400, >= 150,000 at 65,536 with 2 threads).
``--compile`` also times, in fresh processes with an empty ``NUMBA_CACHE_DIR``, the first env step (JIT
compile) and the same in a second process (cache load).

    python benchmarks/fast_backend_speed.py [--compile]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.scenario import load_scenario

#: (scenes, numba threads, bar in scene-steps/s or None)
CONFIGS: tuple[tuple[int, int, float | None], ...] = (
    (1, 1, 20_000),
    (100, 1, 50_000),
    (400, 1, 50_000),
    (65_536, 1, None),
    (65_536, 2, 150_000),
)

_FIRST_STEP = """
import time
t0 = time.perf_counter()
import numpy as np
from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.scenario import load_scenario
tasks = list(load_scenario("yield_left").sample_tasks(4, seed=0))
t1 = time.perf_counter()
env = FastIntersectionVectorEnv(tasks, seed=0)
env.reset()
env.step(np.ones(4, dtype=int))
print(time.perf_counter() - t1, t1 - t0)
"""


def reference_steps_per_s(tasks: list, seconds: float, seed: int) -> float:
    """Env steps/s of highway-env's reference env (random actions, task switched at every reset)."""
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


def fast_steps_per_s(
    tasks: list, scenes: int, seconds: float, seed: int, warmup_steps: int
) -> tuple[float, float, float]:
    """(scene-steps/s, scene-steps per CPU-second of the process's threads, ms per ``step()``) of the fast
    backend with ``scenes`` scenes, in steady state: timed after ``warmup_steps`` decisions for at least
    ``seconds`` and 10 decisions."""
    rng = np.random.default_rng(seed)
    env = FastIntersectionVectorEnv([tasks[i % len(tasks)] for i in range(scenes)], seed=seed)
    env.reset()
    actions = rng.integers(3, size=(64, scenes))
    for k in range(warmup_steps):
        env.step(actions[k % 64])
    calls = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or calls < 10:
        env.step(actions[calls % 64])
        calls += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return calls * scenes / elapsed, calls * scenes / cpu, 1e3 * elapsed / calls


def compile_times() -> tuple[float, float, float]:
    """(first step with an empty cache, first step with the cache filled, import time) in seconds, each
    in a fresh process."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = [
            subprocess.run([sys.executable, "-c", _FIRST_STEP], env=env, capture_output=True, text=True, check=True)
            for _ in range(2)
        ]
    (cold, _), (warm, imports) = (tuple(map(float, r.stdout.split())) for r in runs)
    return cold, warm, imports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="yield_left")
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement time per configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="also time the JIT compile and the cache load")
    args = parser.parse_args(argv)

    tasks = list(load_scenario(args.scenario).sample_tasks(512, seed=args.seed))
    warmup = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    if args.compile:
        cold, warm, imports = compile_times()
        print(f"first step, empty numba cache (JIT compile): {cold:.1f} s; cached, new process: {warm:.2f} s")
        print(f"  (imports before that: {imports:.1f} s)")
    fast_steps_per_s(tasks, 4, 0.0, args.seed, 1)  # compile / load the kernel outside the timings
    ref = reference_steps_per_s(tasks, args.seconds, args.seed)
    print(f"scenario {args.scenario}; highway-env TwoVehicleIntersectionEnv: {ref:,.0f} env steps/s")
    print(f"{'scenes':>7} {'threads':>7} {'scene-steps/s':>14} {'per CPU-s':>10} {'ms/step()':>10} {'x highway':>10}  bar")
    passed = True
    for scenes, threads, bar in CONFIGS:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        rate, per_cpu, ms = fast_steps_per_s(tasks, scenes, args.seconds, args.seed, warmup)
        verdict = "" if bar is None else f">= {bar:,.0f}: {'pass' if rate >= bar else 'FAIL'}"
        passed &= bar is None or rate >= bar
        print(f"{scenes:>7} {threads:>7} {rate:>14,.0f} {per_cpu:>10,.0f} {ms:>10.3f} {rate / ref:>9.0f}x  {verdict}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
