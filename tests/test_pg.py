"""Policy-gradient estimators against hand-derived closed forms."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from intersection_meta.config import PGConfig
from intersection_meta.networks import CategoricalMLP
from intersection_meta.pg import (
    LinearFeatureBaseline,
    baseline_features,
    compute_advantages,
    discounted_returns,
    fit_linear_baseline,
    gae,
    masked_mean,
    normalize_advantages,
    policy_loss,
    reinforce_loss,
)
from intersection_meta.rollout import Episodes

F64 = torch.float64


def make_episodes(rewards, lengths, terminated_last, obs=None, last_obs=None, actions=None) -> Episodes:
    """Hand-built episodes: ``rewards [T, B]``; ``terminated_last[b]`` says whether episode b terminated."""
    rewards = torch.as_tensor(rewards, dtype=F64)
    horizon, n = rewards.shape
    lengths = torch.as_tensor(lengths)
    mask = (torch.arange(horizon)[:, None] < lengths[None]).to(F64)
    terminated = torch.zeros(horizon, n, dtype=torch.bool)
    for b in range(n):
        if terminated_last[b]:
            terminated[lengths[b] - 1, b] = True
    obs = torch.zeros(horizon, n, 1, dtype=F64) if obs is None else obs
    return Episodes(
        obs=obs * mask[..., None],
        actions=torch.zeros(horizon, n, dtype=torch.long) if actions is None else actions,
        rewards=rewards * mask,
        mask=mask,
        terminated=terminated,
        lengths=lengths,
        last_obs=torch.zeros(n, obs.shape[-1], dtype=F64) if last_obs is None else last_obs,
        truncated=torch.tensor([not t for t in terminated_last]),
        returns=(rewards * mask).sum(0),
    )


def test_discounted_returns_closed_form():
    gamma = 0.9
    rewards = torch.tensor([[1.0, 2.0], [2.0, 0.0], [3.0, 7.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]], dtype=F64)
    expected = torch.tensor([[1 + 0.9 * 2 + 0.81 * 3, 2.0], [2 + 0.9 * 3, 0.0], [3.0, 0.0]], dtype=F64)
    assert_close(discounted_returns(rewards, mask, gamma), expected)


def test_discounted_returns_geometric_series():
    gamma, horizon = 0.97, 50
    g = discounted_returns(torch.ones(horizon, 1, dtype=F64), torch.ones(horizon, 1, dtype=F64), gamma)
    t = torch.arange(horizon, dtype=F64)
    assert_close(g[:, 0], (1 - gamma ** (horizon - t)) / (1 - gamma))


@pytest.mark.parametrize("terminated", [True, False], ids=["terminated", "truncated"])
def test_gae_lambda_one_zero_values_is_return_plus_bootstrap(terminated):
    gamma, length, v_last = 0.9, 4, 5.0
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0], [0.0]], dtype=F64)
    eps = make_episodes(rewards, [length], [terminated])
    adv = gae(
        eps.rewards,
        torch.zeros(5, 1, dtype=F64),
        torch.tensor([v_last], dtype=F64),
        eps.mask,
        eps.terminated,
        gamma,
        1.0,
    )
    t = torch.arange(length, dtype=F64)
    expected = discounted_returns(eps.rewards, eps.mask, gamma)[:length, 0]
    if not terminated:
        expected = expected + gamma ** (length - t) * v_last
    assert_close(adv[:length, 0], expected)
    assert adv[length:].abs().sum() == 0


def test_gae_infinite_horizon_truncation():
    """Constant reward 1 and the true value 1/(1-gamma): truncated episodes have zero advantage (SB3 test)."""
    gamma, horizon = 0.99, 20
    value = 1.0 / (1.0 - gamma)
    eps = make_episodes(torch.ones(horizon, 1), [horizon], [False])
    values = torch.full((horizon, 1), value, dtype=F64)
    for lam in (0.0, 0.95, 1.0):
        adv = gae(eps.rewards, values, torch.tensor([value], dtype=F64), eps.mask, eps.terminated, gamma, lam)
        assert_close(adv, torch.zeros_like(adv), atol=1e-10, rtol=0)
        # The value target A + V equals 1/(1-gamma) at every step.
        assert_close(adv + values, values)
    # Treating the same episode as terminated loses the tail: last delta = 1 - 1/(1-gamma).
    term = eps._replace(terminated=torch.nn.functional.one_hot(torch.tensor([horizon - 1]), horizon).T.bool())
    adv = gae(term.rewards, values, torch.tensor([value], dtype=F64), term.mask, term.terminated, gamma, 0.0)
    assert adv[-1, 0].item() == pytest.approx(1.0 - value)


def test_gae_lambda_zero_is_one_step_td():
    gamma = 0.5
    rewards = torch.tensor([[1.0], [2.0], [3.0]], dtype=F64)
    values = torch.tensor([[0.5], [1.0], [2.0]], dtype=F64)
    eps = make_episodes(rewards, [3], [True])
    adv = gae(eps.rewards, values, torch.tensor([9.0], dtype=F64), eps.mask, eps.terminated, gamma, 0.0)
    assert_close(adv[:, 0], torch.tensor([1 + 0.5 * 1.0 - 0.5, 2 + 0.5 * 2.0 - 1.0, 3 - 2.0], dtype=F64))


def test_gae_matches_loop_reference_on_ragged_batch():
    gen = torch.Generator().manual_seed(0)
    horizon, n, gamma, lam = 7, 5, 0.95, 0.8
    lengths = [7, 3, 1, 5, 6]
    term_flags = [True, False, True, False, True]
    eps = make_episodes(torch.randn(horizon, n, generator=gen, dtype=F64), lengths, term_flags)
    values = torch.randn(horizon, n, generator=gen, dtype=F64)
    last = torch.randn(n, generator=gen, dtype=F64)
    adv = gae(eps.rewards, values, last, eps.mask, eps.terminated, gamma, lam)
    for b, length in enumerate(lengths):
        a_next = 0.0
        for t in range(length - 1, -1, -1):
            if t == length - 1:
                v_next = 0.0 if term_flags[b] else last[b].item()
            else:
                v_next = values[t + 1, b].item()
            delta = eps.rewards[t, b].item() + gamma * v_next - values[t, b].item()
            a_next = delta + (gamma * lam * a_next if t < length - 1 else 0.0)
            assert adv[t, b].item() == pytest.approx(a_next, rel=1e-12, abs=1e-12)
        assert adv[length:, b].abs().sum() == 0


def test_normalize_advantages_ignores_padding():
    adv = torch.tensor([[1.0, 3.0], [2.0, 100.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=F64)
    out = normalize_advantages(adv, mask)
    valid = torch.tensor([1.0, 3.0, 2.0], dtype=F64)
    expected = (valid - valid.mean()) / (valid.std(unbiased=False) + 1e-8)
    assert_close(torch.stack([out[0, 0], out[0, 1], out[1, 0]]), expected)
    assert out[1, 1] == 0


def test_masked_mean_and_reinforce_loss():
    logp = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]], dtype=F64, requires_grad=True)
    adv = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=F64)
    loss = reinforce_loss(logp, adv, mask)
    assert loss.item() == pytest.approx(-(-1 * 1 + -2 * 2 + -3 * 3) / 3)
    loss.backward()
    assert_close(logp.grad, -adv * mask / 3)
    assert masked_mean(adv, torch.zeros_like(mask)).item() == 0


def test_linear_baseline_recovers_exact_linear_value():
    """Rewards built so the discounted return is exactly phi(s_t, t) . w*: the fit recovers w*."""
    gen = torch.Generator().manual_seed(3)
    horizon, n, gamma = 60, 6, 0.9
    obs = torch.randn(horizon, n, 2, generator=gen, dtype=F64)
    t = torch.arange(horizon, dtype=F64)[:, None].expand(horizon, n)
    w_true = torch.randn(2 * 2 + 4, generator=gen, dtype=F64)
    v = baseline_features(obs, t) @ w_true  # [T, B]
    v_next = torch.cat([v[1:], torch.zeros(1, n, dtype=F64)])  # terminated at the horizon
    eps = make_episodes(v - gamma * v_next, [horizon] * n, [True] * n, obs=obs)
    weights = fit_linear_baseline(eps, gamma, reg=1e-12)
    # u, u^2, u^3 are nearly collinear over short episodes, so the weights are only well determined to ~1e-6.
    assert_close(weights, w_true, rtol=1e-5, atol=1e-5)
    values, last_values = LinearFeatureBaseline.fit(eps, gamma, reg=1e-12).predict(eps)
    assert_close(values, v, rtol=1e-6, atol=1e-6)
    assert last_values.shape == (n,)
    # A perfect baseline on a terminated episode with lambda = 1 leaves zero advantage.
    adv = compute_advantages(
        eps._replace(rewards=eps.rewards),
        PGConfig(gamma=gamma, gae_lambda=1.0, baseline_reg=1e-12, normalize_advantages=False),
    )
    assert_close(adv, torch.zeros_like(adv), atol=1e-6, rtol=0)


def test_linear_baseline_rejects_empty():
    eps = make_episodes(torch.ones(2, 1), [0], [False])
    with pytest.raises(ValueError, match="no valid step"):
        fit_linear_baseline(eps, 0.9)


def test_policy_loss_gradient_matches_manual_surrogate():
    torch.manual_seed(0)
    policy = CategoricalMLP(3, 2, hidden=(8,)).double()
    gen = torch.Generator().manual_seed(1)
    horizon, n = 6, 4
    obs = torch.randn(horizon, n, 3, generator=gen, dtype=F64)
    actions = torch.randint(0, 2, (horizon, n), generator=gen)
    eps = make_episodes(
        torch.rand(horizon, n, generator=gen, dtype=F64),
        [6, 4, 5, 2],
        [True, False, True, False],
        obs=obs,
        actions=actions,
    )
    params = dict(policy.named_parameters())
    loss = policy_loss(policy, params, eps, PGConfig(gamma=0.9, gae_lambda=0.95))
    adv = compute_advantages(eps, PGConfig(gamma=0.9, gae_lambda=0.95))
    manual = -(policy.distribution(obs).log_prob(actions) * adv * eps.mask).sum() / eps.mask.sum()
    assert_close(loss, manual)
    g1 = torch.autograd.grad(loss, list(params.values()))
    g2 = torch.autograd.grad(manual, list(params.values()))
    for a, b in zip(g1, g2, strict=False):
        assert_close(a, b)
    assert adv.requires_grad is False


def test_entropy_bonus_subtracts_masked_mean_entropy():
    """policy_loss(entropy_coef=c) = policy_loss(0) - c * masked mean entropy (closed form of the bonus)."""
    import gymnasium as gym

    from intersection_meta.networks import build_policy
    from intersection_meta.pg import masked_mean, policy_loss
    from intersection_meta.rollout import collect_episodes

    env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=15)] * 3)
    policy = build_policy(env.single_observation_space, env.single_action_space, hidden_sizes=(8,))
    eps = collect_episodes(env, policy, None, seed=0)
    plain = policy_loss(policy, None, eps, PGConfig())
    bonus = policy_loss(policy, None, eps, PGConfig(entropy_coef=0.3))
    entropy = masked_mean(policy.distribution(eps.obs).entropy(), eps.mask)
    torch.testing.assert_close(bonus, plain - 0.3 * entropy)


def test_no_bootstrap_treats_truncation_like_termination():
    """bootstrap_truncated=False on a truncated batch equals the same batch marked terminated at its last step."""
    from intersection_meta.pg import compute_advantages
    from intersection_meta.rollout import Episodes

    gen = torch.Generator().manual_seed(0)
    horizon, n = 5, 6
    obs = torch.randn(horizon, n, 3, generator=gen)
    rewards = torch.rand(horizon, n, generator=gen)
    mask = torch.ones(horizon, n)
    truncated = Episodes(
        obs=obs,
        actions=torch.zeros(horizon, n, dtype=torch.long),
        rewards=rewards,
        mask=mask,
        terminated=torch.zeros(horizon, n, dtype=torch.bool),
        lengths=torch.full((n,), horizon),
        last_obs=torch.randn(n, 3, generator=gen) + 5.0,
        truncated=torch.ones(n, dtype=torch.bool),
        returns=rewards.sum(0),
    )
    terminated_flags = torch.zeros(horizon, n, dtype=torch.bool)
    terminated_flags[-1] = True
    terminated = truncated._replace(terminated=terminated_flags, truncated=torch.zeros(n, dtype=torch.bool))
    pg = PGConfig(gamma=0.9, gae_lambda=0.95, normalize_advantages=False)
    a = compute_advantages(truncated, replace(pg, bootstrap_truncated=False))
    b = compute_advantages(terminated, pg)
    torch.testing.assert_close(a, b)
    c = compute_advantages(truncated, pg)  # bootstrapping changes the last step
    assert not torch.allclose(a[-1], c[-1])
