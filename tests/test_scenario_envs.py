"""Every shipped scenario's tasks make envs that pass gymnasium's checker, deterministically under a seed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from intersection_meta import load_scenario, make_env, make_vector_env
from intersection_meta.scenario import available_scenarios

SCENARIOS = available_scenarios()


@pytest.mark.parametrize("name", SCENARIOS)
def test_check_env_for_sampled_and_medium_tasks(name: str):
    scenario = load_scenario(name)
    for task in [*scenario.sample_tasks(2, seed=11), scenario.medium_task()]:
        env = make_env(task, seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # check_env's advisory warnings (e.g. unbounded Box) are not failures
            check_env(env.unwrapped, skip_render_check=True)
        env.close()


def _rollout(task, seed: int, n_steps: int = 8):
    env = make_env(task)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(_action(env, rng))
        out.append(np.append(obs, [reward, terminated, truncated]))
        if terminated or truncated:
            break
    env.close()
    return out


def _action(env, rng):
    space = env.action_space
    if hasattr(space, "n"):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_trajectory(name: str):
    task = load_scenario(name).sample_tasks(1, seed=5)[0]
    a, b = _rollout(task, seed=3), _rollout(task, seed=3)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["yield_left", "cartpole_physics"])
def test_one_vector_env_runs_a_meta_batch_of_different_tasks(name: str):
    tasks = load_scenario(name).sample_tasks(4, seed=2)
    vec = make_vector_env(tasks, seed=0)
    obs, _ = vec.reset()
    assert obs.shape[0] == 4
    if name == "yield_left":  # the other vehicle starts at a task-dependent place
        assert len({tuple(np.round(o, 4)) for o in obs}) == 4
    vec.close()
