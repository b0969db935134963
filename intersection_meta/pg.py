"""Policy-gradient estimators: discounted returns, GAE, a linear feature baseline and surrogate losses.

All functions are pure and work on padded ``[T, B]`` tensors with a ``mask`` (1 for valid steps), as
produced by :func:`intersection_meta.rollout.collect_episodes`. Two surrogates share one gradient and differ in
their Hessian (which MAML's second-order meta-gradient differentiates through the inner step):

- :func:`reinforce_loss`, ``-mean(log pi * A)``, the MAML-RL paper's inner and outer loss;
- :func:`lvc_loss`, ``-mean(pi / stop_grad(pi) * A)``, ProMP's low-variance curvature estimator (Rothfuss et al.
  2019), whose Hessian also carries the score term ``grad log pi grad log pi^T * A`` of the sampling distribution.

A latent policy (MAESN, :mod:`intersection_meta.networks`) also samples one latent ``z`` per episode; its score
term ``-mean_b log N(z_b; mu, sigma) * A_b`` with episode advantages ``A_b`` (:func:`latent_loss`) joins the
policy loss, and is the whole adaptation loss (:func:`latent_adaptation_loss`).

The outer step itself (Adam or the MAML-RL paper's TRPO step) lives in :mod:`intersection_meta.meta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from intersection_meta.config import PGConfig
from intersection_meta.networks import latent_log_prob
from intersection_meta.rollout import Episodes

#: Time features use ``t / TIME_SCALE`` (Duan et al. 2016 / rllab convention).
TIME_SCALE = 100.0


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``G_t = sum_{k >= t} gamma^(k - t) * m_k * r_k`` per episode; zero on padded steps.

    Args:
        rewards: ``[T, B]`` rewards.
        mask: ``[T, B]`` 1 for valid steps (each episode's valid steps are a prefix).
        gamma: Discount factor.

    Returns:
        ``[T, B]`` discounted returns (no bootstrapping: see :func:`gae` for truncated episodes).

    >>> discounted_returns(torch.tensor([[1.0], [1.0], [1.0]]), torch.ones(3, 1), 0.5).flatten().tolist()
    [1.75, 1.5, 1.0]
    """
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = (rewards[t] + gamma * running) * mask[t]
        returns[t] = running
    return returns


def baseline_features(obs: Tensor, time_steps: Tensor) -> Tensor:
    """Linear-baseline features ``[s, s^2, u, u^2, u^3, 1]`` with ``u = t / 100`` (Duan et al. 2016).

    Args:
        obs: ``[..., obs_dim]`` observations.
        time_steps: ``[...]`` time index of each observation within its episode.

    Returns:
        ``[..., 2 * obs_dim + 4]`` features.
    """
    u = (time_steps.to(obs.dtype) / TIME_SCALE).unsqueeze(-1)
    return torch.cat([obs, obs * obs, u, u * u, u * u * u, torch.ones_like(u)], dim=-1)


def _step_features(episodes: Episodes) -> tuple[Tensor, Tensor]:
    """Features of every step ``[T, B, F]`` and of every ``last_obs`` ``[B, F]`` (float64)."""
    obs = episodes.obs.to(torch.float64)
    horizon, n = obs.shape[:2]
    t = torch.arange(horizon, dtype=torch.float64).unsqueeze(1).expand(horizon, n)
    steps = baseline_features(obs, t)
    last = baseline_features(episodes.last_obs.to(torch.float64), episodes.lengths.to(torch.float64))
    return steps, last


def fit_linear_baseline(episodes: Episodes, gamma: float, reg: float = 1e-5, max_tries: int = 5) -> Tensor:
    """Least-squares weights ``w = (X^T X + reg I)^-1 X^T G`` of the value on :func:`baseline_features`.

    ``X`` holds the features of every valid step and ``G`` their discounted returns. As in rllab, ``reg`` is
    multiplied by 10 (up to ``max_tries`` times) if the solve is not finite.

    Returns:
        ``[F]`` float64 weights.

    Raises:
        ValueError: if there is no valid step.
    """
    steps, _ = _step_features(episodes)
    valid = episodes.mask.to(torch.bool)
    if not valid.any():
        raise ValueError("cannot fit a baseline on episodes with no valid step")
    x = steps[valid]  # [N, F]
    g = discounted_returns(episodes.rewards.to(torch.float64), episodes.mask.to(torch.float64), gamma)[valid]
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    zeros = torch.zeros(x.shape[1], dtype=torch.float64)
    for _ in range(max_tries):
        # Least squares on [X; sqrt(reg) I] w = [G; 0] has the ridge normal equations above as its solution
        # but is better conditioned than forming X^T X (the t^3 / 100^3 feature is tiny).
        a = torch.cat([x, reg**0.5 * eye])
        b = torch.cat([g, zeros]).unsqueeze(1)
        weights = torch.linalg.lstsq(a, b, driver="gelsd").solution.squeeze(1)
        if torch.isfinite(weights).all():
            return weights
        reg *= 10.0
    raise FloatingPointError(f"linear baseline solve not finite even with reg={reg}")


def predict_linear_baseline(weights: Tensor, episodes: Episodes) -> tuple[Tensor, Tensor]:
    """Values ``V(s_t, t) = phi(s_t, t) . w`` of every step (``[T, B]``, zero on padding) and of ``last_obs``
    at time ``lengths`` (``[B]``), in the dtype of ``episodes.rewards``."""
    steps, last = _step_features(episodes)
    dtype = episodes.rewards.dtype
    values = (steps @ weights).to(dtype) * episodes.mask.to(dtype)
    return values, (last @ weights).to(dtype)


@dataclass(frozen=True)
class LinearFeatureBaseline:
    """A fitted linear feature baseline (Duan et al. 2016; the MAML paper's baseline), refitted per task.

    Example:
        ``values, last_values = LinearFeatureBaseline.fit(eps, gamma=0.99).predict(eps)``
    """

    weights: Tensor

    @classmethod
    def fit(cls, episodes: Episodes, gamma: float, reg: float = 1e-5) -> LinearFeatureBaseline:
        return cls(fit_linear_baseline(episodes, gamma, reg))

    def predict(self, episodes: Episodes) -> tuple[Tensor, Tensor]:
        return predict_linear_baseline(self.weights, episodes)


def gae(
    rewards: Tensor,
    values: Tensor,
    last_values: Tensor,
    mask: Tensor,
    terminated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> Tensor:
    """Generalised advantage estimates (Schulman et al. 2016) with correct truncation handling.

    ``delta_t = r_t + gamma * V_next - V(s_t)``, ``A_t = delta_t + gamma * lambda * A_{t+1}`` within an
    episode, where ``V_next = V(s_{t+1})`` inside the episode and, at its final step, ``V(last_obs)`` if the
    episode was truncated and 0 if it terminated. With ``lambda = 1`` and ``V = 0`` this is the discounted
    return (plus ``gamma^(L-t) V(last_obs)`` for truncated episodes).

    Args:
        rewards: ``[T, B]``.
        values: ``[T, B]`` baseline values of each step's observation.
        last_values: ``[B]`` value of each episode's ``last_obs``.
        mask: ``[T, B]`` 1 for valid steps.
        terminated: ``[T, B]`` True at the step where an episode terminated.
        gamma: Discount factor.
        gae_lambda: GAE lambda.

    Returns:
        ``[T, B]`` advantages, zero on padded steps.
    """
    horizon = rewards.shape[0]
    mask = mask.to(rewards.dtype)
    next_mask = torch.cat([mask[1:], torch.zeros_like(mask[:1])], dim=0)  # 1 where step t+1 is valid
    is_last = mask * (1.0 - next_mask)
    bootstrap = last_values.to(rewards.dtype) * (1.0 - terminated.to(rewards.dtype))  # [T, B]
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])], dim=0) * next_mask + is_last * bootstrap
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(horizon - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * next_mask[t] * running
        advantages[t] = running
    return advantages * mask


def normalize_advantages(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(A - mean) / (std + eps)`` with mean and (population) std over valid steps only; zero on padding."""
    mask = mask.to(advantages.dtype)
    n = mask.sum().clamp_min(1.0)
    mean = (advantages * mask).sum() / n
    var = (((advantages - mean) * mask) ** 2).sum() / n
    return (advantages - mean) / (var.sqrt() + eps) * mask


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """``sum(x * m) / sum(m)`` (0 if there is no valid entry)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def reinforce_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """Policy-gradient surrogate ``L = -sum(m_t * log pi(a_t|s_t) * A_t) / sum(m_t)``.

    The advantages ``A`` are treated as constants.
    """
    return -masked_mean(log_probs * advantages.detach(), mask)


def lvc_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """ProMP's low-variance curvature surrogate ``L = -sum(m_t * exp(log pi - stop_grad(log pi)) * A_t) / sum(m_t)``.

    Its value is ``-mean(A)`` and its gradient equals :func:`reinforce_loss`'s, but its Hessian is
    ``-mean(A * (hess log pi + grad log pi grad log pi^T))``: per step, the exact curvature of the expected
    advantage-weighted likelihood ratio. Used as MAML's inner loss it lets the meta-gradient credit how the
    pre-adaptation policy samples (Rothfuss et al. 2019, "ProMP", eq. 11).
    """
    ratio = torch.exp(log_probs - log_probs.detach())
    return -masked_mean(ratio * advantages.detach(), mask)


#: Policy-gradient surrogates by name (``policy_loss(..., surrogate=)``; the run config's ``meta.inner_estimator``).
SURROGATES = {"reinforce": reinforce_loss, "lvc": lvc_loss}


#: Floor of the std in :func:`episode_advantages`' normalisation [return units]: a batch whose episodes differ by
#: float noise only (the same actions, ~1e-6 apart) keeps advantages near 0 instead of being blown up to +-1.
EPISODE_ADV_MIN_STD = 1.0


def episode_advantages(returns: Tensor, normalize: bool) -> Tensor:
    """Episode-level advantages ``G_b - mean(G)`` of a batch's returns ``[B]``; with ``normalize`` divided by
    ``max(std(G), EPISODE_ADV_MIN_STD)``. No gradient."""
    returns = returns.detach()
    adv = returns - returns.mean()
    if normalize:
        adv = adv / adv.std(unbiased=False).clamp_min(EPISODE_ADV_MIN_STD)
    return adv


def latent_loss(policy: Any, params: Mapping[str, Tensor] | None, episodes: Episodes, normalize: bool) -> Tensor:
    """REINFORCE on a latent policy's per-episode latents: ``-mean_b log N(z_b; mu, sigma) * A_b`` with
    ``A = episode_advantages(returns, normalize)`` and ``(mu, sigma)`` from ``params`` (None: the policy's own).
    Its gradient on ``latent_mu``, ``latent_logstd`` is the score-function estimate of the gradient of the mean
    return through the latent distribution (MAESN); it does not depend on the network's weights."""
    params = {} if params is None else params
    if episodes.latents is None:
        raise ValueError("latent_loss needs episodes collected with a latent policy (episodes.latents is None)")
    mu = params.get("latent_mu", policy.latent_mu)
    logstd = params.get("latent_logstd", policy.latent_logstd)
    adv = episode_advantages(episodes.returns, normalize)
    return -(latent_log_prob(mu, logstd, episodes.latents) * adv).mean()


def latent_adaptation_loss(policy: Any, params: Mapping[str, Tensor] | None, episodes: Episodes) -> Tensor:
    """A latent policy's adaptation (inner) loss: :func:`latent_loss` with normalised episode advantages, so
    adaptation moves only the latent distribution (MAESN's latent adaptation), by a step measured in units of
    the return's spread whatever the scenario's reward scale."""
    return latent_loss(policy, params, episodes, normalize=True)


def compute_advantages(episodes: Episodes, pg: PGConfig) -> Tensor:
    """Advantages of one task's episodes: fit the linear baseline on them, GAE, optional normalisation.

    ``pg.bootstrap_truncated=False`` treats a truncated episode's end like a termination (value 0 after it):
    right when the time limit is part of the task (a finite horizon), and it avoids the bias of bootstrapping
    with a baseline fitted on other episodes' futures.

    Args:
        episodes: One task's episodes.
        pg: ``gamma``, ``gae_lambda``, ``baseline_reg``, ``normalize_advantages``, ``bootstrap_truncated``.

    Returns:
        ``[T, B]`` advantages without gradient.
    """
    with torch.no_grad():
        values, last_values = LinearFeatureBaseline.fit(episodes, pg.gamma, pg.baseline_reg).predict(episodes)
        if not pg.bootstrap_truncated:
            last_values = torch.zeros_like(last_values)
        adv = gae(episodes.rewards, values, last_values, episodes.mask, episodes.terminated, pg.gamma, pg.gae_lambda)
        return normalize_advantages(adv, episodes.mask) if pg.normalize_advantages else adv


def policy_loss(
    policy: Any,
    params: Mapping[str, Tensor] | None,
    episodes: Episodes,
    pg: PGConfig,
    surrogate: str = "reinforce",
) -> Tensor:
    """Policy-gradient surrogate of one task (:func:`reinforce_loss` by default) with :func:`compute_advantages`,
    minus ``pg.entropy_coef`` times the masked mean policy entropy (an exploration bonus; 0 disables it), plus
    :func:`latent_loss` (advantages normalised as ``pg.normalize_advantages`` says) for episodes of a latent policy.

    Differentiable w.r.t. ``params`` (the policy's log-probabilities), including through adapted parameters.

    Args:
        policy: A policy with ``distribution(obs, params)`` (:mod:`intersection_meta.networks`).
        params: Parameters to evaluate (None: the policy's own).
        episodes: One task's episodes.
        pg: The run config's ``pg`` section, unchanged.
        surrogate: A key of :data:`SURROGATES` (``"reinforce"`` or ``"lvc"``).

    Raises:
        ValueError: for an unknown ``surrogate``.
    """
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; allowed: {', '.join(SURROGATES)}")
    adv = compute_advantages(episodes, pg)
    dist = policy.distribution(episodes.obs, params)
    loss = SURROGATES[surrogate](dist.log_prob(episodes.actions), adv, episodes.mask)  # [T, B] log-probs
    if pg.entropy_coef:
        loss = loss - pg.entropy_coef * masked_mean(dist.entropy(), episodes.mask)
    if episodes.latents is not None:
        loss = loss + latent_loss(policy, params, episodes, pg.normalize_advantages)
    return loss
