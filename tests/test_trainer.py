"""Trainer, checkpoints, resume and the train/evaluate command lines (tiny CartPole runs)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from intersection_meta.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from intersection_meta.config import make_config
from intersection_meta.registry import ALGORITHMS
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import TIMING_COLUMNS, read_metrics, train

TINY = {
    "scenario": "cartpole_physics",
    "iterations": 2,
    "meta_batch_size": 2,
    "episodes_per_task": 3,
    "directed_episodes": 3,
    "eval_tasks": 0,
    "hidden_sizes": [16, 16],
}


def tiny_scenario():
    return load_scenario("cartpole_physics", ["episode.max_steps=25"])


def run(tmp_path: Path, name: str, **overrides):
    config = make_config({**TINY, **overrides})
    return train(config, tmp_path / name, progress=False, tensorboard=False, scenario=tiny_scenario())


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_trains_and_checkpoints(tmp_path: Path, algo: str):
    result = run(tmp_path, algo, algo=algo)
    rows = read_metrics(result.out_dir / "metrics.csv")
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["return_pre"]) and math.isfinite(r["return_post"]) and math.isfinite(r["outer_loss"])
        assert r["env_steps"] > 0
        assert (r["time_directed_s"] > 0) == algo.startswith("directed_")
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt.algo == algo and ckpt.iteration == 2
    init = train.__globals__["Trainer"](make_config({**TINY, "algo": algo}), tiny_scenario())
    moved = any(not torch.equal(a, b) for a, b in zip(ckpt.policy.parameters(), init.policy.parameters(), strict=False))
    assert moved, "meta-training did not change the policy"
    if "meta_sgd" in algo:
        sizes = ckpt.learner.step_sizes
        assert sizes is not None
        assert any(not torch.allclose(v, torch.full_like(v, make_config(TINY).meta.inner_lr)) for v in sizes.values())


def test_checkpoint_round_trip_is_exact_and_weights_only(tmp_path: Path):
    result = run(tmp_path, "rt", algo="meta_sgd")
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["scenario"]["name"] == "cartpole_physics"
    assert raw["git_sha"]
    a, b = load_checkpoint(result.checkpoint), load_checkpoint(result.out_dir)
    obs = torch.randn(7, 4)
    torch.testing.assert_close(a.policy.distribution(obs).logits, b.policy.distribution(obs).logits)
    for k in a.learner.step_sizes:
        torch.testing.assert_close(a.learner.step_sizes[k], b.learner.step_sizes[k])


def test_checkpoint_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"corrupt\.pt"):
        load_checkpoint(bad)
    future = tmp_path / "future.pt"
    save_checkpoint(future, {"format_version": 99})
    with pytest.raises(CheckpointError, match="format_version 99 is not supported"):
        load_checkpoint(future)
    result = run(tmp_path, "sc", iterations=1)
    with pytest.raises(CheckpointError, match="trained on scenario 'cartpole_physics', not 'yield_left'"):
        load_checkpoint(result.checkpoint, scenario="yield_left")


def test_checkpoint_write_is_atomic(tmp_path: Path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.ones(3)})
    before = path.read_bytes()

    class Boom:  # torch.save fails midway on an object it cannot serialise
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"x": Boom()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _comparable(rows):
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items() if k not in TIMING_COLUMNS}
        for r in rows
    ]


def test_resume_gives_same_metrics_as_uninterrupted(tmp_path: Path):
    full = run(tmp_path, "full", iterations=3, algo="directed_maml")
    config = make_config({**TINY, "iterations": 3, "algo": "directed_maml"})
    train(config, tmp_path / "cut", progress=False, tensorboard=False, scenario=tiny_scenario(), stop_after=2)
    assert len(read_metrics(tmp_path / "cut" / "metrics.csv")) == 2
    train(config, tmp_path / "cut", resume=True, progress=False, tensorboard=False)
    a = _comparable(read_metrics(full.out_dir / "metrics.csv"))
    b = _comparable(read_metrics(tmp_path / "cut" / "metrics.csv"))
    assert a == b
    pa = load_checkpoint(full.checkpoint).policy.state_dict()
    pb = load_checkpoint(tmp_path / "cut").policy.state_dict()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=0)


def test_same_seed_same_run_different_seed_differs(tmp_path: Path):
    a = _comparable(run(tmp_path, "a", seed=3).metrics)
    b = _comparable(run(tmp_path, "b", seed=3).metrics)
    c = _comparable(run(tmp_path, "c", seed=4).metrics)
    assert a == b and a != c


def test_refuses_to_overwrite_a_run(tmp_path: Path):
    run(tmp_path, "x", iterations=1)
    from intersection_meta.trainer import TrainError

    with pytest.raises(TrainError, match="already holds a run"):
        run(tmp_path, "x", iterations=1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)


def test_cli_train_then_evaluate(tmp_path: Path):
    out = tmp_path / "cli"
    r = _cli(
        "-m",
        "intersection_meta.train",
        "--scenario",
        "cartpole_physics",
        "--algo",
        "fomaml",
        "--quiet",
        "--set",
        "iterations=1",
        "--set",
        "meta_batch_size=2",
        "--set",
        "episodes_per_task=2",
        "--set",
        "eval_tasks=2",
        "--set",
        "episode.max_steps=20",
        "--set",
        "hidden_sizes=[8]",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert "watch it:" in r.stdout and "held-out" in r.stdout
    r = _cli(
        "-m",
        "intersection_meta.evaluate",
        "--checkpoint",
        str(out),
        "--tasks",
        "2",
        "--adapt-steps",
        "2",
        "--episodes",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    import json

    report = json.loads(r.stdout)
    assert [s["adapt_step"] for s in report["steps"]] == [0, 1, 2]
    assert all(s["return_ci"][0] <= s["return_mean"] <= s["return_ci"][1] for s in report["steps"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-m", "intersection_meta.train", "--algo", "mamll"], "did you mean 'maml'"),
        (["-m", "intersection_meta.train", "--set", "meta_batchsize=3"], "did you mean 'meta_batch_size'"),
        (["-m", "intersection_meta.train", "--set", "other.sped_mps=3"], "did you mean 'speed_mps'"),
        (["-m", "intersection_meta.train", "--resume", "/nonexistent/run"], "no such checkpoint"),
        (["-m", "intersection_meta.evaluate", "--checkpoint", "/nonexistent.pt"], "no such checkpoint"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, fragment):
    r = _cli(*args)
    assert r.returncode == 2, r.stderr
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_repeated_set_keys_route_correctly_and_last_wins():
    from intersection_meta.config import split_overrides

    items = ["meta_lr=0.1", "train.meta_lr=0.2", "other.speed_mps=[6,9]", "seed=3", "pg.gae_lambda=1e-1"]
    run, scenario = split_overrides(items)
    assert run == {"train.meta_lr": 0.2, "train.seed": 3, "pg.gae_lambda": 0.1}
    assert scenario == [("other.speed_mps", [6, 9])]


def test_tasks_are_logged_with_ids_and_can_be_found_again(tmp_path: Path):
    import json

    from intersection_meta.tasks import task_id
    from intersection_meta.trainer import find_logged_task

    config = make_config({**TINY, "iterations": 3})
    train(config, tmp_path / "log", progress=False, tensorboard=False, scenario=tiny_scenario(), stop_after=2)
    train(config, tmp_path / "log", resume=True, progress=False, tensorboard=False)
    records = [json.loads(line) for line in (tmp_path / "log" / "tasks.jsonl").read_text().splitlines()]
    assert [(r["iteration"], r["index"]) for r in records] == [(i, j) for i in (1, 2, 3) for j in range(2)]
    from intersection_meta.seeding import derive_seed

    expected = tiny_scenario().sample_tasks(2, seed=derive_seed(0, 1, 0))  # iteration 1 (k=1), phase 0
    found = find_logged_task(tmp_path / "log", records[2]["task_id"])
    assert found == expected[0] and task_id(found) == records[2]["task_id"]
    assert find_logged_task(tmp_path / "log", "deadbeef") is None


def test_replay_of_a_logged_task_by_id(tmp_path: Path):
    import json
    import os

    run(tmp_path, "r", iterations=1)
    first = json.loads((tmp_path / "r" / "tasks.jsonl").read_text().splitlines()[0])
    env = {**os.environ, "SDL_VIDEODRIVER": "offscreen"}
    snap = tmp_path / "snap.png"
    args = [sys.executable, "-m", "viz.replay", "--checkpoint", str(tmp_path / "r"), "--snapshot", str(snap)]
    r = subprocess.run([*args, "--task-id", first["task_id"]], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert first["task_id"] in r.stdout and snap.exists()
    r = subprocess.run([*args, "--task-id", "deadbeef"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "deadbeef" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("algo", ["maml", "meta_sgd"])
def test_inner_steps_adapt_on_fresh_episodes_per_step(algo: str):
    """With meta.inner_steps = 2 the trainer samples a second inner batch with the once-adapted parameters, and
    the parameters it collects the outer batch with are the learner's adaptation on both batches in order."""
    from intersection_meta.rollout import split_by_task
    from intersection_meta.trainer import Trainer, _Clock

    trainer = Trainer(make_config({**TINY, "algo": algo, "inner_steps": 2}), tiny_scenario())
    tasks = trainer.scenario.sample_tasks(2, seed=0)
    vec_env = trainer._vector_env([t for t in tasks for _ in range(3)])
    try:
        pre = split_by_task(vec_env.collect(trainer.policy, seed=1), 2)
        inner, adapted, extra = trainer._adapt_tasks(vec_env, pre, _Clock())
    finally:
        vec_env.close()
    assert len(extra) == 1 and [len(data) for data in inner] == [2, 2]
    for data, params, first in zip(inner, adapted, pre, strict=True):
        assert data[0] is first and not torch.equal(data[1].obs, first.obs)  # fresh episodes
        expected = trainer.learner.adapt(trainer.learner.params(), data, differentiable=False)
        for k in expected:
            torch.testing.assert_close(params[k], expected[k])
    result_rows = []
    for steps in (1, 2):
        trainer = Trainer(make_config({**TINY, "algo": algo, "inner_steps": steps}), tiny_scenario())
        result_rows.append(trainer.step())
    assert all(math.isfinite(r["outer_loss"]) for r in result_rows)
    assert result_rows[1]["env_steps"] > result_rows[0]["env_steps"]  # the extra batch is counted


def test_memory_estimate_counts_one_batch_per_inner_step_plus_the_outer_one():
    from intersection_meta.trainer import iteration_memory_estimate_bytes as estimate

    one, three = (estimate(make_config({**TINY, "inner_steps": k}), 10, 20) for k in (1, 3))
    per_number = 4 * (10 + 6 + 2 * 32) * 2 * 3 * 20  # obs + 6 columns + activations, x tasks x episodes x steps
    assert (one, three) == (2 * per_number, 4 * per_number)
    assert estimate(make_config({**TINY, "inner_steps": 3, "algo": "multitask"}), 10, 20) == one


def test_directed_fomaml_mode_adapts_the_medium_task_on_fresh_episodes_per_step():
    """directed_mode=fomaml with meta.inner_steps = 2 runs through the per-step path on the medium task as well (the
    list of batches reaches MetaLearner.directed_step) and gives a finite iteration that samples more than one
    step does. The per-step batches themselves are checked on the tasks above (the same _adapt_tasks)."""
    rows = []
    for steps in (1, 2):
        config = make_config({**TINY, "algo": "directed_maml", "directed_mode": "fomaml", "inner_steps": steps})
        rows.append(train.__globals__["Trainer"](config, tiny_scenario()).step())
    assert all(math.isfinite(r["outer_loss"]) and math.isfinite(r["directed_step_norm"]) for r in rows)
    assert rows[1]["env_steps"] > rows[0]["env_steps"]
