"""Adaptation at test time and batched rollouts with per-task parameters.

The trainer, the evaluator and the viewer all adapt the same way: sample episodes on a task with the current
parameters, take one inner policy-gradient step (the learner's rule: scalar ``inner_lr`` or Meta-SGD's learned
step sizes), and repeat with fresh episodes from the adapted parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.distributions import Distribution

from intersection_meta.envs.factory import make_vector_env, resolve_backend
from intersection_meta.networks import draw_latents, stack_params
from intersection_meta.rollout import Episodes, collect_episodes, split_by_task
from intersection_meta.seeding import derive_seed
from intersection_meta.tasks import Task

Params = dict[str, Tensor]


class GroupedPolicy:
    """Evaluate one policy with a different parameter set per contiguous group of sub-envs.

    Sub-env ``b`` uses ``params_list[b // group_size]`` (the task-major layout), so the post-adaptation episodes
    of a whole meta-batch can be collected in one vectorised rollout.
    """

    def __init__(self, policy: Any, params_list: Sequence[Mapping[str, Tensor]], group_size: int) -> None:
        self.policy, self.params_list, self.group_size = policy, list(params_list), int(group_size)
        full = [{**dict(policy.named_parameters()), **dict(p)} for p in self.params_list]
        self._stacked = {k: v.detach() for k, v in stack_params(full).items()}  # rollouts take no gradient

    def distribution(self, obs: Tensor, params: Any = None) -> Distribution:
        n_groups = len(self.params_list)
        if obs.shape[0] != n_groups * self.group_size:
            raise ValueError(f"expected {n_groups * self.group_size} observations, got {obs.shape[0]}")
        return self.policy.grouped_distribution(obs.reshape(n_groups, self.group_size, -1), self._stacked)

    def episode_latents(
        self, params: Any, n_episodes: int, generator: Any = None, deterministic: bool = False
    ) -> Tensor | None:
        """Per-episode latents of a latent policy, each group's from its own ``latent_mu`` / ``latent_logstd``
        (``[n_episodes, latent_dim]``, group-major), or None."""
        if not getattr(self.policy, "latent_dim", 0):
            return None
        if n_episodes != len(self.params_list) * self.group_size:
            raise ValueError(f"expected {len(self.params_list) * self.group_size} episodes, got {n_episodes}")
        mu = self._stacked["latent_mu"].repeat_interleave(self.group_size, dim=0)
        logstd = self._stacked["latent_logstd"].repeat_interleave(self.group_size, dim=0)
        return draw_latents(mu, logstd, generator, deterministic)


def repeat_tasks(tasks: Sequence[Task], episodes_per_task: int) -> list[Task]:
    """Task-major slot list: ``[t0]*E + [t1]*E + ...``."""
    return [t for t in tasks for _ in range(episodes_per_task)]


@dataclass
class AdaptationResult:
    """Per adaptation step ``k = 0..K`` (0 = before adaptation): the episodes and the parameters used."""

    episodes: list[list[Episodes]]  # [K + 1][n_tasks]
    params: list[list[Params]]  # [K + 1][n_tasks]


def adapt_and_rollout(
    learner: Any,
    tasks: Sequence[Task],
    *,
    adapt_steps: int,
    episodes_per_task: int,
    seed: int,
    backend: str = "highway",
) -> AdaptationResult:
    """Collect episodes before adaptation and after each of ``adapt_steps`` inner steps, for every task.

    Each step samples fresh episodes with the current (per-task) parameters, then adapts on them. Seeds derive
    from ``(seed, step)``, so the result does not depend on anything else.
    """
    policy = learner.policy
    theta = {k: v.detach() for k, v in learner.params().items()}
    vec_env = make_vector_env(repeat_tasks(tasks, episodes_per_task), seed=seed, backend=backend)
    try:
        current: list[Params] = [theta for _ in tasks]
        all_eps: list[list[Episodes]] = []
        all_params: list[list[Params]] = []
        for step in range(adapt_steps + 1):
            grouped = GroupedPolicy(policy, current, episodes_per_task)
            eps = collect_episodes(vec_env, grouped, None, seed=derive_seed(seed, step))
            per_task = split_by_task(eps, len(tasks))
            all_eps.append(per_task)
            all_params.append(current)
            if step < adapt_steps:
                current = [
                    learner.adapt(p, e, steps=1, differentiable=False) for p, e in zip(current, per_task, strict=True)
                ]
        return AdaptationResult(all_eps, all_params)
    finally:
        vec_env.close()


def adapt_to_task(
    checkpoint: Any,
    task: Task,
    *,
    adapt_steps: int,
    seed: int,
    backend: str = "highway",
    episodes_per_task: int | None = None,
) -> list[Params]:
    """Parameters before adaptation and after each of ``adapt_steps`` steps on ``task`` (element 0 = before)."""
    episodes = episodes_per_task or checkpoint.config.train.episodes_per_task
    result = adapt_and_rollout(
        checkpoint.learner,
        [task],
        adapt_steps=adapt_steps,
        episodes_per_task=episodes,
        seed=seed,
        backend=resolve_backend(backend, task),
    )
    return [step[0] for step in result.params]
