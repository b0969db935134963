"""Benchmark harness: meta-train every (algorithm, seed) of a suite in parallel and report the comparison.

Reproduces the Directed-MAML paper's comparison (iterations and compute to reach a target post-adaptation
return, MAML vs Directed-MAML, and the directed step added to FOMAML and Meta-SGD)::

    python -m intersection_meta.bench --suite cartpole_physics --algos maml,directed_maml --seeds 5 \\
        --iterations 60 --set meta_batch_size=10

Layout of ``--out`` (default ``runs/bench/SUITE``): ``runs/ALGO__sSEED/`` (one ``train()`` run directory
each), ``bench.yaml`` (the command and the resolved per-run config), and, in ``--report-dir`` (default
``--out``), ``results.csv``, ``report.md`` and the PNG learning curves. Rerunning the same command skips
completed runs and resumes partial ones.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from intersection_meta.bench.report import make_report
from intersection_meta.bench.runner import BenchError, LocalExecutor, RunSpec, run_all, run_dir_name
from intersection_meta.cli.errors import run_reporting_errors
from intersection_meta.cli.options import add_ray_argument, add_set_argument, bounded_int
from intersection_meta.config import make_config, scenario_defaults, split_overrides
from intersection_meta.registry import ALGORITHMS
from intersection_meta.schema import LoadError, read_yaml_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m intersection_meta.bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--suite",
        required=True,
        help="scenario name (cartpole_physics, lunarlander_gravity_wind, yield_left, ...) or path to a scenario file",
    )
    p.add_argument(
        "--algos", default=",".join(ALGORITHMS), help=f"comma-separated, from {', '.join(ALGORITHMS)} (default: all)"
    )
    p.add_argument("--seeds", type=bounded_int(1, 1000), default=5, help="number of seeds, run as seeds 0..N-1 (default 5)")
    p.add_argument("--iterations", type=bounded_int(1, 10**7), required=True, help="meta-iterations per run")
    p.add_argument("--out", help="benchmark directory (default runs/bench/SUITE)")
    p.add_argument("--report-dir", help="where results.csv, report.md and plots go (default: --out)")
    p.add_argument(
        "--jobs", type=bounded_int(1, 256), default=min(os.cpu_count() or 1, 256),
        help="parallel runs (default: cores; not with --ray)",
    )
    add_ray_argument(p, "run every (algorithm, seed) as a Ray task asking for 1 CPU, retried if its worker dies")
    add_set_argument(p, "run-config (train.meta_batch_size=10) or scenario (other.speed_mps=[6,9]) key, every run")
    p.add_argument(
        "--target-return",
        type=float,
        help="post-adaptation return that counts as solved (default: the scenario's target_return)",
    )
    p.add_argument("--report-only", action="store_true", help="do not train; report on the runs present")
    return p


def _parse_algos(text: str) -> list[str]:
    algos = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGORITHMS]
    if bad or not algos:
        raise BenchError(f"--algos: unknown {', '.join(bad) or '(empty)'}; expected some of {', '.join(ALGORITHMS)}")
    if len(set(algos)) != len(algos):
        raise BenchError(f"--algos: duplicate entries in {text!r}")
    return algos


def _executor(ray_address: str | None, jobs: int) -> LocalExecutor | Any:
    """Local worker processes, or Ray tasks on the instance or cluster ``--ray`` names."""
    if ray_address is None:
        return LocalExecutor(jobs)
    from intersection_meta.bench.runner import RayExecutor
    from intersection_meta.distributed import RayError, connect

    try:
        connect(ray_address)
        return RayExecutor()
    except RayError as exc:
        raise BenchError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: _bench(args, argv), lambda: "interrupted; rerun the same command to resume")


def _bench(args: argparse.Namespace, argv: list[str]) -> int:
    from intersection_meta.scenario import load_scenario

    algos = _parse_algos(args.algos)
    run_sets, scenario_sets = split_overrides(args.set)
    for key in ("meta.algo", "train.seed", "train.iterations", "train.scenario"):
        if key in run_sets:
            raise BenchError(f"--set {key}=...: use the --algos/--seeds/--iterations/--suite options instead")
    scenario = load_scenario(args.suite, scenario_sets)
    base = make_config(
        {**run_sets, "train.scenario": args.suite, "train.iterations": args.iterations},
        source="--set",
        base=scenario_defaults(scenario),
    )
    target = args.target_return if args.target_return is not None else scenario.target_return
    out = Path(args.out) if args.out else Path("runs") / "bench" / scenario.name
    report_dir = Path(args.report_dir) if args.report_dir else out
    seeds = list(range(args.seeds))
    command = "python -m intersection_meta.bench " + shlex.join(argv)
    settings = base.to_dict()  # identical for every run, except the algorithm and the seed
    del settings["meta"]["algo"], settings["train"]["seed"]
    jobs = args.jobs
    if not args.report_only:
        try:
            executor = _executor(args.ray, args.jobs)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        jobs = executor.parallel_runs
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "bench.yaml"
    if args.report_only and stored.exists():
        # report on the runs as trained: keep the training command and job count
        previous = read_yaml_file(stored, LoadError) or {}
        if not isinstance(previous, dict):
            raise BenchError(f"{stored}: expected a mapping (the benchmark's stored settings)")
        command, jobs = str(previous.get("command", command)), int(previous.get("jobs", jobs))
    else:
        stored.write_text(
            yaml.safe_dump(
                {
                    "command": command,
                    "jobs": jobs,
                    "suite": scenario.name,
                    "algos": algos,
                    "seeds": seeds,
                    "target_return": target,
                    "run_config": settings,
                    "scenario_overrides": dict(scenario_sets),
                    "scenario": scenario.to_dict(),
                },
                sort_keys=False,
            )
        )

    if not args.report_only:
        specs = [
            RunSpec(
                a,
                s,
                out / "runs" / run_dir_name(a, s),
                make_config({"meta.algo": a, "train.seed": s}, base=base).to_dict(),
                tuple(scenario_sets),
            )
            for s in seeds
            for a in algos
        ]
        where = f"on Ray ({jobs} CPUs)" if args.ray is not None else f"with {jobs} jobs"
        print(
            f"bench: {len(specs)} runs ({len(algos)} algorithms x {len(seeds)} seeds, {args.iterations} "
            f"iterations) of {scenario.name} {where} into {out}",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.perf_counter()
        outcomes = run_all(specs, executor)
        failed = [o for o in outcomes if o.status == "failed"]
        print(
            f"bench: {len(outcomes) - len(failed)}/{len(outcomes)} runs complete in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    else:
        failed = []
    path = make_report(
        out,
        report_dir,
        suite=scenario.name,
        algos=algos,
        seeds=seeds,
        iterations=args.iterations,
        target=target,
        with_success=scenario.kind == "intersection",
        command=command,
        settings=settings,
        scenario_sets=scenario_sets,
        jobs=jobs,
    )
    print(f"report: {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
