"""Run directories that survive anything (issue 12): resume semantics, crash-safe logs, one process per run
directory, stale temporaries, and a kill test that SIGKILLs resumes at many points."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_trainer
import yaml

from intersection_meta.checkpoint import load_raw
from intersection_meta.cli.train import main as train_main
from intersection_meta.config import make_config, split_overrides
from intersection_meta.runlog import MetricsLog, RunLock, read_json_lines
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import METRIC_COLUMNS, TIMING_COLUMNS, TrainError, read_metrics, train

TINY = {**test_trainer.TINY, "iterations": 3}
SCENARIO_SETS = ["episode.max_steps=25"]


def cut_run(out: Path, done: int = 2, **overrides) -> Path:
    """A run of ``TINY`` (3 iterations unless overridden) interrupted after ``done`` iterations."""
    config = make_config({**TINY, **overrides})
    scenario = load_scenario("cartpole_physics", SCENARIO_SETS)
    train(config, out, progress=False, tensorboard=False, scenario=scenario, stop_after=done)
    return out


def comparable(rows):
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k not in TIMING_COLUMNS}
        for r in rows
    ]


def resume_cli(out: Path, *extra: str) -> int:
    return train_main(["--resume", str(out), "--quiet", "--no-tensorboard", *extra])


# -- resume semantics -------------------------------------------------------------------------------------------


def test_resume_without_iterations_keeps_the_stored_count_and_names_the_scenario(tmp_path: Path, capsys):
    out = cut_run(tmp_path / "r")
    assert resume_cli(out) == 0
    err = capsys.readouterr().err
    assert "on cartpole_physics (3 iterations" in err
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]
    assert yaml.safe_load((out / "config.yaml").read_text())["run"]["train"]["iterations"] == 3
    assert load_raw(out / "checkpoints" / "last.pt")["iteration"] == 3


def test_resume_with_more_iterations_raises_the_length(tmp_path: Path):
    out = cut_run(tmp_path / "r")
    assert resume_cli(out, "--iterations", "4") == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4]
    assert yaml.safe_load((out / "config.yaml").read_text())["run"]["train"]["iterations"] == 4


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--set", "meta_lr=0.5"], "train.meta_lr=0.5"),
        (["--algo", "maml"], "meta.algo='maml'"),
        (["--seed", "7"], "train.seed=7"),
        (["--set", "pg.gae_lambda=0.9"], "pg.gae_lambda=0.9"),
        (["--set", "episode.max_steps=30"], "episode"),
        (["--iterations", "2"], "can only raise it"),
    ],
)
def test_resume_refuses_overrides_that_change_the_run(tmp_path: Path, capsys, extra, named):
    out = cut_run(tmp_path / "r")
    before = (out / "metrics.csv").read_bytes()
    assert resume_cli(out, *extra) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (out / "metrics.csv").read_bytes() == before


def test_resume_accepts_overrides_equal_to_the_stored_values(tmp_path: Path):
    out = cut_run(tmp_path / "r")
    assert resume_cli(out, "--seed", "0", "--algo", "directed_maml", "--set", "meta_batch_size=2",
                      "--set", "episode.max_steps=25") == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]


# -- crash-safe logs ----------------------------------------------------------------------------------------------


def test_resume_tolerates_torn_last_lines_and_matches_an_uninterrupted_run(tmp_path: Path):
    full = cut_run(tmp_path / "full", done=3)
    out = cut_run(tmp_path / "cut")
    with (out / "tasks.jsonl").open("a") as fh:  # what a kill in the middle of the next iteration's write leaves
        fh.write('{"iteration": 3, "index": 0, "task_id": "ab')
    with (out / "metrics.csv").open("a") as fh:
        fh.write("3,0.5,12")
    assert read_metrics(out / "metrics.csv")[-1]["iteration"] == 2  # readers skip the torn line
    assert [r["iteration"] for r in read_json_lines(out / "tasks.jsonl")] == [1, 1, 2, 2]
    train(make_config(TINY), out, resume=True, progress=False, tensorboard=False)
    assert comparable(read_metrics(out / "metrics.csv")) == comparable(read_metrics(full / "metrics.csv"))
    assert (out / "tasks.jsonl").read_text() == (full / "tasks.jsonl").read_text()


def test_rows_after_the_checkpoint_are_dropped_on_resume(tmp_path: Path):
    full = cut_run(tmp_path / "full", done=3)
    out = cut_run(tmp_path / "cut")
    # a kill after iteration 3's logs were written but before its checkpoint: logs run one iteration ahead
    (out / "metrics.csv").write_text((full / "metrics.csv").read_text())
    (out / "tasks.jsonl").write_text((full / "tasks.jsonl").read_text())
    train(make_config(TINY), out, resume=True, progress=False, tensorboard=False)
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]
    assert [(r["iteration"], r["index"]) for r in read_json_lines(out / "tasks.jsonl")] == [
        (i, j) for i in (1, 2, 3) for j in range(2)
    ]


def test_truncation_goes_through_a_temporary_file_never_in_place(tmp_path: Path, monkeypatch):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, METRIC_COLUMNS)
    log.start(keep_through=0)
    for k in (1, 2, 3):
        log.append({"iteration": k, "return_pre": k / 10})
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        log.start(keep_through=2)
    assert path.read_bytes() == before
    monkeypatch.undo()
    log.start(keep_through=2)
    assert [r["iteration"] for r in read_metrics(path)] == [1, 2]


def test_a_resume_removes_stale_temporary_files(tmp_path: Path):
    out = cut_run(tmp_path / "r")
    stale = [out / "checkpoints" / ".last.pt.x1y2z3.tmp", out / "metrics.csv.tmp", out / "config.yaml.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    train(make_config(TINY), out, resume=True, progress=False, tensorboard=False)
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_00003.pt", "last.pt"]


# -- one process per run directory ------------------------------------------------------------------------------


def test_a_second_trainer_on_a_locked_run_directory_is_refused_with_the_holders_pid(tmp_path: Path):
    out = tmp_path / "r"
    config, scenario = make_config(TINY), load_scenario("cartpole_physics", SCENARIO_SETS)
    with RunLock(out):
        with pytest.raises(TrainError, match=f"in use by another training process \\(PID {os.getpid()}\\)"):
            train(config, out, progress=False, tensorboard=False, scenario=scenario)
    assert not (out / "metrics.csv").exists()
    train(config, out, progress=False, tensorboard=False, scenario=scenario, stop_after=1)  # released
    assert len(read_metrics(out / "metrics.csv")) == 1


def test_a_lock_held_by_a_live_process_blocks_and_a_killed_holder_does_not(tmp_path: Path, capsys):
    out = cut_run(tmp_path / "r")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom intersection_meta.runlog import RunLock\n"
         "with RunLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert resume_cli(out) == 2
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and "Traceback" not in err
        assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").exists()  # the lock file stays behind; the kernel lock went with the process
    assert resume_cli(out) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2, 3]


# -- the kill test ------------------------------------------------------------------------------------------------

KILL_RUN = [
    "--set", "episode.max_steps=40", "--set", "meta_batch_size=3", "--set", "episodes_per_task=4",
    "--set", "directed_episodes=3", "--set", "eval_tasks=0", "--set", "hidden_sizes=[16,16]",
    "--set", "checkpoint_every=1000",
]


def check_logs_cover_the_checkpoint(out: Path, tasks_per_iteration: int) -> int:
    """Every iteration up to the checkpoint's has its metrics row and task lines, once and in order."""
    done = int(load_raw(out / "checkpoints" / "last.pt")["iteration"])
    rows = [int(r["iteration"]) for r in read_metrics(out / "metrics.csv")]
    assert rows[:done] == list(range(1, done + 1)), (done, rows)
    assert len(rows) <= done + 1 and rows == list(range(1, len(rows) + 1))
    tasks = [(r["iteration"], r["index"]) for r in read_json_lines(out / "tasks.jsonl")]
    want = [(i, j) for i in range(1, done + 1) for j in range(tasks_per_iteration)]
    assert tasks[: len(want)] == want, (done, tasks[-3:])
    return done


def kill_resumes(tmp_path: Path, delays_s: list[float], iterations: int) -> list[int]:
    """SIGKILL ``--resume`` processes after each delay in turn, checking the logs after every kill, then let one
    finish; the result must equal an uninterrupted run's. Returns the checkpointed iteration after each kill."""
    repo = Path(__file__).resolve().parent.parent
    sets = [item for flag, item in zip(KILL_RUN[::2], KILL_RUN[1::2], strict=True) if flag == "--set"]
    run_sets, scenario_sets = split_overrides(sets)
    config = make_config({**run_sets, "train.iterations": iterations, "train.scenario": "cartpole_physics"})
    scenario = load_scenario("cartpole_physics", scenario_sets)
    ref, out = tmp_path / "reference", tmp_path / "killed"
    train(config, ref, progress=False, tensorboard=False, scenario=scenario)
    train(config, out, progress=False, tensorboard=True, scenario=scenario, stop_after=1)
    resume = [sys.executable, "-m", "intersection_meta.train", "--resume", str(out), "--quiet", "--no-eval"]
    progress = []
    for delay in delays_s:
        proc = subprocess.Popen(resume, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(check_logs_cover_the_checkpoint(out, config.train.meta_batch_size))
    r = subprocess.run(resume, cwd=repo, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert check_logs_cover_the_checkpoint(out, config.train.meta_batch_size) == iterations
    assert comparable(read_metrics(out / "metrics.csv")) == comparable(read_metrics(ref / "metrics.csv"))
    assert (out / "tasks.jsonl").read_text() == (ref / "tasks.jsonl").read_text()
    assert list((out / "checkpoints").glob("*.tmp")) == [] and list(out.glob("*.tmp")) == []
    assert tensorboard_steps(out / "tb", "meta/outer_loss") == list(range(1, iterations + 1))
    return progress


def tensorboard_steps(tb_dir: Path, tag: str) -> list[int]:
    """The steps of a scalar as TensorBoard shows them (its reader drops what a resume purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_kill_resumes_at_many_points_keeps_every_row_and_task_line(tmp_path: Path):
    progress = kill_resumes(tmp_path, [0.5, 2.5, 4.0, 4.5, 5.0, 5.5, 6.5, 7.5], iterations=10)
    assert progress == sorted(progress)  # a kill never loses a checkpointed iteration


@pytest.mark.slow
def test_kill_resumes_at_many_more_points(tmp_path: Path):
    delays = [0.3 * k for k in range(1, 40)]
    progress = kill_resumes(tmp_path, delays, iterations=40)
    assert progress == sorted(progress)
