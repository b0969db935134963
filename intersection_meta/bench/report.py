"""Benchmark report: target hits, per-algorithm summaries over seeds, results.csv and the Markdown report.

Pure functions of the runs' ``metrics.csv`` rows; intervals come from :mod:`intersection_meta.stats`
(:class:`~intersection_meta.stats.Interval`, ``mean ± half_width`` in the tables).
"""

from __future__ import annotations

import csv
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from intersection_meta.registry import ALGORITHMS, DIRECTED_PAIRS
from intersection_meta.stats import Interval, mean_ci

#: Columns of ``results.csv`` (``success_rate_post`` only for intersection suites).
RESULT_COLUMNS: tuple[str, ...] = (
    "algo",
    "seed",
    "iteration",
    "wall_time_s",
    "env_steps",
    "return_pre",
    "return_post",
    "success_rate_post",
    "peak_rss_mb",
    "time_iteration_s",
)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average; entry ``i`` averages ``values[i-window+1 .. i]`` (NaN until a full window)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = []
    for i in range(len(values)):
        out.append(float("nan") if i + 1 < window else sum(values[i + 1 - window : i + 1]) / window)
    return out


@dataclass(frozen=True)
class TargetHit:
    """Where a run first reached the target (``None`` fields never occur: a miss is ``None`` overall)."""

    iteration: int
    wall_time_s: float
    env_steps: float


def time_to_target(rows: Sequence[dict[str, float]], target: float, window: int = 3) -> TargetHit | None:
    """First iteration whose ``window``-iteration trailing mean of ``return_post`` is ``>= target``.

    Args:
        rows: one run's metrics rows in iteration order (``iteration``, ``wall_time_s``, ``env_steps``,
            ``return_post``).
        target: the post-adaptation return that counts as solved.
        window: smoothing window in iterations (the hit is reported at the window's last iteration).

    Returns:
        The iteration, cumulative wall time and env steps at that iteration, or ``None`` if never reached.
    """
    smoothed = moving_average([float(r["return_post"]) for r in rows], window)
    for row, value in zip(rows, smoothed, strict=True):
        if not math.isnan(value) and value >= target:
            return TargetHit(int(row["iteration"]), float(row["wall_time_s"]), float(row["env_steps"]))
    return None


def final_return(rows: Sequence[dict[str, float]], last: int = 3, key: str = "return_post") -> float:
    """Mean ``key`` (default ``return_post``) over the last ``last`` iterations of a run (NaN if empty)."""
    tail = [float(r.get(key, float("nan"))) for r in rows[-last:]]
    return sum(tail) / len(tail) if tail else float("nan")


def band_over_seeds(curves: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[int]]:
    """Pointwise mean, 95% CI half-width and seed count over curves of possibly different lengths."""
    length = max((len(c) for c in curves), default=0)
    means, halves, counts = [], [], []
    for i in range(length):
        column = [c[i] for c in curves if i < len(c)]
        ci = mean_ci(column)
        means.append(ci.estimate)
        halves.append(ci.half_width)
        counts.append(len(column))
    return means, halves, counts


def interpolate(
    xs: Sequence[float], ys: Sequence[float], grid: Sequence[float], *, hold_last: bool = False
) -> list[float]:
    """Piecewise-linear ``ys(xs)`` at ``grid`` points (``xs`` increasing).

    NaN before ``xs[0]``; after ``xs[-1]`` NaN, or ``ys[-1]`` with ``hold_last`` (a finished run keeps its
    final policy, so averaging over seeds does not jump when the fastest seeds end).
    """
    out, j = [], 0
    for g in grid:
        if xs and hold_last and g > xs[-1]:
            out.append(float(ys[-1]))
            continue
        if not xs or g < xs[0] or g > xs[-1]:
            out.append(float("nan"))
            continue
        while j + 1 < len(xs) and xs[j + 1] < g:
            j += 1
        if j + 1 >= len(xs) or xs[j] == g:
            out.append(float(ys[j]))
            continue
        x0, x1 = xs[j], xs[j + 1]
        w = 0.0 if x1 == x0 else (g - x0) / (x1 - x0)
        out.append(float(ys[j]) + w * (float(ys[j + 1]) - float(ys[j])))
    return out


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is NaN or the denominator is zero."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return float("nan")
    return numerator / denominator


def paired_difference(
    directed: dict[int, TargetHit | None], base: dict[int, TargetHit | None], key: str = "iteration"
) -> tuple[Interval, int, int, int, int]:
    """Per-seed ``directed - base`` of a target hit field, over the seeds where both reached the target.

    Runs with the same seed share the policy initialisation and the task sequence, so the paired difference
    removes most between-seed variance.

    Returns:
        ``(interval, n, fewer, same, more)``: the mean difference with its 95% CI, the number of
        paired seeds, and on how many of them the directed variant needed fewer / the same / more.
    """
    diffs = [
        float(getattr(directed[s], key)) - float(getattr(base[s], key))
        for s in sorted(set(directed) & set(base))
        if directed[s] is not None and base[s] is not None
    ]
    return (
        mean_ci(diffs),
        len(diffs),
        sum(d < 0 for d in diffs),
        sum(d == 0 for d in diffs),
        sum(d > 0 for d in diffs),
    )


@dataclass
class AlgoSummary:
    """Per-algorithm figures over seeds (each the mean with its 95% t interval)."""

    algo: str
    seeds: int
    reached: int
    iters_to_target: Interval
    time_to_target_s: Interval
    steps_to_target: Interval
    final_return: Interval
    final_success: Interval
    time_per_iteration_s: Interval
    ms_per_1k_steps: Interval
    peak_rss_mb: Interval
    iterations: list[int] = field(default_factory=list)


def summarize(algo: str, runs: Sequence[list[dict[str, float]]], target: float | None, window: int = 3) -> AlgoSummary:
    hits = [time_to_target(rows, target, window) for rows in runs] if target is not None else []
    got = [h for h in hits if h is not None]
    return AlgoSummary(
        algo=algo,
        seeds=len(runs),
        reached=len(got),
        iters_to_target=mean_ci([h.iteration for h in got]),
        time_to_target_s=mean_ci([h.wall_time_s for h in got]),
        steps_to_target=mean_ci([h.env_steps for h in got]),
        final_return=mean_ci([final_return(rows) for rows in runs]),
        final_success=mean_ci([final_return(rows, key="success_rate_post") for rows in runs]),
        time_per_iteration_s=mean_ci([sum(r["time_iteration_s"] for r in rows) / len(rows) for rows in runs]),
        ms_per_1k_steps=mean_ci([1e6 * rows[-1]["wall_time_s"] / max(rows[-1]["env_steps"], 1) for rows in runs]),
        peak_rss_mb=mean_ci([max(r["peak_rss_mb"] for r in rows) for rows in runs]),
        iterations=[int(rows[-1]["iteration"]) for rows in runs],
    )


def _fmt(value: Interval, digits: int = 1) -> str:
    mean, half = value.estimate, value.half_width
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def _fmt_num(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def write_results_csv(path: Path, runs: dict[tuple[str, int], list[dict[str, float]]], with_success: bool) -> None:
    columns = [c for c in RESULT_COLUMNS if with_success or c != "success_rate_post"]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for (algo, seed), rows in sorted(runs.items(), key=lambda kv: (list(ALGORITHMS).index(kv[0][0]), kv[0][1])):
            for r in rows:
                out: list[Any] = [algo, seed]
                for c in columns[2:]:
                    v = r[c]
                    out.append(int(v) if c in ("iteration", "env_steps") else ("" if math.isnan(v) else f"{v:.5g}"))
                writer.writerow(out)


def _machine_info() -> str:
    cores = os.cpu_count()
    return f"{platform.system()} {platform.machine()}, {cores} cores, Python {platform.python_version()}"


def render_report(
    *,
    suite: str,
    command: str,
    commit: str,
    target: float | None,
    window: int,
    summaries: list[AlgoSummary],
    settings: dict[str, Any],
    scenario_sets: Sequence[tuple[str, Any]],
    plots: Sequence[Path],
    report_dir: Path,
    missing: Sequence[str],
    jobs: int = 1,
    hits: dict[str, dict[int, TargetHit | None]] | None = None,
) -> str:
    """The Markdown report text."""
    lines = [
        f"# Benchmark: {suite}",
        "",
        f"- command: `{command}`",
        f"- git commit: `{commit}`",
        f"- machine: {_machine_info()}; {jobs} runs in parallel (wall times include that load and anything "
        "else running on the machine)",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- target post-adaptation return: {'none' if target is None else f'{target:g}'} "
        f"(reached = first iteration whose {window}-iteration trailing mean of `return_post` >= target)",
        "",
    ]
    if missing:
        lines += [f"**Incomplete:** runs missing or unfinished: {', '.join(missing)}.", ""]
    lines += ["## Learning curves", ""]
    for p in plots:
        lines += [f"![{p.stem}]({p.relative_to(report_dir).as_posix()})", ""]
    lines += [
        "Solid lines: directed variants; dashed: their base algorithms. Bands: 95% t confidence interval of "
        "the mean over seeds; the wall-time plot interpolates each seed's curve onto a common time grid "
        "(a finished run keeps its final return up to the slowest run's end).",
        "",
    ]
    lines += [
        "## Summary",
        "",
        "Mean ± 95% CI half-width over seeds. Iterations/time/env steps to target are over the seeds that "
        "reached it. Final return: mean `return_post` of the last 3 iterations. Time per iteration includes "
        "sampling, so it grows with episode length (better CartPole policies run longer episodes); "
        "ms per 1k env steps normalises that.",
        "",
        "| algorithm | seeds | reached | iterations to target | time to target [s] | env steps to target "
        "| final return | time / iteration [s] | ms / 1k env steps | peak RSS [MB] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with_success = any(not math.isnan(s.final_success[0]) for s in summaries)
    if with_success:
        lines[-2] += " final success rate |"
        lines[-1] += "---|"
    for s in summaries:
        lines.append(
            f"| {s.algo} | {s.seeds} | {s.reached}/{s.seeds} | {_fmt(s.iters_to_target)} | "
            f"{_fmt(s.time_to_target_s)} | {_fmt(s.steps_to_target, 0)} | {_fmt(s.final_return)} | "
            f"{_fmt(s.time_per_iteration_s, 2)} | {_fmt(s.ms_per_1k_steps, 2)} | {_fmt(s.peak_rss_mb, 0)} |"
            + (f" {_fmt(s.final_success, 2)} |" if with_success else "")
        )
    by_algo = {s.algo: s for s in summaries}
    pairs = [(d, b) for d, b in DIRECTED_PAIRS if d in by_algo and b in by_algo]
    if pairs:
        lines += [
            "",
            "## Directed variant / base algorithm",
            "",
            "Ratios of the means above (< 1: the directed variant needs less). `*`: not every seed of both "
            "reached the target, so the ratio is over the seeds that did.",
            "",
            "| pair | iterations to target | time to target | env steps to target | time / iteration | final return |",
            "|---|---|---|---|---|---|",
        ]
        for d, b in pairs:
            sd, sb = by_algo[d], by_algo[b]
            star = "" if (sd.reached == sd.seeds and sb.reached == sb.seeds) else "*"
            cells = [
                ratio(sd.iters_to_target[0], sb.iters_to_target[0]),
                ratio(sd.time_to_target_s[0], sb.time_to_target_s[0]),
                ratio(sd.steps_to_target[0], sb.steps_to_target[0]),
            ]
            lines.append(
                f"| {d} / {b} | "
                + " | ".join(_fmt_num(c) + (star if not math.isnan(c) else "") for c in cells)
                + f" | {_fmt_num(ratio(sd.time_per_iteration_s[0], sb.time_per_iteration_s[0]))} | "
                f"{_fmt_num(ratio(sd.final_return[0], sb.final_return[0]))} |"
            )
    if pairs and hits:
        lines += [
            "",
            "Paired by seed (same initial policy and task sequence): mean difference directed - base with "
            "95% CI, over seeds where both reached the target; fewer/same/more = seeds on which the directed "
            "variant needed fewer/the same/more.",
            "",
            "| pair | Δ iterations to target | fewer/same/more | Δ env steps to target | fewer/same/more |",
            "|---|---|---|---|---|",
        ]
        for d, b in pairs:
            cells = []
            for key, digits in (("iteration", 1), ("env_steps", 0)):
                ci, n, fewer, same, more = paired_difference(hits.get(d, {}), hits.get(b, {}), key)
                cells += [f"{_fmt(ci, digits)} (n={n})", f"{fewer}/{same}/{more}"]
            lines.append(f"| {d} - {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Settings",
        "",
        "Identical for every algorithm (per-run `config.yaml` in each run directory holds the resolved "
        "run config and scenario).",
        "",
        "```yaml",
        yaml.safe_dump(settings, sort_keys=False).rstrip(),
    ]
    if scenario_sets:
        lines += [yaml.safe_dump({"scenario_overrides": dict(scenario_sets)}, sort_keys=False).rstrip()]
    lines += ["```", ""]
    return "\n".join(lines)


def make_report(
    out: Path,
    report_dir: Path,
    *,
    suite: str,
    algos: Sequence[str],
    seeds: Sequence[int],
    iterations: int,
    target: float | None,
    with_success: bool,
    command: str,
    settings: dict[str, Any],
    scenario_sets: Sequence[tuple[str, Any]],
    window: int = 3,
    jobs: int = 1,
) -> Path:
    """Collect runs under ``out``; write ``results.csv``, plots and ``report.md`` into ``report_dir``."""
    from intersection_meta.checkpoint import git_sha

    report_dir.mkdir(parents=True, exist_ok=True)
    from intersection_meta.bench.plots import plot_curves
    from intersection_meta.bench.runner import load_runs, run_dir_name

    runs = load_runs(out, algos, seeds, iterations)
    write_results_csv(report_dir / "results.csv", runs, with_success)
    plots = plot_curves(report_dir, runs, algos, target, suite, window)
    summaries = [
        summarize(a, [runs[(a, s)] for s in seeds if (a, s) in runs], target, window)
        for a in algos
        if any((a, s) in runs for s in seeds)
    ]
    missing = [
        run_dir_name(a, s)
        for a in algos
        for s in seeds
        if (a, s) not in runs or int(runs[(a, s)][-1]["iteration"]) < iterations
    ]
    text = render_report(
        suite=suite,
        command=command,
        commit=git_sha(),
        target=target,
        window=window,
        summaries=summaries,
        settings=settings,
        scenario_sets=scenario_sets,
        plots=plots,
        report_dir=report_dir,
        missing=missing,
        jobs=jobs,
        hits={a: {s: time_to_target(runs[(a, s)], target, window) for s in seeds if (a, s) in runs} for a in algos}
        if target is not None
        else None,
    )
    path = report_dir / "report.md"
    path.write_text(text + "\n")
    return path
