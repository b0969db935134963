"""How the gap-acceptance rule's two constants were chosen, and how the rule scores against the open-loop plans.

    python benchmarks/gap_acceptance_grid.py                 # the grid, then every scenario on fresh tasks

Step 1 (tuning): on 200 tasks of every scenario sampled with ``--tune-seed`` (99), every pair of the grid (clear
distance 10-30 m x margin 0-2 s) is run; the pair with no collision on any scenario and the best mean return over
the scenarios is chosen. Step 2 (report): the chosen pair on 200 tasks sampled with ``--seed`` (0), against always
go, the best fixed plan and the per-task best plan on the same tasks. The package's constants
(``intersection_meta.gap_acceptance.CLEAR_DISTANCE_M`` / ``MARGIN_S``) are this script's choice; it says whether
they still are. About 1 minute on 2 cores.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from intersection_meta.gap_acceptance import CLEAR_DISTANCE_M, MARGIN_S, run_gap_acceptance
from intersection_meta.scenario import available_scenarios, load_scenario
from intersection_meta.scripted import references_for_tasks

ROOT = Path(__file__).resolve().parents[1]
CLEAR_GRID_M = (10.0, 15.0, 20.0, 25.0, 30.0)
MARGIN_GRID_S = (0.0, 0.5, 1.0, 1.5, 2.0)


def default_scenarios() -> list[str]:
    shipped = [n for n in available_scenarios() if load_scenario(n).kind == "intersection"]
    return shipped + sorted(str(p) for p in (ROOT / "benchmarks" / "unseen_scenarios").glob("*.yaml"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", help="comma-separated names or paths (default: shipped intersection + unseen)")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--tune-seed", type=int, default=99)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    names = args.scenarios.split(",") if args.scenarios else default_scenarios()
    scenarios = [load_scenario(n) for n in names]
    tune = {sc.name: sc.sample_tasks(args.tasks, seed=args.tune_seed) for sc in scenarios}
    scores = {}
    for clear, margin in itertools.product(CLEAR_GRID_M, MARGIN_GRID_S):
        runs = [run_gap_acceptance(tasks, clear_distance_m=clear, margin_s=margin) for tasks in tune.values()]
        scores[clear, margin] = (max(r.collision_rate for r in runs), float(np.mean([r.return_mean for r in runs])))
    safe = {k: v for k, v in scores.items() if v[0] == 0.0}
    chosen = max(safe or scores, key=lambda k: (safe or scores)[k][1])
    print(f"grid on {args.tasks} tasks per scenario (seed {args.tune_seed}): mean return, worst collision rate")
    for (clear, margin), (worst, mean) in scores.items():
        mark = " <- chosen" if (clear, margin) == chosen else ""
        print(f"  clear {clear:4.0f} m  margin {margin:3.1f} s   {mean:6.3f}   {worst:6.1%}{mark}")
    same = chosen == (CLEAR_DISTANCE_M, MARGIN_S)
    print(f"chosen: clear {chosen[0]:g} m, margin {chosen[1]:g} s "
          f"({'the package constants' if same else 'NOT the package constants'} {CLEAR_DISTANCE_M:g} m / {MARGIN_S:g} s)")
    print(f"\nthe chosen rule on {args.tasks} fresh tasks per scenario (seed {args.seed}):")
    print(f"{'scenario':<28} {'rule':>6} {'coll.':>6} {'always go':>10} {'best fixed':>11} {'per-task best':>14} "
          f"{'gap closed':>11}")
    for sc in scenarios:
        tasks = sc.sample_tasks(args.tasks, seed=args.seed)
        refs = references_for_tasks(tasks)
        rule = run_gap_acceptance(tasks, clear_distance_m=chosen[0], margin_s=chosen[1])
        gap = refs.per_task_best_return - refs.best_fixed.return_mean
        closed = (rule.return_mean - refs.best_fixed.return_mean) / gap if gap > 0 else float("nan")
        print(f"{sc.name:<28} {rule.return_mean:6.2f} {rule.collision_rate:6.1%} {refs.always_go.return_mean:10.2f} "
              f"{refs.best_fixed.return_mean:11.2f} {refs.per_task_best_return:14.2f} {closed:11.0%}")


if __name__ == "__main__":
    main()
