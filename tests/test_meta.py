"""Meta-learners against analytic meta-gradients on the scalar quadratic L(theta) = 1/2 (theta - c)^2."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from torch import nn

from intersection_meta.config import ConfigError, MetaConfig, PGConfig
from intersection_meta.meta import MetaLearner
from intersection_meta.networks import CategoricalMLP, params_of
from intersection_meta.registry import ALGORITHMS
from intersection_meta.rollout import collect_episodes, split_by_task

THETA0, C, A = 1.7, -0.4, 0.3


class Scalar(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(value, dtype=torch.float64))


def quadratic(params, c):
    """The 'episodes' of a quadratic task are just its centre c."""
    return 0.5 * (params["theta"] - c) ** 2


def learner_for(name: str, **cfg):
    module = Scalar(THETA0)
    return MetaLearner(module, MetaConfig(algo=name, inner_lr=A, **cfg), loss_fn=quadratic), module


def meta_grads(name: str, steps: int = 1):
    learner, module = learner_for(name, inner_steps=steps)
    loss, _ = learner.outer_loss(learner.params(), [(C, C)])
    loss.backward()
    alpha_grad = None if learner.step_sizes is None else learner.step_sizes["theta"].grad.item()
    return module.theta.grad.item(), alpha_grad


@pytest.mark.parametrize("name", ["maml", "directed_maml", "meta_sgd", "directed_meta_sgd"])
def test_second_order_meta_gradient(name):
    grad, _ = meta_grads(name)
    assert grad == pytest.approx((1 - A) ** 2 * (THETA0 - C), rel=1e-12)


def test_maml_two_inner_steps():
    grad, _ = meta_grads("maml", steps=2)
    assert grad == pytest.approx((1 - A) ** 4 * (THETA0 - C), rel=1e-12)


@pytest.mark.parametrize("name", ["fomaml", "directed_fomaml"])
def test_first_order_meta_gradient(name):
    grad, alpha_grad = meta_grads(name)
    assert grad == pytest.approx((1 - A) * (THETA0 - C), rel=1e-12)
    assert alpha_grad is None


def test_meta_sgd_step_size_gradient():
    _, alpha_grad = meta_grads("meta_sgd")
    assert alpha_grad == pytest.approx(-(1 - A) * (THETA0 - C) ** 2, rel=1e-12)


def test_outer_loss_averages_tasks():
    learner, module = learner_for("maml")
    cs = [C, 0.9, 2.5]
    loss, info = learner.outer_loss(learner.params(), [(c, c) for c in cs])
    loss.backward()
    expected = sum((1 - A) ** 2 * (THETA0 - c) for c in cs) / len(cs)
    assert module.theta.grad.item() == pytest.approx(expected, rel=1e-12)
    assert info["outer_loss"] == pytest.approx(sum(0.5 * (1 - A) ** 2 * (THETA0 - c) ** 2 for c in cs) / 3)
    assert info["inner_loss"] == pytest.approx(sum(0.5 * (THETA0 - c) ** 2 for c in cs) / 3)


def test_adapt_closed_form_and_original_untouched():
    learner, module = learner_for("maml", inner_steps=3)
    adapted = learner.adapt(learner.params(), C)
    assert adapted["theta"].item() == pytest.approx(C + (1 - A) ** 3 * (THETA0 - C), rel=1e-12)
    assert module.theta.item() == THETA0
    detached = learner.adapt(learner.params(), C, differentiable=False)
    assert not detached["theta"].requires_grad
    assert detached["theta"].item() == pytest.approx(adapted["theta"].item(), rel=1e-12)


@pytest.mark.parametrize("decay,iteration", [(1.0, 0), (1.0, 5), (0.9, 3)])
def test_directed_pg_step(decay, iteration):
    c_medium, beta = 0.8, 0.25
    learner, module = learner_for("directed_maml", directed_lr=beta, directed_lr_decay=decay)
    info = learner.directed_update(c_medium, iteration=iteration)
    beta_k = beta * decay**iteration
    assert module.theta.item() == pytest.approx(THETA0 - beta_k * (THETA0 - c_medium), rel=1e-12)
    assert info["directed_lr"] == pytest.approx(beta_k)
    assert module.theta.grad is None  # no autograd history left behind


def test_directed_fomaml_step():
    c_in, c_out, beta = 0.8, 0.5, 0.25
    learner, module = learner_for("directed_maml", directed_lr=beta, directed_mode="fomaml")
    learner.directed_update(c_in, c_out)
    adapted = THETA0 - A * (THETA0 - c_in)
    assert module.theta.item() == pytest.approx(THETA0 - beta * (adapted - c_out), rel=1e-12)
    with pytest.raises(ValueError, match="medium_outer_episodes"):
        learner.directed_update(c_in)


def test_directed_step_is_pure():
    learner, module = learner_for("directed_fomaml", directed_lr=0.5)
    new = learner.directed_step(learner.params(), 0.0)
    assert module.theta.item() == THETA0
    assert new["theta"].item() == pytest.approx(THETA0 * 0.5)


def test_unknown_name_lists_valid():
    with pytest.raises(ConfigError, match="meta.algo: got 'reptile'; expected one of maml, fomaml, meta_sgd, direct"):
        MetaConfig(algo="reptile")


@pytest.mark.parametrize(
    ("section", "bad"),
    [
        (MetaConfig, dict(directed_mode="x")),
        (MetaConfig, dict(inner_steps=-1)),
        (MetaConfig, dict(directed_lr_decay=0.0)),
        (PGConfig, dict(gamma=1.5)),
    ],
    ids=["directed_mode", "inner_steps", "directed_lr_decay", "gamma"],
)
def test_config_validation(section, bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        section(**bad)


def test_meta_parameters_and_state_dict_round_trip():
    learner, _module = learner_for("meta_sgd")
    assert len(learner.meta_parameters()) == 2
    assert len(learner_for("maml")[0].meta_parameters()) == 1
    with torch.no_grad():
        learner.step_sizes["theta"].fill_(0.7)
    state = learner.state_dict()
    other, _ = learner_for("directed_meta_sgd")
    ref = other.step_sizes["theta"]
    other.load_state_dict(state)
    assert other.step_sizes["theta"] is ref and ref.item() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="step sizes mismatch"):
        learner_for("maml")[0].load_state_dict(state)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_learner_converges_on_quadratic_family(name):
    """optax-style conformance: meta-training on a family of centres reduces the meta-loss; without learned
    step sizes theta converges to the centres' mean (the medium task, for Directed-*)."""
    centres = [-0.8, -0.3, 0.2, 0.7, 1.2]
    learner, module = learner_for(name, inner_steps=1, directed_lr=0.1)
    opt = torch.optim.SGD(learner.meta_parameters(), lr=0.5)
    initial, _ = learner.outer_loss(learner.params(), [(c, c) for c in centres])
    for it in range(100):
        if learner.directed is not None:
            learner.directed_update(0.2, 0.2, iteration=it)
        opt.zero_grad()
        loss, _ = learner.outer_loss(learner.params(), [(c, c) for c in centres])
        loss.backward()
        opt.step()
    final, _ = learner.outer_loss(learner.params(), [(c, c) for c in centres])
    assert final.item() < 0.7 * initial.item()
    if learner.step_sizes is None:
        assert module.theta.item() == pytest.approx(0.2, abs=1e-3)


def _cartpole_batches(learner, n_tasks=2, per_task=3, seed=0):
    env = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1", max_episode_steps=30) for _ in range(n_tasks * per_task)]
    )
    theta = learner.params()
    inner = split_by_task(collect_episodes(env, learner.policy, theta, seed=seed), n_tasks)
    batches = []
    for k, eps in enumerate(inner):
        adapted = learner.adapt(theta, eps, differentiable=False)
        sub = gym.vector.SyncVectorEnv(
            [lambda: gym.make("CartPole-v1", max_episode_steps=30) for _ in range(per_task)]
        )
        batches.append((eps, collect_episodes(sub, learner.policy, adapted, seed=seed + 100 + k)))
    return batches


@pytest.mark.parametrize("name", ["maml", "fomaml", "meta_sgd"])
def test_policy_gradient_meta_step_reaches_all_meta_parameters(name):
    torch.manual_seed(0)
    policy = CategoricalMLP(4, 2, hidden=(16,))
    learner = MetaLearner(policy, MetaConfig(algo=name, inner_lr=0.1))
    before = {k: v.detach().clone() for k, v in params_of(policy).items()}
    loss, info = learner.outer_loss(learner.params(), _cartpole_batches(learner))
    loss.backward()
    for k, p in params_of(policy).items():
        assert torch.equal(p, before[k])  # adapt never touches theta
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    if learner.step_sizes is not None:
        assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in learner.step_sizes.values())
    assert set(info) >= {"inner_loss", "outer_loss", "outer_loss_task_0", "outer_loss_task_1"}


def test_second_order_differs_from_first_order_on_policy():
    torch.manual_seed(1)
    base = CategoricalMLP(4, 2, hidden=(16,))
    results = {}
    for name in ("maml", "fomaml"):
        policy = CategoricalMLP(4, 2, hidden=(16,))
        policy.load_state_dict(base.state_dict())
        learner = MetaLearner(policy, MetaConfig(algo=name, inner_lr=0.5))
        loss, _ = learner.outer_loss(learner.params(), _cartpole_batches(learner))
        loss.backward()
        results[name] = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert not torch.allclose(results["maml"], results["fomaml"])


def _pendulum_batch(learner, seed=0):
    def env():
        return gym.vector.SyncVectorEnv(
            [lambda: gym.make("Pendulum-v1", max_episode_steps=8) for _ in range(3)]
        )

    inner = collect_episodes(env(), learner.policy, learner.params(), seed=seed)
    adapted = learner.adapt(learner.params(), inner, differentiable=False)
    return inner, collect_episodes(env(), learner.policy, adapted, seed=seed + 1)


def test_gaussian_policy_meta_sgd_and_directed_fomaml_smoke():
    from intersection_meta.networks import GaussianMLP

    torch.manual_seed(0)
    policy = GaussianMLP(3, 1, hidden=(8,))
    learner = MetaLearner(
        policy, MetaConfig(algo="directed_meta_sgd", inner_lr=0.1, directed_mode="fomaml", directed_lr=0.05)
    )
    medium_in, medium_out = _pendulum_batch(learner, seed=7)
    before = {k: v.detach().clone() for k, v in params_of(policy).items()}
    info = learner.directed_update(medium_in, medium_out, iteration=0)
    assert info["directed_step_norm"] > 0
    assert any(not torch.equal(before[k], p) for k, p in params_of(policy).items())
    loss, _ = learner.outer_loss(learner.params(), [_pendulum_batch(learner)])
    loss.backward()
    assert params_of(policy)["log_std"].grad is not None
    assert learner.step_sizes["log_std"].grad is not None


@pytest.fixture
def one_torch_thread():
    """Tiny per-step tensors are ~10x faster single-threaded on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_maml_improves_cartpole_returns_in_a_few_iterations(one_torch_thread):
    """Cheap end-to-end check with the default config: 2 tasks x 5 episodes, 6 meta-iterations."""
    torch.manual_seed(0)
    n_tasks, per_task = 2, 5

    def env(n):
        return gym.vector.SyncVectorEnv(
            [lambda: gym.make("CartPole-v1", max_episode_steps=100) for _ in range(n)]
        )

    inner_env, outer_env = env(n_tasks * per_task), env(per_task)
    policy = CategoricalMLP(4, 2)
    learner = MetaLearner(policy, MetaConfig(algo="maml", inner_lr=0.1))
    opt = torch.optim.Adam(learner.meta_parameters(), lr=0.01)
    post_returns = []
    for it in range(6):
        theta = learner.params()
        batches = []
        for k, inner in enumerate(
            split_by_task(collect_episodes(inner_env, policy, theta, seed=100 * it), n_tasks)
        ):
            adapted = learner.adapt(theta, inner, differentiable=False)
            batches.append((inner, collect_episodes(outer_env, policy, adapted, seed=100 * it + 50 + 10 * k)))
        post_returns.append(sum(o.returns.mean().item() for _, o in batches) / n_tasks)
        opt.zero_grad()
        loss, _ = learner.outer_loss(theta, batches)
        loss.backward()
        opt.step()
    assert sum(post_returns[-2:]) / 2 > 2 * post_returns[0], post_returns


def test_adapt_on_one_batch_per_step_equals_stepwise_adaptation():
    """A list of K batches is replayed in order: the same as K single steps, each on its own batch (detached and
    differentiable alike); a list of the wrong length is refused."""
    torch.manual_seed(2)
    policy = CategoricalMLP(4, 2, hidden=(16,))
    learner = MetaLearner(policy, MetaConfig(algo="maml", inner_lr=0.3, inner_steps=2))
    (a, _), (b, _) = _cartpole_batches(learner)
    theta = learner.params()
    stepwise = learner.adapt(learner.adapt(theta, a, steps=1, differentiable=False), b, steps=1,
                             differentiable=False)
    both = learner.adapt(theta, [a, b], differentiable=False)
    reused = learner.adapt(theta, a, differentiable=False)
    graph = learner.adapt(theta, [a, b], differentiable=True)
    for k in stepwise:
        torch.testing.assert_close(both[k], stepwise[k])
        torch.testing.assert_close(graph[k].detach(), stepwise[k])
    assert any(not torch.allclose(reused[k], both[k]) for k in both)
    with pytest.raises(ValueError, match="3 inner batches for 2 inner steps"):
        learner.adapt(theta, [a, b, a])
