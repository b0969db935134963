"""Scripted reference policies on an intersection scenario: how much a learned policy could gain.

    python benchmarks/scripted_baselines.py --scenario yield_left --tasks 200

Runs the open-loop plans of :mod:`intersection_meta.scripted` on held-out tasks with the fast backend: "always go"
(FASTER every step), "hold" (IDLE), and "brake for n decisions, then go" for n = 1..8; and the per-task best of
those plans (an oracle that knows the task). Prints mean return, crash and arrival rates. A meta-trained policy's
post-adaptation return can be read against these numbers.
"""

from __future__ import annotations

import argparse
import sys

from intersection_meta.scenario import ScenarioError, load_scenario
from intersection_meta.scripted import scripted_references


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
        print(
            f"error: {scenario.name} is a {scenario.kind} scenario; this script is for intersections", file=sys.stderr
        )
        raise SystemExit(2)
    refs = scripted_references(scenario, n_tasks=args.tasks, seed=args.seed)
    print(f"{scenario.name}: {args.tasks} tasks (seed {args.seed}), open-loop plans, fast backend")
    print(f"{'plan':<20} {'return':>8} {'crash':>7} {'arrive':>7}")
    for plan in refs.plans:
        print(f"{plan.name:<20} {plan.return_mean:>8.2f} {plan.collision_rate:>7.1%} {plan.arrival_rate:>7.1%}")
    print(f"{'per-task best plan':<20} {refs.per_task_best_return:>8.2f}   (oracle: knows which plan suits each task)")


if __name__ == "__main__":
    main()
