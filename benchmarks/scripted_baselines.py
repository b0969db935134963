"""Scripted reference policies on an intersection scenario: how much a learned policy could gain.

    python benchmarks/scripted_baselines.py --scenario yield_left --tasks 200

Runs open-loop plans on held-out tasks with the fast backend: "always go" (FASTER every step), "hold" (IDLE),
and "brake for n decisions, then go" for n = 1..8; and the per-task best of those plans (an oracle that knows the
task). Prints mean return, crash and arrival rates. A meta-trained policy's post-adaptation return can be read
against these numbers.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from intersection_meta.envs.factory import make_vector_env
from intersection_meta.scenario import ScenarioError, load_scenario

SLOWER, IDLE, FASTER = 0, 1, 2


def run_plan(tasks, plan: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns, crashed and arrived flags of one episode per task under an open-loop action plan."""
    env = make_vector_env(tasks, seed=0, backend="fast")
    env.reset()
    n = len(tasks)
    returns, crashed, arrived = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
    done = np.zeros(n, bool)
    for action in plan:
        _, reward, terminated, truncated, info = env.step(np.full(n, action))
        returns += np.where(done, 0.0, reward)
        crashed |= ~done & info["crashed"]
        arrived |= ~done & info["arrived"]
        done |= terminated | truncated
        if done.all():
            break
    env.close()
    return returns, crashed, arrived


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="yield_left")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        scenario = load_scenario(args.scenario, args.set)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if scenario.kind != "intersection":
        raise SystemExit(f"error: {scenario.name} is a {scenario.kind} scenario; this script is for intersections")
    tasks = scenario.sample_tasks(args.tasks, seed=args.seed)
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    plans = {"always go": [FASTER] * horizon, "hold (IDLE)": [IDLE] * horizon}
    for n in range(1, 9):
        plans[f"brake {n}, then go"] = [SLOWER] * n + [FASTER] * horizon
    results = {name: run_plan(tasks, plan) for name, plan in plans.items()}
    print(f"{scenario.name}: {len(tasks)} tasks (seed {args.seed}), open-loop plans, fast backend")
    print(f"{'plan':<20} {'return':>8} {'crash':>7} {'arrive':>7}")
    for name, (ret, crash, arrive) in results.items():
        print(f"{name:<20} {ret.mean():>8.2f} {crash.mean():>7.1%} {arrive.mean():>7.1%}")
    best = np.max(np.stack([r[0] for r in results.values()]), axis=0)
    print(f"{'per-task best plan':<20} {best.mean():>8.2f}   (oracle: knows which plan suits each task)")


if __name__ == "__main__":
    main()
