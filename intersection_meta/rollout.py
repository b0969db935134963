"""Rollout: stepping a gymnasium vector env with a policy into padded ``Episodes`` (one episode per sub-env).

Layout conventions (see docs/ARCHITECTURE.md): tensors are padded ``[T, B, ...]`` with ``T`` time and ``B``
episodes; vector envs are task-major, so sub-env ``b = task_index * episodes_per_task + episode_index``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from intersection_meta.networks import sample_actions

#: Episode-level boolean outcomes copied from step infos when the env reports them.
OUTCOME_KEYS: tuple[str, ...] = ("crashed", "arrived")


class Episodes(NamedTuple):
    """A batch of ``B`` episodes padded to ``T`` steps. Padded steps have ``mask == 0`` and zero contents.

    Attributes:
        obs: ``[T, B, obs_dim]`` float32, the policy's input before each step: the flattened observation, followed
            by the episode's latent for a latent policy (``[T, B, obs_dim + latent_dim]``).
        actions: ``[T, B]`` int64 (discrete) or ``[T, B, act_dim]`` float32 (raw, unclipped samples).
        rewards: ``[T, B]`` float32.
        mask: ``[T, B]`` float32, 1 for valid steps (``t < lengths[b]``).
        terminated: ``[T, B]`` bool, True at the step where the episode terminated (not truncated).
        lengths: ``[B]`` int64, number of valid steps.
        last_obs: ``[B, obs_dim]`` float32, observation after the final step (to bootstrap truncated
        episodes).
        truncated: ``[B]`` bool, episode ended by truncation (time limit or ``max_steps``), not termination.
        returns: ``[B]`` float32, undiscounted sum of rewards.
        crashed: ``[B]`` bool if the step infos carry ``crashed``, else None.
        arrived: ``[B]`` bool if the step infos carry ``arrived``, else None.
        reward_terms: per-episode sums ``[B]`` of each entry of ``info["rewards"]`` (a dict of named reward
            terms, as in highway-env) when present, else None.
        criticality: per-episode criticality metrics ``[B]`` float64 (``info["criticality"]`` at each episode's
            last step: :mod:`intersection_meta.criticality`, may be inf) on intersection tasks, else None.
        latents: ``[B, latent_dim]`` float32, each episode's latent ``z`` (drawn once at its start) for a latent
            policy (:mod:`intersection_meta.networks`), else None.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    terminated: Tensor
    lengths: Tensor
    last_obs: Tensor
    truncated: Tensor
    returns: Tensor
    crashed: Tensor | None = None
    arrived: Tensor | None = None
    reward_terms: dict[str, Tensor] | None = None
    criticality: dict[str, Tensor] | None = None
    latents: Tensor | None = None

    @property
    def n_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.mask.shape[0])


_TIME_FIELDS = ("obs", "actions", "rewards", "mask", "terminated")


def _map_episodes(episodes: Episodes, time_fn, batch_fn) -> Episodes:
    """Apply ``time_fn`` to ``[T, B, ...]`` fields and ``batch_fn`` to ``[B, ...]`` fields (None stays
    None)."""
    out = {}
    for name, value in episodes._asdict().items():
        fn = time_fn if name in _TIME_FIELDS else batch_fn
        if value is None:
            out[name] = None
        elif isinstance(value, dict):
            out[name] = {k: fn(v) for k, v in value.items()}
        else:
            out[name] = fn(value)
    return Episodes(**out)


def index_episodes(episodes: Episodes, index: slice | Tensor | Sequence[int], trim: bool = True) -> Episodes:
    """The episodes selected by ``index`` along ``B``.

    With ``trim``, padded steps past the longest selected episode are dropped.
    """
    if not isinstance(index, slice):
        index = torch.as_tensor(index, dtype=torch.long)
    sub = _map_episodes(episodes, lambda x: x[:, index], lambda x: x[index])
    if trim and sub.n_episodes > 0:
        t_max = int(sub.lengths.max())
        sub = sub._replace(**{k: getattr(sub, k)[:t_max] for k in _TIME_FIELDS})
    return sub


def split_by_task(episodes: Episodes, n_tasks: int) -> list[Episodes]:
    """Split task-major episodes (sub-env ``b = task * episodes_per_task + e``) into one batch per task.

    Raises:
        ValueError: if ``B`` is not a positive multiple of ``n_tasks``.
    """
    n = episodes.n_episodes
    if n_tasks < 1 or n % n_tasks != 0 or n == 0:
        raise ValueError(f"cannot split {n} episodes into {n_tasks} equal task groups")
    per_task = n // n_tasks
    return [index_episodes(episodes, slice(k * per_task, (k + 1) * per_task)) for k in range(n_tasks)]


def _pad_time(x: Tensor, horizon: int) -> Tensor:
    if x.shape[0] == horizon:
        return x
    pad = torch.zeros((horizon - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=0)


def concat(batches: Sequence[Episodes]) -> Episodes:
    """Concatenate episode batches along ``B`` (padding ``T`` to the longest).

    Optional fields (``crashed``, ``arrived``, ``reward_terms``, ``criticality``, ``latents``) are kept only if
    every batch has them.

    Raises:
        ValueError: for an empty sequence.
    """
    if not batches:
        raise ValueError("concat needs at least one Episodes batch")
    horizon = max(b.horizon for b in batches)
    out: dict[str, object] = {}
    for name in Episodes._fields:
        values = [getattr(b, name) for b in batches]
        if any(v is None for v in values):
            out[name] = None
        elif isinstance(values[0], dict):
            keys = set.intersection(*(set(v) for v in values))
            out[name] = {k: torch.cat([v[k] for v in values]) for k in sorted(keys)} or None
        elif name in _TIME_FIELDS:
            out[name] = torch.cat([_pad_time(v, horizon) for v in values], dim=1)
        else:
            out[name] = torch.cat(values, dim=0)
    return Episodes(**out)


def _episode_latents(policy, params, n_envs: int, generator: torch.Generator, deterministic: bool) -> Tensor | None:
    """The policy's per-episode latents ``[n_envs, latent_dim]`` (``policy.episode_latents``), or None."""
    draw = getattr(policy, "episode_latents", None)
    return None if draw is None else draw(params, n_envs, generator, deterministic)


def _with_latents(obs: Tensor, latents: Tensor | None) -> Tensor:
    return obs if latents is None else torch.cat([obs, latents], dim=1)


def _autoreset_mode(vec_env: gym.vector.VectorEnv) -> str:
    mode = vec_env.metadata.get("autoreset_mode", "NextStep")
    name = getattr(mode, "value", mode)
    if str(name).lower().replace("_", "") not in ("nextstep", "samestep"):
        raise ValueError(f"collect_episodes supports NEXT_STEP or SAME_STEP autoreset, env has {mode!r}")
    return "same_step" if str(name).lower().replace("_", "") == "samestep" else "next_step"


def _info_array(infos: Mapping, key: str, n: int) -> np.ndarray | None:
    """``infos[key]`` as a length-``n`` array with entries where ``infos['_' + key]`` is False set to zero."""
    if key not in infos:
        return None
    values = np.asarray(infos[key])
    present = np.asarray(infos.get("_" + key, np.ones(n, dtype=bool)), dtype=bool)
    return np.where(present, values, np.zeros_like(values))


def env_actions(action: Tensor, action_space: gym.Space) -> np.ndarray:
    """Sampled policy actions as the env takes them: int64 indices, or continuous actions clipped to the bounds.

    The raw (unclipped) sample is what the loss sees; only the env gets the clipped copy.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return action.numpy().astype(np.int64)
    return np.clip(action.numpy(), action_space.low, action_space.high).astype(action_space.dtype)


@torch.no_grad()
def collect_episodes(
    vec_env: gym.vector.VectorEnv,
    policy,
    params: Mapping[str, Tensor] | None,
    *,
    seed: int,
    max_steps: int | None = None,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    use_active_mask: bool = True,
) -> Episodes:
    """Run exactly one episode in every sub-env of ``vec_env`` with ``policy`` (evaluated at ``params``).

    The vector env is reset with ``seed`` (gymnasium seeds sub-env ``i`` with ``seed + i``) and actions are
    sampled with ``generator`` (default: a new ``torch.Generator`` seeded with ``seed``), so the result
    depends only on ``seed`` and the parameters. Stepping continues until every sub-env has ended once;
    with gymnasium's ``NEXT_STEP`` autoreset the step after an end resets that sub-env, and everything after
    the first end is masked out. Continuous actions are clipped to the action-space bounds for the env but
    stored raw. A latent policy's per-episode latents are drawn first, from the same generator (its mean if
    ``deterministic``), and appended to every observation.

    Args:
        vec_env: A gymnasium ``VectorEnv`` (NEXT_STEP or SAME_STEP autoreset) with a ``Box`` observation
        space.
        policy: An object with ``distribution(obs, params) -> Distribution`` (see ``networks.py``), and optionally
            ``episode_latents(params, n, generator, deterministic)`` (a latent policy).
        params: Parameters to evaluate the policy with; None uses the policy's own.
        seed: Reset and sampling seed.
        max_steps: Optional cap on steps; episodes still running are then cut and flagged ``truncated``.
        deterministic: Take the distribution's mode instead of sampling.
        generator: Optional explicit sampling generator (overrides the one derived from ``seed``).
        use_active_mask: Step only the sub-envs still running when the env offers ``step_active(actions,
            active)`` (same episodes, less simulation); False always calls ``step``.

    Returns:
        :class:`Episodes` with ``B = vec_env.num_envs``.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    mode = _autoreset_mode(vec_env)
    n_envs = vec_env.num_envs
    action_space = vec_env.single_action_space
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    # Optional capability (the fast backend): step only the scenes of a bool mask, holding the others. The
    # episodes are the same as with step(): held rows are masked out below, and the policy still sees all B
    # rows, so the sampling generator advances exactly as it would.
    step_active = getattr(vec_env, "step_active", None) if use_active_mask else None

    obs_np, _ = vec_env.reset(seed=int(seed))
    latents = _episode_latents(policy, params, n_envs, generator, deterministic)  # [B, latent_dim] or None
    obs = _with_latents(torch.as_tensor(np.asarray(obs_np), dtype=torch.float32).reshape(n_envs, -1), latents)
    obs_steps, act_steps, rew_steps, mask_steps, term_steps = [], [], [], [], []
    active = np.ones(n_envs, dtype=bool)
    lengths = np.zeros(n_envs, dtype=np.int64)
    truncated = np.zeros(n_envs, dtype=bool)
    last_obs = torch.zeros_like(obs)
    outcomes: dict[str, np.ndarray] = {}
    terms: dict[str, np.ndarray] = {}
    criticality: dict[str, np.ndarray] = {}

    t = 0
    while active.any():
        if max_steps is not None and t >= max_steps:
            last_obs[torch.as_tensor(active)] = obs[torch.as_tensor(active)]
            lengths[active] = t
            truncated[active] = True
            active[:] = False
            break
        dist = policy.distribution(obs, params)
        action = sample_actions(dist, generator, deterministic)
        env_action = env_actions(action, action_space)
        if step_active is not None:  # ended scenes are held instead of autoreset and simulated for nothing
            next_obs_np, reward, term, trunc, infos = step_active(env_action, active)
        else:
            next_obs_np, reward, term, trunc, infos = vec_env.step(env_action)
        next_obs = _with_latents(
            torch.as_tensor(np.asarray(next_obs_np), dtype=torch.float32).reshape(n_envs, -1), latents
        )
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        valid = active.copy()

        obs_steps.append(torch.where(torch.as_tensor(valid)[:, None], obs, 0.0))
        act_mask = torch.as_tensor(valid).reshape(-1, *([1] * (action.dim() - 1)))
        act_steps.append(torch.where(act_mask, action, torch.zeros_like(action)))
        rew_steps.append(torch.as_tensor(np.where(valid, reward, 0.0), dtype=torch.float32))
        mask_steps.append(torch.as_tensor(valid, dtype=torch.float32))
        term_steps.append(torch.as_tensor(valid & term))

        for key in OUTCOME_KEYS:
            arr = _info_array(infos, key, n_envs)
            if arr is not None:
                outcomes[key] = outcomes.get(key, np.zeros(n_envs, dtype=bool)) | (valid & arr.astype(bool))
        if isinstance(infos.get("rewards"), Mapping):
            for name in infos["rewards"]:
                if name.startswith("_"):  # gymnasium's presence masks, not reward terms
                    continue
                arr = _info_array(infos["rewards"], name, n_envs)
                if arr is not None:
                    terms[name] = terms.get(name, np.zeros(n_envs)) + np.where(valid, arr.astype(float), 0.0)
        if isinstance(infos.get("criticality"), Mapping):  # running values: keep each episode's last valid one
            for name in infos["criticality"]:
                if name.startswith("_"):  # gymnasium's presence masks
                    continue
                arr = _info_array(infos["criticality"], name, n_envs)
                if arr is not None:
                    previous = criticality.get(name, np.full(n_envs, np.nan))
                    criticality[name] = np.where(valid, arr.astype(np.float64), previous)

        ended = valid & (term | trunc)
        if ended.any():
            final = next_obs.clone()
            if mode == "same_step" and "final_obs" in infos:
                for b in np.flatnonzero(ended):
                    final_obs = torch.as_tensor(np.asarray(infos["final_obs"][b]), dtype=torch.float32).reshape(-1)
                    final[b] = final_obs if latents is None else torch.cat([final_obs, latents[b]])
            idx = torch.as_tensor(ended)
            last_obs[idx] = final[idx]
            lengths[ended] = t + 1
            truncated[ended] = trunc[ended] & ~term[ended]
            active[ended] = False
        obs = next_obs
        t += 1

    rewards = torch.stack(rew_steps)  # [T, B]
    return Episodes(
        obs=torch.stack(obs_steps),
        actions=torch.stack(act_steps),
        rewards=rewards,
        mask=torch.stack(mask_steps),
        terminated=torch.stack(term_steps),
        lengths=torch.as_tensor(lengths),
        last_obs=last_obs,
        truncated=torch.as_tensor(truncated),
        returns=rewards.sum(dim=0),
        crashed=torch.as_tensor(outcomes["crashed"]) if "crashed" in outcomes else None,
        arrived=torch.as_tensor(outcomes["arrived"]) if "arrived" in outcomes else None,
        reward_terms={k: torch.as_tensor(v, dtype=torch.float32) for k, v in terms.items()} or None,
        criticality={k: torch.as_tensor(v, dtype=torch.float64) for k, v in criticality.items()} or None,
        latents=latents,
    )
