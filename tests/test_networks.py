"""Functional policies: the params path equals the module path, and gradients flow through it."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent
from torch.testing import assert_close

from intersection_meta.networks import (
    CategoricalMLP,
    GaussianMLP,
    build_policy,
    params_of,
    sample_actions,
)


@pytest.mark.parametrize(
    "policy", [CategoricalMLP(5, 3), GaussianMLP(5, 2, hidden=(32,))], ids=["categorical", "gaussian"]
)
def test_functional_call_matches_module(policy):
    obs = torch.randn(7, 4, 5)
    own = policy.distribution(obs)
    functional = policy.distribution(obs, params_of(policy))
    action = sample_actions(own, torch.Generator().manual_seed(0))
    assert own.batch_shape == (7, 4)
    assert_close(own.log_prob(action), functional.log_prob(action))


def test_params_path_uses_given_tensors_and_leaves_module_alone():
    policy = CategoricalMLP(3, 2, hidden=(4,))
    params = params_of(policy)
    shifted = {k: v + 1.0 for k, v in params.items()}
    obs = torch.randn(5, 3)
    logits = policy.distribution(obs, shifted).logits
    assert not torch.allclose(logits, policy.distribution(obs).logits)
    logits.sum().backward()
    assert all(p.grad is not None for p in policy.parameters())  # gradients reach theta through the shift
    assert all(params[k] is p for k, p in policy.named_parameters())


def test_gaussian_log_std_is_state_independent_parameter():
    policy = GaussianMLP(2, 3, init_std=0.5)
    dist = policy.distribution(torch.randn(4, 2))
    assert isinstance(dist, Independent)
    assert_close(dist.base_dist.scale, torch.full((4, 3), 0.5))
    assert "log_std" in params_of(policy)
    with pytest.raises(ValueError, match="init_std"):
        GaussianMLP(2, 3, init_std=0.0)


def test_initial_categorical_policy_is_near_uniform():
    probs = CategoricalMLP(4, 3).distribution(torch.randn(100, 4)).probs
    assert_close(probs, torch.full_like(probs, 1 / 3), atol=0.05, rtol=0)


def test_sampling_is_reproducible_and_matches_distribution():
    dist = Categorical(probs=torch.tensor([0.2, 0.8]).expand(20000, 2))
    a1 = sample_actions(dist, torch.Generator().manual_seed(5))
    a2 = sample_actions(dist, torch.Generator().manual_seed(5))
    assert torch.equal(a1, a2)
    assert a1.float().mean().item() == pytest.approx(0.8, abs=0.02)
    assert torch.equal(sample_actions(dist, deterministic=True), torch.ones(20000, dtype=torch.long))
    gauss = GaussianMLP(1, 1, init_std=2.0).distribution(torch.zeros(20000, 1))
    x = sample_actions(gauss, torch.Generator().manual_seed(0))
    assert x.std().item() == pytest.approx(2.0, rel=0.05)


def test_build_policy_picks_by_space():
    box = gym.spaces.Box(-1, 1, shape=(2, 3), dtype=np.float32)
    cat = build_policy(box, gym.spaces.Discrete(3), hidden_sizes=(8,))
    assert isinstance(cat, CategoricalMLP) and cat.obs_dim == 6 and cat.n_actions == 3
    gauss = build_policy(box, gym.spaces.Box(-2, 2, shape=(2,)), hidden_sizes=(8,))
    assert isinstance(gauss, GaussianMLP) and gauss.act_dim == 2
    with pytest.raises(ValueError, match="action space"):
        build_policy(box, gym.spaces.MultiDiscrete([2, 2]))
    with pytest.raises(ValueError, match="observation space"):
        build_policy(gym.spaces.Discrete(4), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="activation"):
        CategoricalMLP(2, 2, activation="sigmoidish")


@pytest.mark.parametrize("kind", ["categorical", "gaussian"])
def test_grouped_distribution_equals_one_call_per_parameter_set(kind):
    """``GroupedPolicy`` evaluates K parameter sets in one batched call; it must match K separate calls."""
    from intersection_meta.adaptation import GroupedPolicy

    torch.manual_seed(0)
    policy = CategoricalMLP(6, 3) if kind == "categorical" else GaussianMLP(6, 2)
    params = [{k: v.detach() + 0.1 * torch.randn_like(v) for k, v in policy.named_parameters()} for _ in range(4)]
    obs = torch.randn(4 * 5, 6)
    with torch.no_grad():
        grouped = GroupedPolicy(policy, params, group_size=5).distribution(obs)
        separate = [policy.distribution(chunk, p) for chunk, p in zip(obs.split(5), params, strict=True)]
    # Bit-identical with one torch thread (the CLIs' default); with more, matmul blocking may differ in the last bit.
    if kind == "categorical":
        torch.testing.assert_close(grouped.logits, torch.cat([d.logits for d in separate]))
    else:
        torch.testing.assert_close(grouped.base_dist.loc, torch.cat([d.base_dist.loc for d in separate]))
        torch.testing.assert_close(grouped.base_dist.scale, torch.cat([d.base_dist.scale for d in separate]))
    with pytest.raises(ValueError, match="expected 20 observations"):
        GroupedPolicy(policy, params, group_size=5).distribution(obs[:7])
