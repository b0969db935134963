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
import csv
import math
import multiprocessing
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from intersection_meta.config import ALGORITHMS, ConfigError, RunConfig, make_config

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
#: Each directed variant and the base algorithm it is compared against.
DIRECTED_PAIRS: tuple[tuple[str, str], ...] = (
    ("directed_maml", "maml"),
    ("directed_fomaml", "fomaml"),
    ("directed_meta_sgd", "meta_sgd"),
)
#: Two-sided 95% Student-t critical values t_{0.975, df} for df = 1..30.
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


class BenchError(ValueError):
    """The benchmark cannot run as requested (bad arguments, a run directory from a different config)."""


# ----------------------------------------------------------------------------------------------------
# Statistics helpers (pure)
# ----------------------------------------------------------------------------------------------------
def t_critical_95(df: int) -> float:
    """Two-sided 95% Student-t critical value for ``df`` degrees of freedom (1.96 as df -> infinity).

    Exact table values for df <= 30; beyond, the Cornish-Fisher expansion in ``1 / df`` (error < 0.001).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4.0 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96.0 * df**2)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t confidence interval (NaN half-width for fewer than 2 finite values).

    NaN values are ignored; an empty (or all-NaN) input gives ``(nan, nan)``.
    """
    xs = [float(v) for v in values if not math.isnan(float(v))]
    if not xs:
        return float("nan"), float("nan")
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, t_critical_95(len(xs) - 1) * math.sqrt(var / len(xs))


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
        m, h = mean_ci(column)
        means.append(m)
        halves.append(h)
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
) -> tuple[float, float, int, int, int, int]:
    """Per-seed ``directed - base`` of a target hit field, over the seeds where both reached the target.

    Runs with the same seed share the policy initialisation and the task sequence, so the paired difference
    removes most between-seed variance.

    Returns:
        ``(mean, ci_half_width, n, fewer, same, more)``: the mean difference with its 95% CI, the number of
        paired seeds, and on how many of them the directed variant needed fewer / the same / more.
    """
    diffs = [
        float(getattr(directed[s], key)) - float(getattr(base[s], key))
        for s in sorted(set(directed) & set(base))
        if directed[s] is not None and base[s] is not None
    ]
    mean, half = mean_ci(diffs)
    return (
        mean,
        half,
        len(diffs),
        sum(d < 0 for d in diffs),
        sum(d == 0 for d in diffs),
        sum(d > 0 for d in diffs),
    )


# ----------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One (algorithm, seed) run of the benchmark, as sent to a worker process."""

    algo: str
    seed: int
    out_dir: Path
    config: dict[str, Any]
    scenario_sets: tuple[str, ...]


@dataclass(frozen=True)
class RunOutcome:
    algo: str
    seed: int
    status: str  # "done" | "resumed" | "skipped" | "failed"
    iterations: int = 0
    wall_time_s: float = float("nan")
    final_return_post: float = float("nan")
    error: str = ""
    elapsed_s: float = 0.0


def run_dir_name(algo: str, seed: int) -> str:
    return f"{algo}__s{seed}"


def config_differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """Run-config keys (except ``iterations``) whose stored value differs from the requested one.

    A key missing from ``stored`` (a run saved before the key existed) counts as its current default, and
    stored keys the config no longer has are ignored, so adding a field with the old behaviour as default
    does not invalidate finished runs.
    """
    defaults = RunConfig().to_dict()

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return sorted(
        k for k, v in requested.items() if k != "iterations" and norm(stored.get(k, defaults.get(k))) != norm(v)
    )


def run_one(spec: RunSpec) -> RunOutcome:
    """Train (or resume, or skip) one run; executed in a worker process. Never raises for run errors."""
    import torch

    torch.set_num_threads(1)
    from intersection_meta.checkpoint import CheckpointError, load_raw
    from intersection_meta.scenario import ScenarioError, load_scenario
    from intersection_meta.trainer import TrainError, read_metrics, train

    t0 = time.perf_counter()
    config = make_config(spec.config, source="bench")
    last = spec.out_dir / "checkpoints" / "last.pt"
    try:
        scenario = load_scenario(config.scenario, list(spec.scenario_sets))
        if last.exists():
            raw = load_raw(last)
            if raw["scenario"] != scenario.to_dict():
                raise BenchError(
                    f"{spec.out_dir} holds a run of a different scenario (other --set overrides?); "
                    "use another --out or delete it"
                )
            diff = config_differences(raw["config"], config.to_dict())
            if diff:
                raise BenchError(
                    f"{spec.out_dir} holds a run with a different config (keys {', '.join(diff)}); "
                    "use another --out or delete it"
                )
            if int(raw["iteration"]) >= config.iterations:
                status = "skipped"
            else:
                # stop_after: a run stored with more iterations must still stop at this benchmark's count
                todo = config.iterations - int(raw["iteration"])
                train(config, spec.out_dir, resume=True, progress=False, tensorboard=False, stop_after=todo)
                status = "resumed"
        else:
            train(config, spec.out_dir, progress=False, tensorboard=False, scenario=scenario)
            status = "done"
        rows = read_metrics(spec.out_dir / "metrics.csv")
    except (
        BenchError,
        ConfigError,
        ScenarioError,
        TrainError,
        CheckpointError,
        OSError,
        RuntimeError,
    ) as exc:
        return RunOutcome(
            spec.algo,
            spec.seed,
            "failed",
            error=f"{type(exc).__name__}: {exc}",
            elapsed_s=time.perf_counter() - t0,
        )
    return RunOutcome(
        spec.algo,
        spec.seed,
        status,
        iterations=int(rows[-1]["iteration"]) if rows else 0,
        wall_time_s=rows[-1]["wall_time_s"] if rows else float("nan"),
        final_return_post=final_return(rows),
        elapsed_s=time.perf_counter() - t0,
    )


def run_all(specs: Sequence[RunSpec], jobs: int, log: Any = None) -> list[RunOutcome]:
    """Run ``specs`` in ``jobs`` fresh worker processes (one process per run, so peak memory is per run).

    Prints one line per finished run with a running count to ``log`` (default: ``sys.stderr``).
    """
    log = sys.stderr if log is None else log
    outcomes: list[RunOutcome] = []
    total = len(specs)
    # forkserver: each run forks from a server that has already imported torch (saves ~5 s per run over spawn)
    # and starts from a clean single-threaded process (plain fork after torch use is unsafe).
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["intersection_meta.trainer"])
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_one, spec): spec for spec in specs}
        for future in as_completed(futures):
            spec = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # a worker crash (e.g. killed) must not lose the other runs
                outcome = RunOutcome(spec.algo, spec.seed, "failed", error=f"{type(exc).__name__}: {exc}")
            outcomes.append(outcome)
            if outcome.status == "failed":
                detail = outcome.error
            else:
                detail = (
                    f"{outcome.iterations} it, train time {outcome.wall_time_s:.0f} s, "
                    f"final return_post {outcome.final_return_post:.1f}"
                )
            print(
                f"[{len(outcomes)}/{total}] {outcome.algo} seed {outcome.seed}: {outcome.status} "
                f"({detail}; {outcome.elapsed_s:.0f} s here)",
                file=log,
                flush=True,
            )
    return outcomes


# ----------------------------------------------------------------------------------------------------
# Collecting and reporting
# ----------------------------------------------------------------------------------------------------
@dataclass
class AlgoSummary:
    """Per-algorithm figures over seeds (each ``(mean, ci_half_width)``)."""

    algo: str
    seeds: int
    reached: int
    iters_to_target: tuple[float, float]
    time_to_target_s: tuple[float, float]
    steps_to_target: tuple[float, float]
    final_return: tuple[float, float]
    final_success: tuple[float, float]
    time_per_iteration_s: tuple[float, float]
    ms_per_1k_steps: tuple[float, float]
    peak_rss_mb: tuple[float, float]
    iterations: list[int] = field(default_factory=list)


def load_runs(
    out: Path, algos: Sequence[str], seeds: Sequence[int], iterations: int | None = None
) -> dict[tuple[str, int], list[dict[str, float]]]:
    """Metrics rows of every run present under ``out/runs`` (partial runs included; missing ones omitted).

    Rows after ``iterations`` (a run trained longer earlier) are dropped so every run is compared alike.
    """
    from intersection_meta.trainer import read_metrics

    runs = {}
    for algo in algos:
        for seed in seeds:
            path = out / "runs" / run_dir_name(algo, seed) / "metrics.csv"
            if path.exists():
                rows = [r for r in read_metrics(path) if iterations is None or r["iteration"] <= iterations]
                if rows:
                    runs[(algo, seed)] = rows
    return runs


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


def _fmt(value: tuple[float, float], digits: int = 1) -> str:
    mean, half = value
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
        for (algo, seed), rows in sorted(runs.items(), key=lambda kv: (ALGORITHMS.index(kv[0][0]), kv[0][1])):
            for r in rows:
                out: list[Any] = [algo, seed]
                for c in columns[2:]:
                    v = r[c]
                    out.append(int(v) if c in ("iteration", "env_steps") else ("" if math.isnan(v) else f"{v:.5g}"))
                writer.writerow(out)


_COLORS = {"maml": "tab:blue", "fomaml": "tab:orange", "meta_sgd": "tab:green"}


def _style(algo: str) -> dict[str, Any]:
    base = algo.removeprefix("directed_")
    return {"color": _COLORS.get(base, None), "linestyle": "-" if algo.startswith("directed_") else "--"}


def plot_curves(
    report_dir: Path,
    runs: dict[tuple[str, int], list[dict[str, float]]],
    algos: Sequence[str],
    target: float | None,
    title: str,
    smooth: int = 3,
) -> list[Path]:
    """Write ``return_vs_iteration.png`` and ``return_vs_wall_time.png`` (mean ± 95% CI band over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for axis in ("iteration", "wall_time"):
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
        for algo in algos:
            seed_rows = [rows for (a, _), rows in sorted(runs.items()) if a == algo]
            if not seed_rows:
                continue
            if axis == "iteration":
                curves = [[r["return_post"] for r in rows] for rows in seed_rows]
                means, halves, counts = band_over_seeds(curves)
                xs = list(range(1, len(means) + 1))
            else:
                end = max(rows[-1]["wall_time_s"] for rows in seed_rows)
                xs = [end * i / 200 for i in range(201)]
                curves = [
                    interpolate([r["wall_time_s"] for r in rows], [r["return_post"] for r in rows], xs, hold_last=True)
                    for rows in seed_rows
                ]
                means, halves, counts = [], [], []
                for i in range(len(xs)):
                    m, h = mean_ci([c[i] for c in curves])
                    means.append(m)
                    halves.append(h)
                    counts.append(sum(not math.isnan(c[i]) for c in curves))
            keep = [i for i, n in enumerate(counts) if n >= max(1, (len(seed_rows) + 1) // 2)]
            x = [xs[i] for i in keep]
            m = [means[i] for i in keep]
            h = [0.0 if math.isnan(halves[i]) else halves[i] for i in keep]
            ax.plot(x, m, label=f"{algo} (n={len(seed_rows)})", linewidth=1.6, **_style(algo))
            ax.fill_between(
                x,
                [a - b for a, b in zip(m, h, strict=True)],
                [a + b for a, b in zip(m, h, strict=True)],
                color=_style(algo)["color"],
                alpha=0.15,
                linewidth=0,
            )
        if target is not None:
            ax.axhline(target, color="black", linewidth=0.8, linestyle=":", label=f"target {target:g}")
        ax.set_xlabel("meta-iteration" if axis == "iteration" else "training wall time per run [s]")
        ax.set_ylabel("post-adaptation return")
        ax.set_title(f"{title}: mean and 95% CI over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = report_dir / f"return_vs_{axis}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


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
    scenario_sets: Sequence[str],
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
                mean, half, n, fewer, same, more = paired_difference(hits.get(d, {}), hits.get(b, {}), key)
                cells += [f"{_fmt((mean, half), digits)} (n={n})", f"{fewer}/{same}/{more}"]
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
        lines += [yaml.safe_dump({"scenario_overrides": list(scenario_sets)}, sort_keys=False).rstrip()]
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
    scenario_sets: Sequence[str],
    window: int = 3,
    jobs: int = 1,
) -> Path:
    """Collect runs under ``out``; write ``results.csv``, plots and ``report.md`` into ``report_dir``."""
    from intersection_meta.checkpoint import git_sha

    report_dir.mkdir(parents=True, exist_ok=True)
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


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m intersection_meta.bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--suite",
        required=True,
        help="scenario name (cartpole_physics, lunarlander_gravity_wind, yield_left, ...) or path to a scenario file",
    )
    p.add_argument("--algos", default=",".join(ALGORITHMS), help="comma-separated algorithms (default: all six)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds, run as seeds 0..N-1 (default 5)")
    p.add_argument("--iterations", type=int, required=True, help="meta-iterations per run")
    p.add_argument("--out", help="benchmark directory (default runs/bench/SUITE)")
    p.add_argument("--report-dir", help="where results.csv, report.md and plots go (default: --out)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel runs (default: cores)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run-config or dotted scenario override for every run (repeatable)",
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from intersection_meta.scenario import ScenarioError, load_scenario
    from intersection_meta.train import split_overrides

    try:
        algos = _parse_algos(args.algos)
        if args.seeds < 1 or args.iterations < 1 or args.jobs < 1:
            raise BenchError("--seeds, --iterations and --jobs must be >= 1")
        run_sets, scenario_sets = split_overrides(args.set)
        for key in ("algo", "seed", "iterations", "scenario"):
            if key in run_sets:
                raise BenchError(f"--set {key}=...: use the --algos/--seeds/--iterations/--suite options instead")
        scenario = load_scenario(args.suite, scenario_sets)
        base = make_config({**run_sets, "scenario": args.suite, "iterations": args.iterations}, source="--set")
    except (BenchError, ConfigError, ScenarioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.target_return if args.target_return is not None else scenario.target_return
    out = Path(args.out) if args.out else Path("runs") / "bench" / scenario.name
    report_dir = Path(args.report_dir) if args.report_dir else out
    seeds = list(range(args.seeds))
    command = "python -m intersection_meta.bench " + shlex.join(argv)
    settings = {k: v for k, v in base.to_dict().items() if k not in ("algo", "seed")}
    jobs = args.jobs
    out.mkdir(parents=True, exist_ok=True)
    stored = out / "bench.yaml"
    if args.report_only and stored.exists():
        # report on the runs as trained: keep the training command and job count
        previous = yaml.safe_load(stored.read_text()) or {}
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
                    "scenario_overrides": scenario_sets,
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
                make_config({"algo": a, "seed": s}, base=base).to_dict(),
                tuple(scenario_sets),
            )
            for s in seeds
            for a in algos
        ]
        print(
            f"bench: {len(specs)} runs ({len(algos)} algorithms x {len(seeds)} seeds, {args.iterations} "
            f"iterations) of {scenario.name} with {args.jobs} jobs into {out}",
            file=sys.stderr,
            flush=True,
        )
        t0 = time.perf_counter()
        try:
            outcomes = run_all(specs, args.jobs)
        except KeyboardInterrupt:
            print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
            return 130
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
