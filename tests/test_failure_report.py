"""The failure report (``evaluate --report DIR``): the files it writes, bins against known outcomes, replay commands."""

from __future__ import annotations

import csv
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from intersection_meta.failure_report import bin_edges, bin_rows, replay_command, write_failure_report
from intersection_meta.scenario import load_scenario
from intersection_meta.schema import parse_set
from intersection_meta.tasks import task_to_dict

EPISODES = 10


def _synthetic_report(scenario, n_tasks: int = 120) -> dict:
    """An evaluation report whose outcomes are a known function of the gap: crash iff |gap| < 0.5 s."""
    tasks = scenario.sample_tasks(n_tasks, seed=11)
    per_task = []
    for t in tasks:
        crash = abs(t.time_gap_s) < 0.5
        per_task.append({"task_id": t.task_id, "task": task_to_dict(t), "return_mean": -9.0 if crash else 2.0,
                         "success_rate": 0.0 if crash else 1.0, "collision_rate": 1.0 if crash else 0.0,
                         "pet_s": abs(t.time_gap_s)})
    return {"scenario": scenario.name, "algo": "maml", "iteration": 3, "tasks": n_tasks, "episodes_per_task": EPISODES,
            "simulator": "fast", "steps": [{"adapt_step": 0}, {"adapt_step": 1}], "per_task": per_task}


def test_report_files_and_the_bin_where_it_crashes(tmp_path: Path):
    scenario = load_scenario("yield_left", ["other.time_gap_s=[-3.0, 3.0]"])  # six 1 s bins: [-0.5, 0.5) is none
    report = _synthetic_report(scenario)
    path = write_failure_report(report, scenario, tmp_path / "rep", checkpoint="run/ckpt.pt", bins=3)
    out = tmp_path / "rep"
    names = {p.name for p in out.iterdir()}
    assert names == {"report.md", "overview.png", "pairs.png", "tasks.csv", "param_ego_distance_to_stop_m.png",
                     "param_other_speed_mps.png", "param_other_time_gap_s.png"}
    for png in out.glob("*.png"):
        image = np.asarray(Image.open(png).convert("RGB"))
        assert image.shape[0] > 100 and image.std() > 10  # a real figure, not a blank canvas
    text = path.read_text()
    # with 3 bins of 2 s the crashes (|gap| < 0.5) all fall in the middle bin [-1, 1)
    assert "**The policy collides most when `other.time_gap_s` is in [-1, 1)**" in text
    gaps = np.array([e["task"]["time_gap_s"] for e in report["per_task"]])
    middle = (gaps >= -1) & (gaps < 1)
    crashes = int((np.abs(gaps) < 0.5).sum())
    assert f"| [-1, 1) | {middle.sum()} |" in text
    assert f"{crashes * EPISODES / (middle.sum() * EPISODES):.0%}" in text
    assert "mean pet_s" in text  # an extra per-task metric gets a column
    rows = list(csv.DictReader((out / "tasks.csv").open()))
    assert len(rows) == 120 and {"task_id", "other.time_gap_s", "collision_rate", "pet_s"} <= set(rows[0])
    worst = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(worst) == 10 and all("| 100% |" in line for line in worst)  # the worst are crashes


def test_bins_count_against_numpy_histogram():
    scenario = load_scenario("yield_left")
    report = _synthetic_report(scenario, 200)
    edges = bin_edges(scenario.spec["other"]["speed_mps"], 5)
    speeds = [e["task"]["other_speed_mps"] for e in report["per_task"]]
    rows = bin_rows(speeds, report["per_task"], EPISODES, edges, ["pet_s"])
    assert [r.n_tasks for r in rows] == list(np.histogram(speeds, edges)[0])
    assert sum(r.collisions for r in rows) == EPISODES * sum(e["collision_rate"] for e in report["per_task"])
    choice = bin_rows(["a", "b", "a"], [{"success_rate": 1.0, "collision_rate": 0.0, "return_mean": 1.0}] * 3, 2,
                      None, [])
    assert [(r.label, r.n_tasks, r.episodes) for r in choice] == [("a", 2, 4), ("b", 1, 2)]


@pytest.mark.parametrize("name", ["yield_left", "random_crossing"])
def test_replay_command_pins_exactly_the_task(name: str):
    scenario = load_scenario(name)
    for task in scenario.sample_tasks(5, seed=9):
        values = {k: v for k, v in scenario.task_values(task).items() if len(scenario.sampled_keys()[k].values()) > 1}
        words = shlex.split(replay_command("x.pt", values))
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        pinned = load_scenario(name, [f"{k}={v}" for k, v in parse_set(sets)])
        assert pinned.sample_tasks(1, seed=123)[0] == task


def test_cli_report_from_the_shipped_policy(tmp_path: Path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-m", "intersection_meta.evaluate", "--checkpoint",
                           "policies:yield_left_directed_maml", "--tasks", "8", "--episodes", "2", "--report", str(out),
                           "--report-bins", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and (out / "overview.png").is_file()
    assert "policies:yield_left_directed_maml" in (out / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "intersection_meta.evaluate", "--checkpoint", "x.pt", "--report",
                          str(out), "--report-bins", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--report-bins" in bad.stderr and "Traceback" not in bad.stderr
