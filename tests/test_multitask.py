"""The multitask (non-meta) baseline: plain policy gradient on every task's two batches, adaptation unchanged."""

from __future__ import annotations

import pytest
import torch

from intersection_meta.config import MetaConfig, make_config
from intersection_meta.meta import MetaLearner
from intersection_meta.trainer import Trainer
from tests.test_meta import THETA0, Scalar, quadratic
from tests.test_trainer import TINY, tiny_scenario


def test_multitask_gradient_is_the_plain_gradient_on_both_batches():
    """d/dtheta 1/N sum_i 1/2 [L(theta; inner_i) + L(theta; outer_i)] with L = 1/2 (theta - c)^2: no inner step
    (a MAML learner would give (1 - alpha)^2 (theta - c) instead)."""
    module = Scalar(THETA0)
    learner = MetaLearner(module, MetaConfig(algo="multitask"), loss_fn=quadratic)
    pairs = [(-0.4, 0.6), (2.0, 1.0)]
    loss, info = learner.outer_loss(learner.params(), pairs)
    loss.backward()
    expected = sum((THETA0 - a) + (THETA0 - b) for a, b in pairs) / (2 * len(pairs))
    assert module.theta.grad.item() == pytest.approx(expected, rel=1e-12)
    assert info["inner_loss"] == pytest.approx(sum(0.5 * (THETA0 - a) ** 2 for a, _ in pairs) / 2)


def test_multitask_adapts_at_evaluation_like_the_meta_learners():
    module = Scalar(THETA0)
    learner = MetaLearner(module, MetaConfig(algo="multitask"), loss_fn=quadratic)
    adapted = learner.adapt(learner.params(), -0.4, differentiable=False)
    assert adapted["theta"].item() == pytest.approx(-0.4 + (1 - learner.meta.inner_lr) * (THETA0 + 0.4))


def test_multitask_trainer_collects_the_second_batch_with_theta():
    """The second batch of a multitask iteration is exactly a rollout of theta itself at the post-adaptation seed
    (with inner_lr = 50 an adapted policy would act very differently), reproduced here independently."""
    from intersection_meta.adaptation import repeat_tasks
    from intersection_meta.envs.factory import make_vector_env
    from intersection_meta.rollout import collect_episodes
    from intersection_meta.seeding import derive_seed

    config = make_config({**TINY, "algo": "multitask", "inner_lr": 50.0})
    trainer = Trainer(config, tiny_scenario())
    t = config.train
    tasks = trainer.scenario.sample_tasks(t.meta_batch_size, seed=derive_seed(t.seed, 0, 0))
    env = make_vector_env(repeat_tasks(tasks, t.episodes_per_task), seed=None, backend=trainer.backend)
    with torch.no_grad():
        expected = collect_episodes(env, trainer.policy, None, seed=derive_seed(t.seed, 0, 2))
    env.close()
    before = {k: v.detach().clone() for k, v in trainer.learner.params().items()}
    row = trainer.step()
    assert row["return_post"] == pytest.approx(float(expected.returns.mean()), rel=1e-6)
    assert any(not torch.equal(before[k], v) for k, v in trainer.learner.params().items())
    assert row["time_directed_s"] == 0.0
