"""The scenario matrix (issue 9): its arithmetic against closed forms, and a tiny real run end to end."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from intersection_meta.bench.matrix import (
    RunResult,
    gap_closed,
    meets_bar,
    plot_limits,
    read_results_csv,
    summarise_cell,
    write_results_csv,
)

ROOT = Path(__file__).resolve().parents[1]


def _result(seed: int, before: float, after: float, collision_after: float = 0.0, greedy: float = 8.0) -> RunResult:
    return RunResult(
        scenario="s", algo="maml", seed=seed, always_go=-10.0, best_fixed=8.0, best_fixed_plan="brake 5, then go",
        per_task_best=9.0, before=before, after=after, after_greedy=greedy, collision_before=0.1,
        collision_after=collision_after, collision_greedy=0.0, train_wall_time_s=30.0, eval_wall_time_s=5.0,
    )


def test_bar_gap_and_score_closed_forms():
    assert meets_bar(8.0, 8.0, 0.02) and meets_bar(7.996, 8.0, 0.0)
    assert not meets_bar(7.99, 8.0, 0.0) and not meets_bar(9.0, 8.0, 0.021)
    assert gap_closed(8.5, 8.0, 9.0) == pytest.approx(0.5) and gap_closed(7.0, 8.0, 9.0) == pytest.approx(-1.0)
    assert math.isnan(gap_closed(8.0, 8.0, 8.0))


def test_cell_gain_is_a_t_interval_over_seeds():
    runs = [_result(0, 7.0, 7.5), _result(1, 7.0, 8.5, 0.05), _result(2, 7.0, 8.0)]
    cell = summarise_cell(runs)
    # gains 0.5, 1.5, 1.0: mean 1, sd 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3) = 4.3027 * 0.288675
    assert cell.gain.estimate == pytest.approx(1.0)
    assert cell.gain.high - cell.gain.estimate == pytest.approx(4.302653 * 0.5 / math.sqrt(3), rel=1e-5)
    assert cell.after.estimate == pytest.approx(8.0) and cell.collision_after == pytest.approx(0.05 / 3)
    assert cell.seeds_meeting_bar == 1  # seed 0 is below the best fixed plan, seed 1 crashes 5%: only seed 2
    assert cell.meets_bar and cell.meets_bar_greedy
    with pytest.raises(ValueError, match="exactly one"):
        summarise_cell([*runs, RunResult(**{**runs[0].__dict__, "algo": "multitask"})])


def test_tiny_matrix_run_writes_the_report_from_the_runs_evaluations(tmp_path: Path):
    out, report = tmp_path / "runs", tmp_path / "report"
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "scenario_matrix.py"), "--scenarios", "cross_straight",
        "--algos", "multitask", "--seeds", "2", "--jobs", "1", "--out", str(out), "--report-dir", str(report),
        "--set", "train.iterations=2", "--set", "train.meta_batch_size=2", "--set", "train.episodes_per_task=2",
        "--set", "train.eval_tasks=3",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader((report / "results.csv").open()))
    assert [(row["scenario"], row["algo"], row["seed"]) for row in rows] == [
        ("cross_straight", "multitask", "0"), ("cross_straight", "multitask", "1")
    ]
    for row in rows:
        run_dir = out / "cross_straight" / "runs" / f"multitask__s{row['seed']}"
        ev = json.loads((run_dir / "evaluation.json").read_text())
        assert ev["tasks"] == 3 and ev["iteration"] == 2
        assert float(row["after"]) == pytest.approx(ev["steps"][1]["return_mean"])
        assert float(row["best_fixed"]) == pytest.approx(ev["scripted"]["best_fixed"])
        assert float(row["after_greedy"]) == pytest.approx(ev["greedy"]["return_mean"])
    text = (report / "README.md").read_text()
    assert "--set train.iterations=2" in text and "| cross_straight | multitask | 2 |" in text
    assert (report / "matrix.png").stat().st_size > 10_000
    # a rerun skips the finished runs and rewrites the same table
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and again.stderr.count(": skipped (") == 2
    assert list(csv.DictReader((report / "results.csv").open())) == rows


def test_results_csv_round_trip_and_a_bad_row_names_file_and_line(tmp_path: Path):
    runs = [_result(0, 7.5, 8.25), _result(1, 7.0, 8.5, collision_after=0.01, greedy=8.75)]
    runs.append(RunResult(**{**runs[1].__dict__, "seed": 2, "rule": 8.5}))
    path = tmp_path / "results.csv"
    write_results_csv(path, runs)
    back = read_results_csv(path)

    def same(x, y):  # NaN (no rule in the evaluation) reads back as NaN
        return x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))

    assert len(back) == 3 and all(
        type(getattr(a, k)) is type(getattr(b, k)) and same(getattr(a, k), getattr(b, k))
        for a, b in zip(back, runs, strict=True) for k in RunResult.__dataclass_fields__
    )
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], rows[1].replace(",7.5,", ",seven,", 1)]) + "\n")
    with pytest.raises(ValueError, match=r"results\.csv: line 2: ValueError"):
        read_results_csv(path)


def test_plot_limits_fit_the_values_with_the_reference_lines():
    assert plot_limits([0.2, 0.8], floor=-2.0) == (-0.1, 1.1)  # 0 and 1 always shown
    assert plot_limits([0.2, 1.3, -0.4, math.nan], floor=-2.0) == (-0.5, 1.4)
    assert plot_limits([-7.0, 0.5], floor=-2.0) == (-2.1, 1.1)  # below the floor: drawn at it, annotated


def test_plot_only_redraws_the_figure_from_results_csv(tmp_path: Path):
    report = tmp_path / "report"
    write_results_csv(report / "results.csv", [
        RunResult(**{**_result(seed, 7.5, 8.5).__dict__, "scenario": "cross_straight"}) for seed in (0, 1)
    ])
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scenario_matrix.py"), "--plot-only", "--scenarios",
         "cross_straight", "--report-dir", str(report)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (report / "matrix.png").stat().st_size > 10_000 and not (report / "README.md").exists()
