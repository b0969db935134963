"""The scenario matrix: every intersection scenario x learner x seed, trained with the run-config defaults and
read against the scripted references (issue 9's yardstick).

Each (scenario, algorithm, seed) is one :func:`intersection_meta.bench.runner.run_one` run directory
``OUT/SCENARIO/runs/ALGO__sSEED`` with its final held-out evaluation (``evaluation.json``, as
``python -m intersection_meta.train`` writes it). This module turns those files into one row per (scenario,
algorithm): the scripted references on the held-out tasks (always go, best fixed plan, per-task best plan), the
return before and after adaptation (sampled actions, as trained) and after adaptation acting greedily, the
adaptation gain with its 95% confidence interval **over seeds**, collision rates and wall time.

The command line is ``benchmarks/scenario_matrix.py``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from intersection_meta.bench.runner import run_dir_name
from intersection_meta.stats import Interval, mean_ci

#: The learners of the matrix: the non-meta baseline, MAML and Directed-MAML.
MATRIX_ALGOS = ("multitask", "maml", "directed_maml")

#: A cell meets issue 9's bar when its return is at least the best fixed plan's (this tolerance: the references
#: and the policy are measured on the same tasks, but the policy's return is a 20-episode mean) with at most this
#: collision rate.
BAR_TOLERANCE = 0.005
BAR_MAX_COLLISION_RATE = 0.02


@dataclass(frozen=True)
class RunResult:
    """What one run's ``evaluation.json`` and ``metrics.csv`` say (returns are means over held-out tasks)."""

    scenario: str
    algo: str
    seed: int
    always_go: float
    best_fixed: float
    best_fixed_plan: str
    per_task_best: float
    before: float
    after: float
    after_greedy: float
    collision_before: float
    collision_after: float
    collision_greedy: float
    train_wall_time_s: float
    eval_wall_time_s: float
    #: The closed-loop gap-acceptance rule on the same tasks (NaN: not in the evaluation).
    rule: float = math.nan

    @property
    def gain(self) -> float:
        """Adaptation gain: return after one adaptation step minus before (sampled actions)."""
        return self.after - self.before


def run_result(scenario: str, algo: str, seed: int, run_dir: Path) -> RunResult:
    """Read one finished run (``evaluation.json`` with ``"scripted"`` and ``"greedy"``, and ``metrics.csv``)."""
    from intersection_meta.trainer import read_metrics

    report = json.loads((run_dir / "evaluation.json").read_text())
    if "scripted" not in report or "greedy" not in report:
        raise ValueError(
            f"{run_dir / 'evaluation.json'}: no scripted references or greedy row (not an intersection run?)"
        )
    before, after = report["steps"][0], report["steps"][-1]
    ref, greedy = report["scripted"], report["greedy"]
    rows = read_metrics(run_dir / "metrics.csv")
    return RunResult(
        scenario=scenario,
        algo=algo,
        seed=seed,
        always_go=ref["always_go"],
        best_fixed=ref["best_fixed"],
        best_fixed_plan=ref["best_fixed_plan"],
        per_task_best=ref["per_task_best"],
        before=before["return_mean"],
        after=after["return_mean"],
        after_greedy=greedy["return_mean"],
        collision_before=before["collision_rate"],
        collision_after=after["collision_rate"],
        collision_greedy=greedy["collision_rate"],
        train_wall_time_s=rows[-1]["wall_time_s"] if rows else math.nan,
        eval_wall_time_s=float(report.get("wall_time_s", math.nan)),
        rule=float(ref.get("gap_acceptance", math.nan)),
    )


def meets_bar(ret: float, best_fixed: float, collision_rate: float) -> bool:
    """Issue 9's bar: a return >= the best fixed open-loop plan's with <= 2% collisions."""
    return ret >= best_fixed - BAR_TOLERANCE and collision_rate <= BAR_MAX_COLLISION_RATE


def gap_closed(ret: float, best_fixed: float, per_task_best: float) -> float:
    """Share of the gap from the best fixed plan to the per-task best plan that ``ret`` closes (negative below the
    best fixed plan; the stretch goal is >= 0.5)."""
    gap = per_task_best - best_fixed
    return (ret - best_fixed) / gap if gap > 0 else math.nan


@dataclass(frozen=True)
class Cell:
    """One (scenario, algorithm) cell over its seeds: means, and 95% t-intervals over seeds where stated."""

    scenario: str
    algo: str
    seeds: int
    always_go: float
    best_fixed: float
    per_task_best: float
    before: Interval
    after: Interval
    after_greedy: Interval
    gain: Interval
    collision_after: float
    collision_greedy: float
    seeds_meeting_bar: int
    seeds_meeting_bar_greedy: int
    train_wall_time_s: float
    eval_wall_time_s: float
    rule: float = math.nan
    collision_before: float = math.nan  # the pre-adaptation (exploration) episodes' collision rate

    @property
    def meets_bar(self) -> bool:
        """The seed mean meets the bar (sampled actions)."""
        return meets_bar(self.after.estimate, self.best_fixed, self.collision_after)

    @property
    def meets_bar_greedy(self) -> bool:
        return meets_bar(self.after_greedy.estimate, self.best_fixed, self.collision_greedy)


def _mean(xs: Iterable[float]) -> float:
    """Mean of the non-NaN values (NaN if none), as :func:`intersection_meta.stats.mean_ci` computes it."""
    return mean_ci(list(xs)).estimate


def summarise_cell(results: Sequence[RunResult]) -> Cell:
    """Aggregate the seeds of one (scenario, algorithm); the references are averaged over the seeds' held-out task
    sets (each seed evaluates on its own tasks)."""
    if not results or len({(r.scenario, r.algo) for r in results}) != 1:
        raise ValueError("summarise_cell needs the runs of exactly one (scenario, algo)")
    r0 = results[0]
    return Cell(
        scenario=r0.scenario,
        algo=r0.algo,
        seeds=len(results),
        always_go=_mean(r.always_go for r in results),
        best_fixed=_mean(r.best_fixed for r in results),
        per_task_best=_mean(r.per_task_best for r in results),
        before=mean_ci([r.before for r in results]),
        after=mean_ci([r.after for r in results]),
        after_greedy=mean_ci([r.after_greedy for r in results]),
        gain=mean_ci([r.gain for r in results]),
        collision_after=_mean(r.collision_after for r in results),
        collision_greedy=_mean(r.collision_greedy for r in results),
        seeds_meeting_bar=sum(meets_bar(r.after, r.best_fixed, r.collision_after) for r in results),
        seeds_meeting_bar_greedy=sum(meets_bar(r.after_greedy, r.best_fixed, r.collision_greedy) for r in results),
        train_wall_time_s=_mean(r.train_wall_time_s for r in results),
        eval_wall_time_s=_mean(r.eval_wall_time_s for r in results),
        rule=_mean(r.rule for r in results),
        collision_before=_mean(r.collision_before for r in results),
    )


def cells(results: Sequence[RunResult], scenarios: Sequence[str], algos: Sequence[str]) -> list[Cell]:
    """One :class:`Cell` per (scenario, algorithm) with at least one finished run, in the given order."""
    out = []
    for scenario in scenarios:
        for algo in algos:
            mine = [r for r in results if r.scenario == scenario and r.algo == algo]
            if mine:
                out.append(summarise_cell(mine))
    return out


def _ci(x: Interval, digits: int = 2) -> str:
    if math.isnan(x.low):
        return f"{x.estimate:.{digits}f}"
    return f"{x.estimate:.{digits}f} [{x.low:.{digits}f}, {x.high:.{digits}f}]"


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def markdown_table(table: Sequence[Cell]) -> str:
    """The matrix as a markdown table (one row per cell)."""
    head = (
        "| scenario | algo | seeds | always go | best fixed plan | per-task best | gap-acceptance rule | before | "
        "collisions before | after 1 step (sampled) | adaptation gain | collisions after | after, greedy | "
        "collisions, greedy | bar met (sampled / greedy) | gap closed (sampled / greedy) | train + eval s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for c in table:
        closed = gap_closed(c.after.estimate, c.best_fixed, c.per_task_best)
        closed_greedy = gap_closed(c.after_greedy.estimate, c.best_fixed, c.per_task_best)
        rule = "-" if math.isnan(c.rule) else f"{c.rule:.2f}"
        lines.append(
            f"| {c.scenario} | {c.algo} | {c.seeds} | {c.always_go:.2f} | {c.best_fixed:.2f} | {c.per_task_best:.2f} | "
            f"{rule} | {_ci(c.before)} | {_pct(c.collision_before)} | {_ci(c.after)} | {_ci(c.gain)} | "
            f"{_pct(c.collision_after)} | "
            f"{_ci(c.after_greedy)} | {_pct(c.collision_greedy)} | {c.seeds_meeting_bar}/{c.seeds} / "
            f"{c.seeds_meeting_bar_greedy}/{c.seeds} | {100 * closed:.0f}% / {100 * closed_greedy:.0f}% | "
            f"{c.train_wall_time_s:.0f} + {c.eval_wall_time_s:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def write_results_csv(path: Path, results: Sequence[RunResult]) -> None:
    """One row per run, every field of :class:`RunResult` plus the gain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [*RunResult.__dataclass_fields__, "gain"]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        for r in results:
            w.writerow({**asdict(r), "gain": r.gain})


def read_results_csv(path: Path) -> list[RunResult]:
    """The runs :func:`write_results_csv` wrote (its ``gain`` column is derived, so it is dropped).

    Raises:
        ValueError: naming the file and the row when a column is missing or a value does not parse.
    """
    parse = {"str": str, "int": int, "float": float}
    types = {name: parse[f.type] for name, f in RunResult.__dataclass_fields__.items()}  # annotations are strings
    results = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                results.append(RunResult(**{name: cast(row[name]) for name, cast in types.items()}))
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: line {line}: {type(exc).__name__}: {exc}") from None
    return results


def plot_limits(values: Sequence[float], floor: float) -> tuple[float, float]:
    """The y-range of :func:`plot_matrix`: the finite ``values`` (points and interval ends) and the reference lines
    0 and 1, with a margin of 0.1, the bottom no lower than ``floor - 0.1``.

    >>> plot_limits([0.2, 1.3, -0.4], floor=-2.0)
    (-0.5, 1.4)
    """
    finite = [v for v in values if math.isfinite(v)]
    low = max(floor, min([0.0, *finite])) - 0.1
    high = max([1.0, *finite]) + 0.1
    return round(low, 6), round(high, 6)


def plot_matrix(path: Path, table: Sequence[Cell], algos: Sequence[str], floor: float = -2.0) -> Path:
    """One figure on the scale that decides issue 9's bar: per scenario, each learner's return after one adaptation
    step as the share of the gap from the best fixed plan (0, the bar) to the per-task best plan (1) that it
    closes (:func:`gap_closed`; 0.5 is the stretch goal). Filled: sampled actions, seed mean and 95% CI over seeds;
    hollow: greedy. The y-range fits the values (:func:`plot_limits`); values below ``floor`` are drawn at the floor
    with their value written next to them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(c.scenario for c in table))
    colors = {"multitask": "tab:gray", "maml": "tab:blue", "directed_maml": "tab:red"}
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(scenarios) + 2), 5.0), dpi=100)
    width = 0.8 / max(1, len(algos))
    drawn: list[float] = []

    def shown(v: float) -> float:
        return max(v, floor)

    for i, scenario in enumerate(scenarios):
        row = {c.algo: c for c in table if c.scenario == scenario}
        for j, algo in enumerate(algos):
            c = row.get(algo)
            if c is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            est, lo, hi = (gap_closed(v, c.best_fixed, c.per_task_best) for v in c.after)
            drawn += [est, lo, hi, gap_closed(c.after_greedy.estimate, c.best_fixed, c.per_task_best)]
            err = None if math.isnan(lo) else [[shown(est) - shown(lo)], [shown(hi) - shown(est)]]
            ax.errorbar([x], [shown(est)], yerr=err, fmt="o", color=colors.get(algo), capsize=3,
                        label=f"{algo}, sampled" if i == 0 else None)
            g = gap_closed(c.after_greedy.estimate, c.best_fixed, c.per_task_best)
            ax.plot([x], [shown(g)], marker="D", markerfacecolor="none", color=colors.get(algo), linestyle="none",
                    label=f"{algo}, greedy" if i == 0 else None)
            for value in (est, g):
                if value < floor:
                    ax.annotate(f"{value:.1f}", (x, floor), textcoords="offset points", xytext=(3, 4), fontsize=6)
    ax.axhline(0.0, color="black", linewidth=1.5, label="best fixed plan (the bar)")
    ax.axhline(0.5, color="tab:green", linestyle="--", linewidth=1, label="half the gap (stretch)")
    ax.axhline(1.0, color="tab:green", linestyle=":", linewidth=1, label="per-task best plan")
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=30, ha="right")
    ax.set_ylabel("share of the gap closed after 1 adaptation step\n(0 = best fixed plan, 1 = per-task best plan)")
    ax.set_ylim(*plot_limits(drawn, floor))
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.45))  # below the labels, clear of data
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def collect(out: Path, scenarios: Sequence[str], algos: Sequence[str], seeds: Sequence[int]) -> list[RunResult]:
    """Every finished run (one with an ``evaluation.json``) under ``out``."""
    found = []
    for scenario in scenarios:
        for algo in algos:
            for seed in seeds:
                run_dir = out / scenario / "runs" / run_dir_name(algo, seed)
                if (run_dir / "evaluation.json").exists():
                    found.append(run_result(scenario, algo, seed, run_dir))
    return found


def summary_counts(table: Sequence[Cell]) -> Mapping[str, Any]:
    """How many cells meet the bar, sampled and greedy, and the stretch goal (the bar, and half the gap to the
    per-task best plan closed, sampled), per algorithm."""
    algos = list(dict.fromkeys(c.algo for c in table))
    return {
        a: {
            "cells": sum(c.algo == a for c in table),
            "bar_sampled": sum(c.algo == a and c.meets_bar for c in table),
            "bar_greedy": sum(c.algo == a and c.meets_bar_greedy for c in table),
            "stretch_sampled": sum(
                c.algo == a and c.meets_bar and gap_closed(c.after.estimate, c.best_fixed, c.per_task_best) >= 0.5
                for c in table
            ),
        }
        for a in algos
    }
