"""Evaluate a meta-trained checkpoint on held-out tasks: ``python -m intersection_meta.evaluate --checkpoint PATH``.

``[--scenario NAME] [--set KEY.PATH=VALUE ...] [--tasks N] [--adapt-steps K] [--episodes E] [--json]
[--report DIR]``; the report is :func:`intersection_meta.evaluate.format_report`. ``--report DIR`` also writes where
the policy fails, by sampled parameter (:mod:`intersection_meta.failure_report`: Markdown, PNGs, CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from intersection_meta.cli.errors import run_reporting_errors
from intersection_meta.cli.options import (
    MAX_COUNT,
    SEED,
    add_set_argument,
    add_threads_argument,
    bounded_int,
    set_torch_threads,
)
from intersection_meta.registry import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m intersection_meta.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt file or run directory")
    p.add_argument("--scenario", help="evaluate on this scenario (must match the checkpoint's, or use --set)")
    add_set_argument(p, "override scenario keys for evaluation, e.g. --set other.speed_mps=[6,9]")
    p.add_argument("--tasks", type=bounded_int(1, MAX_COUNT), default=40, help="number of held-out tasks (default 40)")
    p.add_argument(
        "--adapt-steps", type=bounded_int(0, 1000), default=None, help="adaptation steps (default: the run's inner_steps)"
    )
    p.add_argument(
        "--episodes",
        type=bounded_int(1, MAX_COUNT),
        default=None,
        help="episodes per task and step (default: the run's train.episodes_per_task)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="evaluation seed (default 0)")
    p.add_argument("--backend", default="auto", choices=list(BACKENDS), help="simulator (default auto)")
    add_threads_argument(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--report", metavar="DIR",
                   help="also write a failure report into DIR: report.md, overview.png, param_*.png, tasks.csv")
    p.add_argument("--report-bins", type=bounded_int(1, 1000), default=6, help="bins per numeric parameter in --report (default 6)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_torch_threads(args.threads)
    return run_reporting_errors(lambda: _evaluate(args))


def _evaluate(args: argparse.Namespace) -> int:
    from intersection_meta.checkpoint import CheckpointError, load_checkpoint
    from intersection_meta.evaluate import evaluate_checkpoint, format_report
    from intersection_meta.scenario import Scenario, apply_overrides, load_scenario

    ckpt = load_checkpoint(args.checkpoint, scenario=args.scenario if not args.set else None)
    scenario = None
    if args.set:
        if args.scenario:
            scenario = load_scenario(args.scenario, args.set)
        else:
            scenario = Scenario.from_dict(
                apply_overrides(ckpt.scenario.to_dict(), args.set, ckpt.path),
                source=f"{ckpt.path} (with --set {' '.join(args.set)})",
            )
        if scenario.kind != ckpt.scenario.kind:
            raise CheckpointError(
                f"{ckpt.path}: trained on a {ckpt.scenario.kind} scenario, cannot evaluate on {scenario.kind}"
            )
    adapt_steps = ckpt.config.meta.inner_steps if args.adapt_steps is None else args.adapt_steps
    report = evaluate_checkpoint(
        ckpt,
        n_tasks=args.tasks,
        adapt_steps=adapt_steps,
        episodes_per_task=args.episodes,
        seed=args.seed,
        backend=args.backend,
        scenario=scenario,
    )
    if args.report and report["per_task"] and "collision_rate" not in report["per_task"][0]:
        raise ValueError("--report needs an intersection scenario (success and collision outcomes per task)")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.report:
        from intersection_meta.failure_report import write_failure_report

        path = write_failure_report(report, scenario or ckpt.scenario, args.report, checkpoint=args.checkpoint,
                                    bins=args.report_bins)
        print(f"failure report: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
