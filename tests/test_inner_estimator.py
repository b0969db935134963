"""The inner-loss options: ProMP's LVC surrogate (``meta.inner_estimator``) and ``meta.inner_advantages``.

Checked against closed forms: on a 3-armed bandit the expected Hessian of the LVC surrogate is the exact Hessian
of the expected reward, while REINFORCE's misses the score term ``E[r grad log pi grad log pi^T]``.
"""

from __future__ import annotations

import pytest
import torch

from intersection_meta.config import ConfigError, MetaConfig, PGConfig, make_config
from intersection_meta.meta import MetaLearner
from intersection_meta.meta.learners import inner_pg
from intersection_meta.networks import CategoricalMLP, params_of
from intersection_meta.pg import SURROGATES, lvc_loss, policy_loss, reinforce_loss
from intersection_meta.registry import INNER_ESTIMATORS
from tests.test_meta import _cartpole_batches

REWARDS = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def _bandit_surrogate(surrogate, logits: torch.Tensor) -> torch.Tensor:
    """The surrogate's exact expectation over the three arms: every arm is one "step" whose mask is its
    (constant) probability, so ``masked_mean`` is the expectation under the sampling policy."""
    log_probs = torch.log_softmax(logits, dim=0)
    weights = log_probs.detach().exp()
    return -surrogate(log_probs, REWARDS, weights)  # minus the loss: the estimated expected reward


def test_registry_names_every_surrogate():
    assert set(INNER_ESTIMATORS) == set(SURROGATES)


def test_lvc_value_is_mean_advantage_and_gradient_equals_reinforce():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 3, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, 3, (5, 4))
    adv = torch.randn(5, 4, dtype=torch.float64)
    mask = (torch.rand(5, 4) > 0.2).to(torch.float64)
    log_probs = torch.distributions.Categorical(logits=logits).log_prob(actions)
    lvc, rf = lvc_loss(log_probs, adv, mask), reinforce_loss(log_probs, adv, mask)
    assert lvc.item() == pytest.approx(-(adv * mask).sum().item() / mask.sum().item())
    (g_lvc,) = torch.autograd.grad(lvc, logits, retain_graph=True)
    (g_rf,) = torch.autograd.grad(rf, logits)
    torch.testing.assert_close(g_lvc, g_rf)


def test_lvc_expected_hessian_is_the_exact_hessian_and_reinforce_misses_the_score_term():
    logits = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)

    def expected_reward(z):
        return (torch.softmax(z, dim=0) * REWARDS).sum()

    exact = torch.autograd.functional.hessian(expected_reward, logits)
    lvc = torch.autograd.functional.hessian(lambda z: _bandit_surrogate(lvc_loss, z), logits)
    reinforce = torch.autograd.functional.hessian(lambda z: _bandit_surrogate(reinforce_loss, z), logits)
    torch.testing.assert_close(lvc, exact)
    # Closed form of the missing term: E[r * s s^T] with the softmax score s = onehot(a) - pi.
    pi = torch.softmax(logits, dim=0)
    scores = torch.eye(3, dtype=torch.float64) - pi
    score_term = sum(pi[a] * REWARDS[a] * torch.outer(scores[a], scores[a]) for a in range(3))
    torch.testing.assert_close(reinforce + score_term, exact)
    assert (reinforce - exact).abs().max() > 0.05  # the difference is not negligible here


def test_inner_pg_maps_inner_advantages():
    for normalize in (True, False):
        pg = PGConfig(normalize_advantages=normalize)
        assert inner_pg(pg, MetaConfig(inner_advantages="pg")) is pg
        assert inner_pg(pg, MetaConfig(inner_advantages="normalized")).normalize_advantages is True
        assert inner_pg(pg, MetaConfig(inner_advantages="raw")).normalize_advantages is False
        assert inner_pg(pg, MetaConfig(inner_advantages="raw")).gamma == pg.gamma


def _learner(**meta):
    torch.manual_seed(3)
    policy = CategoricalMLP(4, 2, hidden=(16,))
    return MetaLearner(policy, MetaConfig(algo="maml", inner_lr=0.5, **meta), PGConfig())


def test_lvc_keeps_the_adaptation_but_changes_the_second_order_meta_gradient():
    reference = _learner()
    batches = _cartpole_batches(reference)
    grads, adapted = {}, {}
    for name in ("reinforce", "lvc"):
        learner = _learner(inner_estimator=name)
        learner.policy.load_state_dict(reference.policy.state_dict())
        adapted[name] = learner.adapt(learner.params(), batches[0][0], differentiable=False)
        loss, _ = learner.outer_loss(learner.params(), batches)
        loss.backward()
        grads[name] = torch.cat([p.grad.flatten() for p in params_of(learner.policy).values()])
    for k in adapted["reinforce"]:  # same gradient, so the same adapted parameters
        torch.testing.assert_close(adapted["lvc"][k], adapted["reinforce"][k])
    assert (grads["lvc"] - grads["reinforce"]).norm() > 1e-3 * grads["reinforce"].norm()


def test_inner_advantages_change_the_adaptation_only():
    reference = _learner()
    batches = _cartpole_batches(reference)
    inner, outer = batches[0]
    learner = _learner(inner_advantages="raw")
    learner.policy.load_state_dict(reference.policy.state_dict())
    theta = learner.params()
    raw = learner.adapt(theta, inner, differentiable=False)
    default = reference.adapt(reference.params(), inner, differentiable=False)
    assert any(not torch.allclose(raw[k], default[k]) for k in raw)
    # The outer loss keeps pg's (normalised) advantages: the same value at the same parameters.
    assert learner.loss_fn(theta, outer).item() == pytest.approx(reference.loss_fn(theta, outer).item())
    assert learner.inner_loss_fn(theta, inner).item() == pytest.approx(
        policy_loss(learner.policy, theta, inner, PGConfig(normalize_advantages=False)).item()
    )


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"meta\.inner_estimator.*reinforce.*lvc"):
        MetaConfig(inner_estimator="promp")
    with pytest.raises(ConfigError, match=r"run\.yaml.*meta\.inner_advantages.*pg.*normalized.*raw"):
        make_config({"meta": {"inner_advantages": "whitened"}}, source="run.yaml")
    with pytest.raises(ValueError, match="unknown surrogate 'ppo'"):
        policy_loss(None, None, None, PGConfig(), surrogate="ppo")
    with pytest.raises(ValueError, match="custom loss_fn"):
        MetaLearner(CategoricalMLP(4, 2, hidden=(8,)), MetaConfig(inner_estimator="lvc"), loss_fn=lambda p, e: 0)
