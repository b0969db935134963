"""The scenario matrix of issue 9: every intersection scenario x {multitask, maml, directed_maml} x seeds, trained
with the run-config defaults (the README's default command, ``--algo`` and ``--seed`` varied) and evaluated as it
evaluates, against the scripted references.

    python benchmarks/scenario_matrix.py                         # all, 3 seeds, 2 jobs (~1 h on 2 cores)
    python benchmarks/scenario_matrix.py --scenarios cross_straight --seeds 1 --jobs 1
    python benchmarks/scenario_matrix.py --report-only           # re-read the runs, rewrite the report
    python benchmarks/scenario_matrix.py --plot-only             # redraw matrix.png from the report's results.csv

Scenarios: every shipped intersection scenario plus the scenarios under ``benchmarks/unseen_scenarios/`` (written
with the shared defaults and never tuned on). Run directories go under ``--out`` (default ``runs/matrix``, one
``SCENARIO/runs/ALGO__sSEED`` each, resumable: rerunning skips finished runs); the report (``README.md``: the
table, the command, the bar), ``results.csv`` (one row per run) and ``matrix.png`` go to ``--report-dir``
(default ``docs/results/scenario_matrix``).
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from intersection_meta.bench.matrix import (
    BAR_MAX_COLLISION_RATE,
    BAR_TOLERANCE,
    MATRIX_ALGOS,
    cells,
    collect,
    markdown_table,
    plot_matrix,
    read_results_csv,
    summary_counts,
    write_results_csv,
)
from intersection_meta.bench.runner import LocalExecutor, RunSpec, run_all, run_dir_name
from intersection_meta.config import RunConfig, make_config, scenario_defaults, split_overrides
from intersection_meta.registry import ALGORITHMS
from intersection_meta.scenario import available_scenarios, load_scenario

ROOT = Path(__file__).resolve().parent.parent
UNSEEN_DIR = ROOT / "benchmarks" / "unseen_scenarios"


def default_scenarios() -> list[str]:
    """Shipped intersection scenarios (by name), then the unseen ones (by path)."""
    shipped = [n for n in available_scenarios() if load_scenario(n).kind == "intersection"]
    unseen = [str(p.relative_to(ROOT)) for p in sorted(UNSEEN_DIR.glob("*.yaml"))]
    return shipped + unseen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", help="comma-separated names or paths (default: shipped intersection + unseen)")
    p.add_argument("--algos", default=",".join(MATRIX_ALGOS), help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default 2)")
    p.add_argument("--out", default="runs/matrix", help="run directories (default runs/matrix)")
    p.add_argument("--report-dir", default="docs/results/scenario_matrix")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config or scenario key for every run (default: none, the defaults are the point)")
    p.add_argument("--report-only", action="store_true", help="do not train; report on the runs present")
    p.add_argument("--plot-only", action="store_true",
                   help="do not train or read runs; redraw REPORT_DIR/matrix.png from REPORT_DIR/results.csv")
    args = p.parse_args(argv)

    scenario_args = args.scenarios.split(",") if args.scenarios else default_scenarios()
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGORITHMS]
    if bad:
        p.error(f"--algos: unknown {', '.join(bad)}; expected some of {', '.join(ALGORITHMS)}")
    run_sets, scenario_sets = split_overrides(args.set)
    base = make_config(run_sets, source="--set")  # what the report lists as changed
    loaded = {s: load_scenario(s, scenario_sets) for s in scenario_args}
    scenarios = {sc.name: arg for arg, sc in loaded.items()}  # name -> name or path
    # Each scenario's run_defaults, then --set, then the cell's own keys (as the train command layers them).
    bases = {sc.name: make_config(run_sets, source="--set", base=scenario_defaults(sc)) for sc in loaded.values()}
    seeds = list(range(args.seeds))
    out, report_dir = Path(args.out), Path(args.report_dir)

    if args.plot_only:
        results = [r for r in read_results_csv(report_dir / "results.csv") if r.scenario in scenarios]
        print(f"plot: {plot_matrix(report_dir / 'matrix.png', cells(results, list(scenarios), algos), algos)}",
              file=sys.stderr)
        return 0

    t0 = time.perf_counter()
    if not args.report_only:
        specs = [
            RunSpec(
                algo,
                seed,
                out / name / "runs" / run_dir_name(algo, seed),
                make_config({"train.scenario": arg, "meta.algo": algo, "train.seed": seed}, base=bases[name]).to_dict(),
                tuple(scenario_sets),
                label=name,
            )
            for seed in seeds
            for name, arg in scenarios.items()
            for algo in algos
        ]
        print(f"matrix: {len(specs)} runs ({len(scenarios)} scenarios x {len(algos)} algorithms x {len(seeds)} "
              f"seeds) with {args.jobs} jobs into {out}", file=sys.stderr, flush=True)
        outcomes = run_all(specs, LocalExecutor(args.jobs))
        failed = [o for o in outcomes if o.status == "failed"]
        print(f"matrix: {len(outcomes) - len(failed)}/{len(outcomes)} runs complete in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    else:
        failed = []

    results = collect(out, list(scenarios), algos, seeds)
    table = cells(results, list(scenarios), algos)
    write_results_csv(report_dir / "results.csv", results)
    plot_matrix(report_dir / "matrix.png", table, algos)
    (report_dir / "README.md").write_text(render(table, results, argv, base, scenario_sets, args.jobs))
    print(markdown_table(table))
    print(f"report: {report_dir / 'README.md'}", file=sys.stderr)
    return 1 if failed else 0


def render(table, results, argv, base: RunConfig, scenario_sets, jobs: int) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout.strip()
        sha += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    counts = summary_counts(table)
    defaults = RunConfig().flat()
    changed = " ".join(f"--set {k}={v}" for k, v in base.flat().items() if v != defaults[k])
    lines = [
        "# Scenario matrix (issue 9)",
        "",
        f"- command: `python benchmarks/scenario_matrix.py {shlex.join(argv)}`",
        f"- git commit: `{sha}`; date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {platform.system()} {platform.machine()}, Python {platform.python_version()}; {jobs} runs in "
        "parallel (wall times include that load)",
        "- every run is the README's default command with `--algo ALGO --seed SEED` (run config: the defaults with "
        "the scenario's `run_defaults` (scenarios/_base_intersection.yaml; yield_or_not and assertive_driver add a "
        "latent policy with the rule-or-go warm start)"
        + (f", plus `{changed}`" if changed else "")
        + (f"; scenario overrides {dict(scenario_sets)}" if scenario_sets else "")
        + f"): {base.train.iterations} iterations x {base.train.meta_batch_size} tasks x "
        f"{base.train.episodes_per_task} episodes, then the final evaluation on {base.train.eval_tasks} held-out "
        f"tasks x {base.train.episodes_per_task} episodes, one adaptation step",
        "",
        "![matrix](matrix.png)",
        "",
        "Returns are means over the held-out tasks; where a 95% interval is given it is a Student-t interval **over "
        "seeds** (3 seeds: wide). References (always go, best fixed open-loop plan, per-task best plan) are the "
        "scripted plans on each seed's held-out tasks, averaged over seeds. *Sampled*: the policy samples its "
        "actions, as trained and adapted; *greedy*: the adapted policy takes its most likely action. "
        f"*Bar* (issue 9): return >= the best fixed plan's (tolerance {BAR_TOLERANCE}) with <= "
        f"{100 * BAR_MAX_COLLISION_RATE:.0f}% collisions, counted per seed. *Gap closed*: the share of the gap from "
        "the best fixed plan to the per-task best plan that the sampled / greedy return closes (stretch goal: 50%). "
        "*Collisions before*: the pre-adaptation episodes' collision rate, the exploration cost that the adaptation "
        "step's own episodes pay. "
        "*Gap-acceptance rule*: the closed-loop rule of `intersection_meta/gap_acceptance.py` on the same tasks "
        "(the policy's warm start imitates it). "
        "Scenarios after the shipped ones come from `benchmarks/unseen_scenarios/` (never tuned on).",
        "",
        markdown_table(table),
        "Cells whose seed mean meets the bar: "
        + "; ".join(f"{a}: {c['bar_sampled']}/{c['cells']} sampled, {c['bar_greedy']}/{c['cells']} greedy"
                    for a, c in counts.items())
        + ". Cells that also close half the gap (stretch, sampled): "
        + "; ".join(f"{a}: {c['stretch_sampled']}/{c['cells']}" for a, c in counts.items())
        + ".",
        "",
        "Per-run numbers: `results.csv`. Run directories (checkpoints, `evaluation.json`, `metrics.csv`) are under "
        "the `--out` folder of the command (not committed).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
