"""Benchmark harness: statistics helpers against hand-computed values, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import pytest

from intersection_meta.bench.report import (
    TargetHit,
    band_over_seeds,
    final_return,
    interpolate,
    moving_average,
    paired_difference,
    ratio,
    time_to_target,
)
from intersection_meta.bench.runner import config_differences
from intersection_meta.cli import bench


def _rows(returns: list[float], dt: float = 2.0, steps: int = 100) -> list[dict[str, float]]:
    return [
        {"iteration": i + 1, "wall_time_s": dt * (i + 1), "env_steps": steps * (i + 1), "return_post": r}
        for i, r in enumerate(returns)
    ]


# -- statistics helpers --
def test_moving_average_is_trailing_with_full_windows():
    out = moving_average([1.0, 2.0, 3.0, 4.0], 3)
    assert math.isnan(out[0]) and math.isnan(out[1])
    assert out[2:] == pytest.approx([2.0, 3.0])
    assert moving_average([5.0, 7.0], 1) == [5.0, 7.0]


def test_time_to_target_first_smoothed_crossing():
    # smoothed (window 3) at iterations 3..6: (10+100+160)/3=90, (100+160+200)/3=153.3, ...
    rows = _rows([10.0, 100.0, 160.0, 200.0, 90.0, 200.0])
    hit = time_to_target(rows, 150.0, window=3)
    assert hit == TargetHit(iteration=4, wall_time_s=8.0, env_steps=400.0)
    # a single spike above target does not count when the window mean stays below
    assert time_to_target(_rows([0.0, 0.0, 300.0, 0.0, 0.0]), 150.0, window=3) is None
    # window 1: the raw first crossing
    assert time_to_target(rows, 150.0, window=1).iteration == 3


def test_final_return_band_interpolate_ratio():
    assert final_return(_rows([1.0, 2.0, 3.0, 4.0, 8.0])) == pytest.approx(5.0)
    assert math.isnan(final_return([]))
    means, halves, counts = band_over_seeds([[1.0, 3.0], [3.0]])
    assert means == [2.0, 3.0] and counts == [2, 1]
    assert halves[0] == pytest.approx(12.706 * math.sqrt(2.0) / math.sqrt(2.0), rel=1e-4)  # sd sqrt(2), n 2 (table t)
    assert math.isnan(halves[1])
    assert interpolate([0.0, 2.0, 4.0], [0.0, 10.0, 30.0], [1.0, 2.0, 3.0]) == pytest.approx([5.0, 10.0, 20.0])
    assert math.isnan(interpolate([1.0, 2.0], [0.0, 1.0], [5.0])[0])
    assert interpolate([1.0, 2.0], [0.0, 1.0], [0.5, 5.0], hold_last=True)[1] == 1.0
    assert math.isnan(interpolate([1.0, 2.0], [0.0, 1.0], [0.5], hold_last=True)[0])
    assert ratio(3.0, 4.0) == 0.75 and math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(float("nan"), 1.0))


def test_paired_difference_over_seeds_both_reached():
    def hit(it: int) -> TargetHit:
        return TargetHit(iteration=it, wall_time_s=float(it), env_steps=100.0 * it)

    directed = {0: hit(20), 1: hit(25), 2: hit(30), 3: None}
    base = {0: hit(22), 1: hit(25), 2: hit(34), 3: hit(30)}
    # diffs -2, 0, -4 (seed 3 unpaired): mean -2, sd 2, half-width 4.303 * 2 / sqrt(3)
    ci, n, fewer, same, more = paired_difference(directed, base)
    assert (ci.estimate, n, fewer, same, more) == (-2.0, 3, 2, 1, 0)
    assert ci.half_width == pytest.approx(4.303 * 2.0 / math.sqrt(3.0), rel=1e-4)
    assert paired_difference(directed, base, "env_steps")[0].estimate == pytest.approx(-200.0)


def test_config_differences_tolerates_added_and_removed_fields():
    from intersection_meta.config import RunConfig

    current = RunConfig().to_dict()
    stored = current | {"pg": {k: v for k, v in current["pg"].items() if k != "entropy_coef"} | {"retired": 1}}
    stored |= {"retired_key": 1, "train": current["train"] | {"iterations": 3}}
    assert config_differences(stored, current) == []  # missing key = default; unknown stored key ignored
    assert config_differences(stored | {"meta": current["meta"] | {"inner_lr": 0.123}}, current) == ["meta.inner_lr"]
    # a key whose default changed after the run: missing means the behaviour before the key, not today's default
    old_policy = stored | {"policy": {k: v for k, v in current["policy"].items() if k != "input_norm"}}
    assert config_differences(old_policy, current) == ["policy.input_norm"]
    assert config_differences(old_policy, current | {"policy": current["policy"] | {"input_norm": "none"}}) == []
    assert config_differences(stored, current | {"pg": {"entropy_coef": 0.5}}) == ["pg.entropy_coef"]
    flat_old = {k: v for section in current.values() for k, v in section.items()}  # a run from before sections
    assert config_differences(flat_old, current) == []
    assert config_differences(flat_old | {"gae_lambda": 0.9}, current) == ["pg.gae_lambda"]


def test_unknown_algorithm_is_a_clear_error(capsys):
    assert bench.main(["--suite", "cartpole_physics", "--algos", "maml,mamlx", "--iterations", "1"]) == 2
    assert "mamlx" in capsys.readouterr().err


# -- end to end --
_TINY = [
    "--suite",
    "cartpole_physics",
    "--algos",
    "maml,directed_maml",
    "--seeds",
    "2",
    "--iterations",
    "2",
    "--jobs",
    "2",
    "--set",
    "episode.max_steps=20",
    "--set",
    "meta_batch_size=2",
    "--set",
    "episodes_per_task=2",
    "--set",
    "directed_episodes=2",
    "--set",
    "eval_tasks=0",
    "--set",
    "hidden_sizes=[8]",
]


def test_tiny_end_to_end_and_rerun_skips(tmp_path: Path, capsys):
    out = tmp_path / "bench"
    assert bench.main([*_TINY, "--out", str(out)]) == 0
    first = capsys.readouterr().err
    assert first.count(": done (") == 4 and "[4/4]" in first

    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 2 * 2
    assert {(r["algo"], r["seed"]) for r in rows} == {(a, s) for a in ("maml", "directed_maml") for s in ("0", "1")}
    assert "success_rate_post" not in rows[0]  # CartPole has no success flag
    assert all(float(r["return_post"]) > 0 and float(r["time_iteration_s"]) > 0 for r in rows)

    report = (out / "report.md").read_text()
    for section in (
        "## Learning curves",
        "## Summary",
        "## Directed variant / base algorithm",
        "## Settings",
        "python -m intersection_meta.bench",
        "git commit",
        "cores",
        "directed_maml / maml",
    ):
        assert section in report
    for name in ("return_vs_iteration.png", "return_vs_wall_time.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"({name})" in report
        from PIL import Image

        with Image.open(png) as img:
            img.verify()
    assert (out / "runs" / "maml__s0" / "config.yaml").exists() and (out / "bench.yaml").exists()

    mtime = (out / "runs" / "maml__s1" / "metrics.csv").stat().st_mtime
    time.sleep(0.01)
    assert bench.main([*_TINY, "--out", str(out)]) == 0
    second = capsys.readouterr().err
    assert second.count(": skipped (") == 4
    assert (out / "runs" / "maml__s1" / "metrics.csv").stat().st_mtime == mtime

    # --report-only trains nothing and keeps the training command in the report
    elsewhere = tmp_path / "report"
    assert bench.main([*_TINY, "--out", str(out), "--report-dir", str(elsewhere), "--report-only"]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert "--report-only" not in (elsewhere / "report.md").read_text()
    assert (elsewhere / "results.csv").read_text() == (out / "results.csv").read_text()


def test_rerun_with_other_settings_is_refused(tmp_path: Path, capsys):
    out = tmp_path / "bench"
    args = [*_TINY[:3], "maml", *_TINY[4:]]
    args[args.index("--seeds") + 1] = "1"
    assert bench.main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    assert bench.main([*args, "--out", str(out), "--set", "inner_lr=0.1"]) == 1
    assert "different config" in capsys.readouterr().err


def _grandchildren(pid: int) -> list[int]:
    """Live processes two levels below ``pid`` (Linux /proc): the bench's workers, which the forkserver (a child
    of this process, like multiprocessing's resource tracker) forks."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent[int(entry.name)] = int(fields[1])
    children = {p for p, pp in parent.items() if pp == pid}
    return [p for p, pp in parent.items() if pp in children]


def test_a_killed_worker_is_retried_on_a_fresh_pool_and_resumes(tmp_path: Path):
    """SIGKILL the worker of the first run after its first checkpoint: the pool breaks, both runs go to a fresh
    pool, the killed one resumes from its checkpoint, and both finish with every iteration logged once."""
    import os
    import signal
    import threading

    from intersection_meta.bench.runner import LocalExecutor, RunSpec, run_dir_name
    from intersection_meta.config import make_config
    from intersection_meta.trainer import read_metrics

    iterations = 40
    config = {"train.scenario": "cartpole_physics", "meta.algo": "fomaml", "train.iterations": iterations,
              "train.meta_batch_size": 2, "train.episodes_per_task": 4, "train.eval_tasks": 0,
              "policy.hidden_sizes": [8]}
    specs = [RunSpec("fomaml", s, tmp_path / run_dir_name("fomaml", s), make_config({**config, "train.seed": s})
                     .to_dict(), (("episode.max_steps", 60),)) for s in (0, 1)]
    first_ckpt = specs[0].out_dir / "checkpoints" / "last.pt"
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.monotonic() + 120
        while not first_ckpt.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _grandchildren(os.getpid())
        if len(workers) == 1:  # jobs=1: the worker of the first run
            os.kill(workers[0], signal.SIGKILL)
            killed.append(workers[0])

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    outcomes = list(LocalExecutor(1).run(specs))
    killer.join(timeout=5)
    assert killed, "no worker was found to kill"
    assert sorted((o.seed, o.status) for o in outcomes) == [(0, "resumed"), (1, "done")], outcomes
    for spec in specs:
        its = [int(r["iteration"]) for r in read_metrics(spec.out_dir / "metrics.csv")]
        assert its == list(range(1, iterations + 1))
