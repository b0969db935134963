"""Latent policies (MAESN): per-episode latents through the rollout, the latent loss against closed forms, latent-only
adaptation, the KL prior, the rule-or-go warm start, config checks, checkpoints and the viewer's recordings."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from intersection_meta.adaptation import GroupedPolicy, adapt_and_rollout, repeat_tasks
from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.config import ConfigError, MetaConfig, PGConfig, make_config
from intersection_meta.envs.factory import make_vector_env, observation_and_action_spaces
from intersection_meta.gap_acceptance import gap_acceptance_actions
from intersection_meta.meta import MetaLearner
from intersection_meta.networks import build_policy, draw_latents, latent_kl_to_prior, latent_log_prob
from intersection_meta.pg import episode_advantages, latent_adaptation_loss, latent_loss, policy_loss
from intersection_meta.recording import policy_act
from intersection_meta.rollout import collect_episodes
from intersection_meta.scenario import load_scenario
from intersection_meta.scripted import FASTER
from intersection_meta.trainer import Trainer, train

D = 2  # latent size used throughout


@pytest.fixture(scope="module")
def scene():
    scenario = load_scenario("yield_or_not")
    tasks = scenario.sample_tasks(3, seed=5)
    obs_space, act_space = observation_and_action_spaces(tasks[0])
    return scenario, tasks, obs_space, act_space


def _policy(scene, latent_dim=D, seed=0):
    torch.manual_seed(seed)
    return build_policy(scene[2], scene[3], hidden_sizes=(16,), latent_dim=latent_dim)


def _collect(scene, policy, per_task=4, seed=7, params=None, deterministic=False):
    env = make_vector_env(repeat_tasks(scene[1], per_task), backend="fast")
    try:
        return collect_episodes(env, policy, params, seed=seed, deterministic=deterministic)
    finally:
        env.close()


# --- the maths against independent references --------------------------------------------------------------------
def test_latent_log_prob_and_kl_match_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu, logstd = torch.randn(3, generator=gen), 0.5 * torch.randn(3, generator=gen)
    z = torch.randn(5, 3, generator=gen)
    ref = Normal(mu, logstd.exp()).log_prob(z).sum(-1)
    assert torch.allclose(latent_log_prob(mu, logstd, z), ref, atol=1e-6)
    ref_kl = kl_divergence(Normal(mu, logstd.exp()), Normal(torch.zeros(3), torch.ones(3))).sum()
    assert torch.allclose(latent_kl_to_prior(mu, logstd), ref_kl, atol=1e-6)


def test_draw_latents_has_the_requested_moments_and_mode():
    mu, logstd = torch.tensor([1.5, -2.0]), torch.tensor([math.log(0.5), math.log(2.0)])
    z = draw_latents(mu.expand(20000, -1), logstd.expand(20000, -1), torch.Generator().manual_seed(1))
    assert torch.allclose(z.mean(0), mu, atol=0.05) and torch.allclose(z.std(0), logstd.exp(), atol=0.05)
    assert torch.equal(draw_latents(mu.expand(4, -1), logstd.expand(4, -1), deterministic=True), mu.expand(4, -1))


def test_episode_advantages_normalisation_has_a_floor():
    returns = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert torch.allclose(episode_advantages(returns, False), torch.tensor([-3.0, -1.0, 1.0, 3.0]))
    std = math.sqrt(5.0)
    assert torch.allclose(episode_advantages(returns, True), torch.tensor([-3.0, -1.0, 1.0, 3.0]) / std)
    tiny = torch.tensor([2.0, 2.0 + 1e-6])  # float-noise differences stay ~0 instead of becoming +-1
    assert episode_advantages(tiny, True).abs().max() < 1e-5


# --- rollouts -----------------------------------------------------------------------------------------------------
def test_a_plain_policy_has_no_latent_and_rolls_out_as_before(scene):
    policy = _policy(scene, latent_dim=0)
    assert not any(n.startswith("latent_") for n, _ in policy.named_parameters())
    assert policy.episode_latents(None, 4, torch.Generator()) is None
    assert _collect(scene, policy).latents is None


def test_each_episode_sees_one_latent_appended_to_every_observation(scene):
    policy = _policy(scene)
    eps = _collect(scene, policy)
    obs_dim = scene[2].shape[0]
    assert eps.latents.shape == (12, D) and eps.obs.shape[-1] == obs_dim + D
    valid = eps.mask.bool()
    for t in range(eps.horizon):
        rows = valid[t]
        assert torch.equal(eps.obs[t, rows, obs_dim:], eps.latents[rows])
    assert eps.latents.std(0).min() > 0.1  # sampled, not all equal


def test_grouped_latents_come_from_each_groups_distribution(scene):
    policy = _policy(scene)
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    # groups with theta everywhere reproduce the module's own rollout exactly (same generator draws)
    same = _collect(scene, GroupedPolicy(policy, [theta] * 3, 4))
    own = _collect(scene, policy)
    assert torch.equal(same.latents, own.latents) and torch.equal(same.actions, own.actions)
    # deterministic rollouts use each group's mean
    mus = [torch.tensor([float(k), -float(k)]) for k in range(3)]
    groups = [{**theta, "latent_mu": m} for m in mus]
    eps = _collect(scene, GroupedPolicy(policy, groups, 4), deterministic=True)
    assert torch.equal(eps.latents, torch.stack(mus).repeat_interleave(4, dim=0))


# --- losses and adaptation -----------------------------------------------------------------------------------------
def test_latent_loss_gradient_is_the_closed_form_score(scene):
    policy = _policy(scene)
    eps = _collect(scene, policy)
    params = {k: v.detach().requires_grad_(True) for k, v in policy.named_parameters()}
    loss = latent_loss(policy, params, eps, normalize=False)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    by_name = dict(zip(params, grads, strict=True))
    mu, sigma = params["latent_mu"].detach(), params["latent_logstd"].detach().exp()
    adv = eps.returns - eps.returns.mean()
    z = eps.latents
    # d/dmu log N = (z - mu) / sigma^2 ; d/dlogstd log N = ((z - mu) / sigma)^2 - 1
    expect_mu = -(((z - mu) / sigma**2) * adv[:, None]).mean(0)
    expect_ls = -(((((z - mu) / sigma) ** 2) - 1) * adv[:, None]).mean(0)
    assert torch.allclose(by_name["latent_mu"], expect_mu, atol=1e-5)
    assert torch.allclose(by_name["latent_logstd"], expect_ls, atol=1e-5)
    assert all(g is None for n, g in by_name.items() if not n.startswith("latent_"))  # weights: no gradient


def test_policy_loss_adds_the_latent_term(scene):
    policy = _policy(scene)
    eps = _collect(scene, policy)
    pg = PGConfig(normalize_advantages=False)
    plain = policy_loss(policy, None, eps._replace(latents=None), pg)
    assert torch.allclose(policy_loss(policy, None, eps, pg), plain + latent_loss(policy, None, eps, False))


@pytest.mark.parametrize("sigma_lr", [0.0, 0.5])
def test_adaptation_moves_only_the_latent_by_the_configured_steps(scene, sigma_lr: float):
    policy = _policy(scene)
    eps = _collect(scene, policy)
    learner = MetaLearner(policy, MetaConfig(algo="maml", latent_lr=3.0, latent_sigma_lr=sigma_lr))
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    adapted = learner.adapt(theta, eps, differentiable=False)
    params = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    g_mu, g_ls = torch.autograd.grad(
        latent_adaptation_loss(policy, params, eps), [params["latent_mu"], params["latent_logstd"]]
    )
    assert torch.allclose(adapted["latent_mu"], theta["latent_mu"] - 3.0 * g_mu, atol=1e-6)
    assert torch.allclose(adapted["latent_logstd"], theta["latent_logstd"] - sigma_lr * g_ls, atol=1e-6)
    assert g_mu.abs().sum() > 0
    for name in theta:
        if not name.startswith("latent_"):
            assert torch.equal(adapted[name], theta[name]), name


def test_outer_loss_adds_the_kl_prior_and_meta_sgd_starts_from_the_latent_steps(scene):
    policy = _policy(scene)
    with torch.no_grad():
        policy.latent_mu.copy_(torch.tensor([0.7, -0.2]))
        policy.latent_logstd.copy_(torch.tensor([0.3, -0.1]))
    batches = [(_collect(scene, policy, seed=1), _collect(scene, policy, seed=2))]
    with_kl = MetaLearner(policy, MetaConfig(algo="maml", latent_kl=2.0))
    without = MetaLearner(policy, MetaConfig(algo="maml", latent_kl=0.0))
    theta = with_kl.params()
    expected = 2.0 * kl_divergence(Normal(policy.latent_mu, policy.latent_logstd.exp()), Normal(0.0, 1.0)).sum()
    diff = with_kl.outer_loss(theta, batches)[0] - without.outer_loss(theta, batches)[0]
    assert torch.allclose(diff, expected, atol=1e-5)
    sgd = MetaLearner(policy, MetaConfig(algo="meta_sgd", inner_lr=0.01, latent_lr=4.0, latent_sigma_lr=0.25))
    assert torch.all(sgd.step_sizes["latent_mu"] == 4.0) and torch.all(sgd.step_sizes["latent_logstd"] == 0.25)
    assert all(torch.all(v == 0.01) for n, v in sgd.step_sizes.items() if not n.startswith("latent_"))


def test_evaluation_adapts_latent_means_apart_across_tasks(scene):
    """One adaptation step on different tasks gives different latent means and nothing else changes."""
    policy = _policy(scene)
    learner = MetaLearner(policy, MetaConfig(algo="maml"))
    result = adapt_and_rollout(learner, scene[1], adapt_steps=1, episodes_per_task=6, seed=3, backend="fast")
    post = result.params[1]
    assert len({tuple(p["latent_mu"].tolist()) for p in post}) == len(scene[1])
    assert result.episodes[1][0].latents.shape == (6, D)


# --- configuration ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values,key",
    [
        ({"policy.warm_start": "rule_or_go"}, "policy.warm_start"),
        ({"policy.latent_dim": 2, "meta.inner_estimator": "lvc"}, "meta.inner_estimator"),
        ({"policy.latent_dim": 2, "meta.inner_advantages": "raw"}, "meta.inner_advantages"),
        ({"policy.latent_dim": 2, "train.outer_optimizer": "trpo"}, "train.outer_optimizer"),
        ({"policy.latent_dim": -1}, "policy.latent_dim"),
    ],
)
def test_bad_latent_combinations_are_errors_naming_the_key(values, key):
    with pytest.raises(ConfigError, match="--set: " + re.escape(key)):
        make_config(values, source="--set")


# --- warm start, training, checkpoints, recordings ---------------------------------------------------------------
def _pinned(policy, z: list[float]):
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    return {**theta, "latent_mu": torch.tensor(z)}


def test_rule_or_go_warm_start_selects_waiting_or_going_by_the_latent():
    """After the rule-or-go warm start, a latent pinned at z_1 = +2 goes at the first decision of (nearly) every
    task, and at z_1 = -2 acts as the gap-acceptance rule does on the same observations."""
    config = make_config(
        {"train.scenario": "yield_or_not", "policy.latent_dim": D, "policy.warm_start": "rule_or_go"}
    )
    trainer = Trainer(config)
    assert trainer.warm_start_accuracy > 0.95
    tasks = trainer.scenario.sample_tasks(60, seed=4321)
    env = make_vector_env(tasks, backend="fast")
    try:
        go = collect_episodes(env, trainer.policy, _pinned(trainer.policy, [2.0, 0.0]), seed=1, deterministic=True)
        wait = collect_episodes(env, trainer.policy, _pinned(trainer.policy, [-2.0, 0.0]), seed=1, deterministic=True)
    finally:
        env.close()
    obs_dim = trainer.policy.obs_dim
    assert (go.actions[0] == FASTER).float().mean() > 0.95
    settings = tasks[0].settings
    valid = wait.mask.bool()
    rule = gap_acceptance_actions(wait.obs[valid][:, :obs_dim].numpy(), settings)
    assert (wait.actions[valid].numpy() == rule).mean() > 0.95


def test_latent_run_checkpoints_resumes_and_records(tmp_path: Path):
    values = {
        "train.scenario": "yield_or_not",
        "train.iterations": 2,
        "train.meta_batch_size": 2,
        "train.episodes_per_task": 3,
        "train.eval_tasks": 0,
        "policy.hidden_sizes": [8],
        "policy.latent_dim": D,
        "meta.algo": "directed_maml",
    }
    full = train(make_config(values), tmp_path / "full", progress=False, tensorboard=False)
    cut = train(make_config({**values, "train.iterations": 1}), tmp_path / "cut", progress=False, tensorboard=False)
    resumed = train(make_config(values), cut.out_dir, resume=True, progress=False, tensorboard=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a.policy.latent_dim == D and "latent_mu" in a.raw["policy_state"]
    for (name, x), (_, y) in zip(a.policy.state_dict().items(), b.policy.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert a.policy.input_norm.mean.shape == (a.policy.obs_dim,)  # the latent is not standardised
    # the viewer's actor: one latent per episode, the mean when greedy
    task = a.scenario.sample_tasks(1, seed=0)[0]
    env = make_vector_env([task], backend="fast")
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    pinned = _pinned(a.policy, [1.0, -1.0])
    act = policy_act(a.policy, pinned, env.single_action_space, greedy=True, seed=0)
    inputs = torch.cat([torch.as_tensor(obs, dtype=torch.float32), torch.tensor([[1.0, -1.0]])], dim=1)
    expected = int(a.policy.distribution(inputs, pinned).probs.argmax(-1))
    assert act(obs[0]) == expected
    assert np.isfinite(a.policy.latent_mu.detach().numpy()).all()
