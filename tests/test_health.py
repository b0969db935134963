"""Training health (issue 12): divergence stops the run (exit 3, last good checkpoint kept), collapse warns, and
metrics.csv carries policy_entropy and outer_grad_norm."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from intersection_meta.checkpoint import load_raw
from intersection_meta.config import make_config
from intersection_meta.health import CollapseMonitor, TrainingDiverged, first_non_finite
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import METRIC_COLUMNS, read_metrics, train
from test_trainer import TINY

REPO = Path(__file__).resolve().parent.parent
CARTPOLE = TINY  # 2 iterations of a small CartPole run
#: A continuous-action LunarLander whose Gaussian log-std is pushed by Adam steps of size ~30 with clipping off:
#: exp(log_std) overflows to inf at iteration 2 (a real divergence, not an injected NaN).
LUNAR_DIVERGES = {
    **CARTPOLE,
    "scenario": "lunarlander_gravity_wind",
    "iterations": 6,
    "algo": "maml",
    "meta_lr": 30.0,
    "outer_grad_clip": 0.0,
}
LUNAR_SETS = ["action.continuous=true", "episode.max_steps=10"]


def cartpole_run(out: Path, warnings: list[str] | None = None, **overrides):
    return train(make_config({**CARTPOLE, **overrides}), out, progress=False, tensorboard=False,
                 scenario=load_scenario("cartpole_physics", ["episode.max_steps=25"]),
                 on_warning=None if warnings is None else warnings.append)


def test_metrics_carry_policy_entropy_and_outer_grad_norm(tmp_path: Path):
    assert {"policy_entropy", "outer_grad_norm"} <= set(METRIC_COLUMNS)
    clipped = read_metrics(cartpole_run(tmp_path / "a", outer_grad_clip=0.01).out_dir / "metrics.csv")
    unclipped = read_metrics(cartpole_run(tmp_path / "b", outer_grad_clip=0.0).out_dir / "metrics.csv")
    first = clipped[0]
    # the initial policy (small output layer) is close to uniform over CartPole's 2 actions: entropy ~ ln 2
    assert math.log(2) - 0.05 < first["policy_entropy"] <= math.log(2) + 1e-6
    # the norm is measured before clipping: iteration 1 is identical with and without clipping
    assert first["outer_grad_norm"] > 0 and first["outer_grad_norm"] == unclipped[0]["outer_grad_norm"]
    assert clipped[1]["outer_grad_norm"] != unclipped[1]["outer_grad_norm"]  # clipping changed the first step


def test_a_collapsed_policy_gets_a_warning_naming_the_iteration(tmp_path: Path):
    warnings: list[str] = []
    rows = cartpole_run(tmp_path / "c", warnings, meta_lr=10.0, iterations=6, algo="maml").metrics
    assert [r["outer_loss"] for r in rows[3:]] == [0.0] * 3  # the symptom: exact zeros, exit 0
    collapsed = [r["policy_entropy"] < 1e-3 or r["outer_grad_norm"] == 0 for r in rows]
    third = next(k for k in range(2, len(rows)) if all(collapsed[k - 2 : k + 1]))
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"warning: iteration {third + 1}:") and "collapsed" in warnings[0]


def test_a_healthy_run_gets_no_warning(tmp_path: Path):
    warnings: list[str] = []
    cartpole_run(tmp_path / "h", warnings, iterations=4)
    assert warnings == []


def test_collapse_monitor_counts_consecutive_iterations_and_warns_once_per_streak():
    monitor = CollapseMonitor(patience=3, min_entropy_nats=1e-3)
    healthy, flat = {"policy_entropy": 0.5, "outer_grad_norm": 0.1}, {"policy_entropy": 0.5, "outer_grad_norm": 0.0}
    seen = [monitor.update({"iteration": k, **row}) for k, row in enumerate([flat, flat, healthy, flat, flat, flat,
                                                                             flat, flat], start=1)]
    assert [k for k, w in enumerate(seen, start=1) if w] == [6]
    gaussian = CollapseMonitor(patience=1, min_entropy_nats=None)  # negative differential entropy is fine
    assert gaussian.update({"iteration": 1, "policy_entropy": -3.0, "outer_grad_norm": 0.2}) is None


def test_first_non_finite_names_the_quantity():
    good = {"inner_loss": 0.1, "outer_loss": 0.2, "outer_grad_norm": 1.0, "policy_entropy": 0.6,
            "success_rate_post": float("nan")}
    assert first_non_finite(good, [("w", torch.ones(2))]) is None
    assert first_non_finite({**good, "outer_loss": float("inf")}, []) == "outer_loss = inf"
    assert first_non_finite(good, [("0.weight", torch.tensor([1.0, float("nan")]))]) == "parameter 0.weight"


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    out = tmp_path / "d"
    with pytest.raises(TrainingDiverged, match=r"^iteration 2: non-finite .*last good checkpoint \(iteration 1\)"):
        train(make_config(LUNAR_DIVERGES), out, progress=False, tensorboard=False,
              scenario=load_scenario("lunarlander_gravity_wind", LUNAR_SETS))
    raw = load_raw(out / "checkpoints" / "last.pt")
    assert raw["iteration"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in raw["policy_state"].values())
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1]


def test_divergence_on_the_command_line_is_exit_3_with_one_line(tmp_path: Path):
    sets = [f"{k}={v}" for k, v in LUNAR_DIVERGES.items() if k not in ("scenario", "hidden_sizes")] + LUNAR_SETS
    args = ["--scenario", "lunarlander_gravity_wind", "--quiet", "--no-tensorboard", "--out", str(tmp_path / "d")]
    for item in sets:
        args += ["--set", item]
    r = subprocess.run([sys.executable, "-m", "intersection_meta.train", *args, "--set", "hidden_sizes=[16,16]"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 3, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: iteration 2: non-finite") and "Traceback" not in r.stderr
