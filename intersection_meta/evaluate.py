"""Evaluation of a meta-trained policy: adapt to held-out tasks and report returns, success and collisions.

``python -m intersection_meta.evaluate --checkpoint PATH [--scenario NAME] [--tasks N] [--adapt-steps K] [--json]``

Held-out tasks are sampled with a seed stream disjoint from training's. For every adaptation step ``k = 0..K``
(0 = before adaptation) the report gives the mean return with a 95% confidence interval over tasks (Student t),
and on intersection scenarios the success (arrival) and collision rates with 95% Wilson intervals over episodes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from intersection_meta.config import add_threads_argument, set_torch_threads

#: Offset that keeps evaluation task seeds disjoint from training's (which use iteration numbers).
HELD_OUT_SEED_KEY = 1_000_003


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval ``(mean, low, high)``; degenerate for n < 2."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if x.size < 2:
        return (m, m, m)
    half = t_quantile(0.5 + confidence / 2, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return (m, m - half, m + half)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t: exact for df 1 and 2, else the Cornish-Fisher expansion (Abramowitz & Stegun
    26.7.5; relative error below 0.1% for df >= 3 at p = 0.975).

    >>> round(t_quantile(0.975, 10), 3)
    2.228
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    from statistics import NormalDist

    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """Rate and Wilson score interval ``(p, low, high)`` for ``successes`` out of ``n``."""
    if n == 0:
        return (math.nan, math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (p, max(0.0, centre - half), min(1.0, centre + half))


def evaluate_checkpoint(
    checkpoint: Any,
    *,
    n_tasks: int = 40,
    adapt_steps: int = 1,
    episodes_per_task: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    scenario: Any = None,
) -> dict[str, Any]:
    """Adapt the checkpoint's policy to ``n_tasks`` held-out tasks and summarise every adaptation step.

    Returns:
        ``{"scenario", "algo", "iteration", "tasks", "episodes_per_task", "backend", "steps": [{"adapt_step",
        "return_mean", "return_ci", "success_rate", "success_ci", "collision_rate", "collision_ci"}, ...]}``.
    """
    from intersection_meta.adaptation import adapt_and_rollout, resolve_backend
    from intersection_meta.seeding import derive_seed
    from intersection_meta.tasks import task_to_dict

    sc = scenario or checkpoint.scenario
    episodes = episodes_per_task or checkpoint.config.episodes_per_task
    backend = resolve_backend(backend, sc.medium_task())
    tasks = sc.sample_tasks(n_tasks, seed=derive_seed(seed, HELD_OUT_SEED_KEY))
    result = adapt_and_rollout(
        checkpoint.learner,
        tasks,
        adapt_steps=adapt_steps,
        episodes_per_task=episodes,
        seed=derive_seed(seed, HELD_OUT_SEED_KEY, 1),
        backend=backend,
    )
    steps = []
    for k, per_task in enumerate(result.episodes):
        task_returns = [float(e.returns.mean()) for e in per_task]
        m, lo, hi = mean_ci(task_returns)
        row: dict[str, Any] = {"adapt_step": k, "return_mean": m, "return_ci": [lo, hi]}
        if per_task[0].arrived is not None:
            n = sum(e.n_episodes for e in per_task)
            for name, attr in (("success", "arrived"), ("collision", "crashed")):
                count = int(sum(int(getattr(e, attr).sum()) for e in per_task))
                p, plo, phi = wilson_interval(count, n)
                row[f"{name}_rate"], row[f"{name}_ci"] = p, [plo, phi]
        steps.append(row)
    per_task = []
    for task, final in zip(tasks, result.episodes[-1], strict=True):
        entry: dict[str, Any] = {
            "task_id": task.task_id,
            "task": task_to_dict(task),
            "return_mean": float(final.returns.mean()),
        }
        if final.arrived is not None:
            entry["success_rate"] = float(final.arrived.float().mean())
            entry["collision_rate"] = float(final.crashed.float().mean())
        per_task.append(entry)
    return {
        "scenario": sc.name,
        "algo": checkpoint.algo,
        "iteration": checkpoint.iteration,
        "tasks": n_tasks,
        "episodes_per_task": episodes,
        "backend": backend,
        "task_ids": [t.task_id for t in tasks],
        "steps": steps,
        "per_task": per_task,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['algo']} on {report['scenario']} (iteration {report['iteration']}): {report['tasks']} held-out "
        f"tasks x {report['episodes_per_task']} episodes, backend {report['backend']}"
    ]
    header = f"{'step':>4}  {'return (95% CI)':>26}"
    has_rates = "success_rate" in report["steps"][0]
    if has_rates:
        header += f"  {'success (95% CI)':>24}  {'collision (95% CI)':>24}"
    lines.append(header)
    for s in report["steps"]:
        line = f"{s['adapt_step']:>4}  {s['return_mean']:>8.2f} [{s['return_ci'][0]:>7.2f}, {s['return_ci'][1]:>7.2f}]"
        if has_rates:
            for name in ("success", "collision"):
                lo, hi = s[f"{name}_ci"]
                line += f"  {s[f'{name}_rate']:>7.1%} [{lo:>6.1%}, {hi:>6.1%}]"
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m intersection_meta.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt file or run directory")
    p.add_argument("--scenario", help="evaluate on this scenario (must match the checkpoint's, or use --set)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override scenario keys for evaluation, e.g. --set other.speed_mps=[6,9]",
    )
    p.add_argument("--tasks", type=int, default=40, help="number of held-out tasks (default 40)")
    p.add_argument("--adapt-steps", type=int, default=None, help="adaptation steps (default: the run's inner_steps)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per task and step (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--backend", default="auto", choices=("auto", "fast", "highway"), help="simulator")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_torch_threads(args.threads)
    from intersection_meta.checkpoint import CheckpointError, load_checkpoint
    from intersection_meta.scenario import ScenarioError, load_scenario

    try:
        if args.tasks < 1:
            raise ValueError(f"--tasks must be >= 1, got {args.tasks}")
        ckpt = load_checkpoint(args.checkpoint, scenario=args.scenario if not args.set else None)
        scenario = None
        if args.set:
            if args.scenario:
                scenario = load_scenario(args.scenario, args.set)
            else:
                from intersection_meta.scenario import Scenario, apply_overrides

                scenario = Scenario.from_dict(
                    apply_overrides(ckpt.scenario.to_dict(), args.set, ckpt.path),
                    source=f"{ckpt.path} (with --set {' '.join(args.set)})",
                )
            if scenario.kind != ckpt.scenario.kind:
                raise CheckpointError(
                    f"{ckpt.path}: trained on a {ckpt.scenario.kind} scenario, cannot evaluate on {scenario.kind}"
                )
        adapt_steps = ckpt.config.inner_steps if args.adapt_steps is None else args.adapt_steps
        if adapt_steps < 0:
            raise ValueError(f"--adapt-steps must be >= 0, got {adapt_steps}")
        report = evaluate_checkpoint(
            ckpt,
            n_tasks=args.tasks,
            adapt_steps=adapt_steps,
            episodes_per_task=args.episodes,
            seed=args.seed,
            backend=args.backend,
            scenario=scenario,
        )
    except (CheckpointError, ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
