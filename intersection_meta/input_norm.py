"""Input standardisation of a policy: a fixed ``(obs - mean) / std`` fitted on random rollouts of a scenario.

The intersection observation is normalised by fixed world ranges (+-100 m, +-20 m/s), so the features that tell
which car reaches the conflict point first vary by only ~0.05-0.2 across tasks, and a freshly initialised MLP
ignores them (docs/learning_investigation.md). Standardising every feature with statistics of the scenario's own
observations, once at initialisation, lets the policy read the gap. The statistics are buffers (saved with the
policy's ``state_dict``, never trained); constant features (e.g. ``presence``) keep ``std = 1``.

The run config's ``policy.input_norm: fitted`` wires it (:class:`intersection_meta.trainer.Trainer`)::

    policy = build_policy(obs_space, act_space, input_norm="fitted")        # identity Standardize
    policy.set_input_norm(fit_input_norm(scenario, policy, config.env, seed=...))

Checkpoints written without it (``input_norm: none``, the default, and every older checkpoint) load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

#: Features whose std over the fitting rollouts is below this are left unscaled (std = 1).
MIN_STD = 1e-3


class Standardize(nn.Module):
    """``(x - mean) / std`` with fixed buffers ``mean`` and ``std`` (shape ``[obs_dim]``)."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError(
                f"mean and std must be 1-D and equal in shape, got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        if not bool((std > 0).all()):
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def standardizer_from_observations(obs: Tensor) -> Standardize:
    """:class:`Standardize` with the mean and (population) std of ``obs`` (``[N, obs_dim]``); features with std
    below :data:`MIN_STD` keep scale 1."""
    obs = obs.to(torch.float32)
    mean, std = obs.mean(0), obs.std(0, unbiased=False)
    return Standardize(mean, torch.where(std < MIN_STD, torch.ones_like(std), std))


#: Tasks (one episode each) that the statistics are fitted on.
FIT_TASKS = 200


def fit_input_norm(
    scenario: Any, policy: Any, env_config: Any = None, n_tasks: int = FIT_TASKS, seed: int = 777
) -> Standardize:
    """Fit on every valid observation of one episode per task (``n_tasks`` tasks sampled with ``seed``) of
    ``policy`` (a fresh, near-uniform policy explores the whole approach), on the run config's ``env`` section's
    backend (default ``auto``: the fast backend for intersections)."""
    from intersection_meta.config import EnvConfig
    from intersection_meta.envs.factory import make_batch_env
    from intersection_meta.rollout import collect_episodes

    env = make_batch_env(scenario.sample_tasks(n_tasks, seed=seed), env_config or EnvConfig(), seed=seed)
    try:
        with torch.no_grad():
            episodes = collect_episodes(env, policy, None, seed=seed)
    finally:
        env.close()
    obs_dim = int(getattr(policy, "obs_dim", episodes.obs.shape[-1]))  # a latent policy's z is not standardised
    return standardizer_from_observations(episodes.obs[episodes.mask.bool()][:, :obs_dim])
