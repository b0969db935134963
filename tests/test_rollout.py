"""Rollouts against real gymnasium vector envs (CartPole: reward 1 per step, so return == length)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from intersection_meta.networks import build_policy
from intersection_meta.rollout import Episodes, collect_episodes, concat, index_episodes, split_by_task


def cartpole_env(n: int, max_episode_steps: int = 20) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1", max_episode_steps=max_episode_steps) for _ in range(n)]
    )


@pytest.fixture(scope="module")
def cartpole_episodes() -> Episodes:
    env = cartpole_env(12)
    torch.manual_seed(0)
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(8,))
    return collect_episodes(env, policy, None, seed=3)


def test_cartpole_episode_structure(cartpole_episodes):
    eps = cartpole_episodes
    horizon, n = eps.mask.shape
    assert n == 12 and horizon == int(eps.lengths.max()) <= 20
    assert eps.obs.shape == (horizon, n, 4) and eps.actions.shape == (horizon, n)
    assert torch.equal(eps.mask, (torch.arange(horizon)[:, None] < eps.lengths[None]).float())
    assert torch.equal(eps.returns, eps.lengths.float())
    assert torch.equal(eps.rewards, eps.mask)
    assert (eps.obs * (1 - eps.mask)[..., None]).abs().sum() == 0
    # Every episode ends exactly once: terminated at its last step or truncated at the time limit.
    ended_by_term = eps.terminated.any(0)
    assert torch.equal(eps.terminated.sum(0), ended_by_term.long())
    assert torch.equal(eps.truncated, ~ended_by_term)
    # Truncation only at the time limit (an episode that terminates on step 20 counts as terminated).
    assert (eps.lengths[eps.truncated] == 20).all() and (eps.lengths[~eps.truncated] <= 20).all()
    assert not eps.truncated[eps.lengths < 20].any()
    assert eps.truncated.any() and (~eps.truncated).any()  # this seed exercises both
    for b in torch.nonzero(ended_by_term).flatten():
        assert eps.terminated[eps.lengths[b] - 1, b]
    assert eps.crashed is None and eps.arrived is None


def test_last_obs_is_the_final_observation():
    """Replaying each sub-env alone with the recorded actions reproduces observations and ``last_obs``."""
    env = cartpole_env(3)
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(8,))
    eps = collect_episodes(env, policy, None, seed=11)
    for b in range(3):
        single = gym.make("CartPole-v1", max_episode_steps=20)
        obs, _ = single.reset(seed=11 + b)
        for t in range(int(eps.lengths[b])):
            np.testing.assert_allclose(eps.obs[t, b].numpy(), obs, rtol=1e-6)
            obs, *_ = single.step(int(eps.actions[t, b]))
        np.testing.assert_allclose(eps.last_obs[b].numpy(), obs, rtol=1e-6)


def test_same_seed_same_episodes_different_seed_differs():
    policy = build_policy(cartpole_env(1).single_observation_space, gym.spaces.Discrete(2), hidden_sizes=(8,))
    a = collect_episodes(cartpole_env(4), policy, None, seed=5)
    b = collect_episodes(cartpole_env(4), policy, None, seed=5)
    c = collect_episodes(cartpole_env(4), policy, None, seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a[:9], b[:9], strict=False))
    assert not torch.equal(a.obs[0], c.obs[0])


def test_max_steps_truncates_running_episodes():
    env = cartpole_env(4, max_episode_steps=500)
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(8,))
    eps = collect_episodes(env, policy, None, seed=0, max_steps=5, deterministic=True)
    assert eps.horizon <= 5
    assert torch.equal(eps.truncated, eps.lengths == 5)


def test_continuous_actions_clipped_for_env_but_stored_raw():
    env = gym.vector.SyncVectorEnv([lambda: gym.make("Pendulum-v1", max_episode_steps=10) for _ in range(3)])
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(8,), init_std=5.0)
    eps = collect_episodes(env, policy, None, seed=0)
    assert eps.actions.shape == (10, 3, 1)
    assert eps.actions.abs().max() > 2.0  # raw samples beyond the [-2, 2] bounds are kept
    assert eps.truncated.all() and torch.equal(eps.lengths, torch.full((3,), 10))
    # Pendulum's reward is bounded below by -(pi^2 + 0.1 * 8^2 + 0.001 * 2^2): clipped torques reached
    # the env.
    assert eps.rewards.min() >= -(np.pi**2 + 0.1 * 64 + 0.001 * 4) - 1e-4


class _OutcomeEnv(gym.Env):
    """Ends at step 2 (terminated, crashed) or 3 (arrived) depending on the seed; reports reward terms."""

    observation_space = gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # autoreset passes no seed: keep the same outcome
            self.crash = seed % 2 == 0
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        crashed = self.crash and self.t == 2
        arrived = not self.crash and self.t == 3
        info = {
            "crashed": crashed,
            "arrived": arrived,
            "rewards": {"speed": 0.5, "collision": float(crashed)},
        }
        return np.full(1, self.t, dtype=np.float32), 1.0, crashed or arrived, False, info


def test_outcome_infos_and_reward_terms_are_summarised():
    env = gym.vector.SyncVectorEnv([_OutcomeEnv for _ in range(4)])
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(4,))
    eps = collect_episodes(env, policy, None, seed=10)  # seeds 10..13: crash, arrive, crash, arrive
    assert eps.crashed.tolist() == [True, False, True, False]
    assert eps.arrived.tolist() == [False, True, False, True]
    assert eps.lengths.tolist() == [2, 3, 2, 3]
    torch.testing.assert_close(eps.reward_terms["speed"], 0.5 * eps.lengths.float())
    torch.testing.assert_close(eps.reward_terms["collision"], eps.crashed.float())
    assert eps.last_obs[:, 0].tolist() == [2.0, 3.0, 2.0, 3.0]
    assert sorted(eps.reward_terms) == ["collision", "speed"]  # gymnasium's "_key" masks are not terms


def test_split_by_task_and_concat_round_trip(cartpole_episodes):
    parts = split_by_task(cartpole_episodes, 3)
    assert [p.n_episodes for p in parts] == [4, 4, 4]
    assert torch.equal(parts[1].lengths, cartpole_episodes.lengths[4:8])
    assert parts[1].horizon == int(parts[1].lengths.max())
    joined = concat(parts)
    for name in ("obs", "actions", "rewards", "mask", "terminated", "lengths", "last_obs", "truncated"):
        assert torch.equal(getattr(joined, name), getattr(cartpole_episodes, name)), name
    sub = index_episodes(cartpole_episodes, [0, 5])
    assert torch.equal(sub.returns, cartpole_episodes.returns[[0, 5]])
    with pytest.raises(ValueError, match="equal task groups"):
        split_by_task(cartpole_episodes, 5)
    with pytest.raises(ValueError):
        concat([])


def test_same_step_autoreset_gives_the_same_episodes():
    def make(mode):
        return gym.vector.SyncVectorEnv(
            [lambda: gym.make("CartPole-v1", max_episode_steps=20) for _ in range(4)], autoreset_mode=mode
        )

    policy = build_policy(
        make(gym.vector.AutoresetMode.NEXT_STEP).single_observation_space, gym.spaces.Discrete(2), hidden_sizes=(8,)
    )
    a = collect_episodes(make(gym.vector.AutoresetMode.NEXT_STEP), policy, None, seed=2)
    b = collect_episodes(make(gym.vector.AutoresetMode.SAME_STEP), policy, None, seed=2)
    for name in ("obs", "actions", "mask", "terminated", "lengths", "last_obs", "truncated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    with pytest.raises(ValueError, match="autoreset"):
        collect_episodes(make(gym.vector.AutoresetMode.DISABLED), policy, None, seed=2)


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_fast_backend_active_mask_gives_the_same_episodes(action):
    """collect_episodes with the fast backend's step_active (ended scenes held) returns bit-identical
    Episodes to plain step() with NEXT_STEP autoreset, including through a GroupedPolicy."""
    from intersection_meta.adaptation import GroupedPolicy, repeat_tasks
    from intersection_meta.envs.fast import FastIntersectionVectorEnv
    from intersection_meta.scenario import load_scenario

    scenario = load_scenario("yield_left", overrides=[("action.type", action)])
    tasks = scenario.sample_tasks(4, seed=5)
    env = FastIntersectionVectorEnv(repeat_tasks(tasks, 6))
    torch.manual_seed(1)
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(16,))
    params = [{k: v.detach() + 0.3 * torch.randn_like(v) for k, v in policy.named_parameters()} for _ in tasks]
    for pol in (policy, GroupedPolicy(policy, params, 6)):
        for seed in (0, 1):
            fast = collect_episodes(env, pol, None, seed=seed)
            plain = collect_episodes(env, pol, None, seed=seed, use_active_mask=False)
            assert fast.lengths.min() < fast.lengths.max()  # some scenes were held
            for name, value in fast._asdict().items():
                other = getattr(plain, name)
                if isinstance(value, dict):
                    assert value.keys() == other.keys()
                    assert all(torch.equal(value[k], other[k]) for k in value), name
                else:
                    assert (value is None and other is None) or torch.equal(value, other), name
