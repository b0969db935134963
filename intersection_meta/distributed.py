"""Ray: training rollouts on actors (:class:`RaySampler`) and the connection helper of the ``--ray`` options.

A :class:`RaySampler` splits each batch of sub-env slots into contiguous slices, one per actor. For every phase
the actors get the policy's parameters (and the per-task adapted parameters) and the phase seed, and each
collects its slice's episodes; the slices are concatenated in slot order.

Identical results whatever the number of actors: an actor simulates only its slots but presents the policy
with the *whole* batch (:class:`PaddedSliceEnv`: the other slots are dummies that end at once). The policy then
sees tensors of the in-process shapes, and the sampling generator, seeded with the phase seed as in process,
draws the same numbers for every slot (torch's categorical and Gaussian draws depend on the shape, not on the
values). Sub-env ``i`` is reset with ``seed + i`` as in one vector env. A killed actor is restarted by Ray
(``max_restarts``) and its pending slice is re-run (``max_task_retries``); a slice is a pure function of what it
is sent, so the result is the same.

Ray is imported only when a sampler or connection is made (the ``[ray]`` extra installs it).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from intersection_meta.adaptation import GroupedPolicy
from intersection_meta.config import EnvConfig
from intersection_meta.envs.factory import make_batch_env, resolve_backend
from intersection_meta.rollout import Episodes, collect_episodes, concat, index_episodes
from intersection_meta.tasks import Task

#: Default limit on every wait for actors [s] (one phase of a slice, or the actors' start).
DEFAULT_TIMEOUT_S = 600.0
INSTALL_HINT = "pip install -e '.[ray]'"


class RayError(ValueError):  # a ValueError so that every CLI reports it in one line (cli/errors.py)
    """Ray is missing, unreachable, or a rollout on it failed or timed out (one-line message)."""


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`RayError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayError(f"--ray needs Ray, which is not installed; install it with: {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Start or join Ray once per process and return the ``ray`` module.

    Args:
        address: None or ``""`` starts a local instance (``num_cpus`` CPUs, default all; no dashboard);
            ``auto`` joins the cluster started on this machine with ``ray start``; ``ray://HOST:PORT`` joins a
            remote cluster through Ray Client. Nothing happens if Ray is already initialised.
        num_cpus: CPUs of a local instance (default: all of this machine's).

    Raises:
        RayError: Ray is not installed or the cluster cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address:
        kwargs["address"] = address
    else:
        # a private instance: loopback only, no dashboard
        kwargs.update(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = address or "a local instance"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RayError(f"cannot start or join Ray at {where}: {detail}") from None
    return ray


def slot_slices(n_slots: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of ``n_slots`` slots over at most ``workers`` actors (sizes differ by at
    most one; no empty range)."""
    parts = min(max(1, workers), n_slots)
    base, extra = divmod(n_slots, parts)
    sizes = [base + (1 if k < extra else 0) for k in range(parts)]
    edges = [0, *itertools.accumulate(sizes)]
    return list(itertools.pairwise(edges))


def _pad_rows(value: Any, lo: int, n: int, total: int) -> Any:
    """``value`` (an info entry of ``n`` sub-envs) placed at rows ``[lo, lo + n)`` of ``total`` zero rows;
    nested dicts recursively, anything that is not a per-sub-env array unchanged."""
    if isinstance(value, Mapping):
        return {k: _pad_rows(v, lo, n, total) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == n:
        out = np.zeros((total, *value.shape[1:]), dtype=value.dtype)
        out[lo : lo + n] = value
        return out
    return value


class PaddedSliceEnv(gym.vector.VectorEnv):
    """Slots ``[lo, lo + inner.num_envs)`` of a batch of ``total`` sub-envs; the others are dummies.

    The dummies observe zeros and terminate at their first step; their info entries are absent (``_key`` is
    False). ``reset(seed=s)`` resets the inner sub-env ``j`` with ``s + lo + j``, as sub-env ``lo + j`` of one
    vector env of ``total`` would be.
    """

    metadata: ClassVar[dict[str, Any]] = {}

    def __init__(self, inner: gym.vector.VectorEnv, lo: int, total: int) -> None:
        self.inner, self.lo, self.total, self.n = inner, int(lo), int(total), int(inner.num_envs)
        if self.lo < 0 or self.lo + self.n > self.total:
            raise ValueError(f"slice [{self.lo}, {self.lo + self.n}) is not inside a batch of {self.total}")
        self.metadata = dict(inner.metadata)
        self.num_envs = self.total
        self.single_observation_space = inner.single_observation_space
        self.single_action_space = inner.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.total)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.total)

    def _pad(self, value: Any) -> Any:
        return _pad_rows(value, self.lo, self.n, self.total)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        obs, infos = self.inner.reset(seed=None if seed is None else int(seed) + self.lo, options=options)
        return self._pad(np.asarray(obs)), self._pad(infos)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        obs, rewards, terminated, truncated, infos = self.inner.step(np.asarray(actions)[self.lo : self.lo + self.n])
        done = np.ones(self.total, dtype=bool)  # the dummies end at once
        done[self.lo : self.lo + self.n] = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        return self._pad(np.asarray(obs)), self._pad(np.asarray(rewards)), done, self._pad(truncated), self._pad(infos)

    def close(self, **kwargs: Any) -> None:
        self.inner.close()


@dataclass(frozen=True)
class SliceJob:
    """Everything one actor needs to collect one phase of its slice (a pure function of this value).

    Attributes:
        batch_key: identifies the batch, so an actor reuses its slice's env between phases.
        tasks: the tasks of slots ``[lo, lo + len(tasks))``.
        lo, total: the slice's first slot and the batch size.
        env: the run config's ``env`` section.
        seed: the phase seed (as given to ``collect_episodes`` in process).
        state: the policy module's state (its own parameters).
        groups: per-task parameters of the groups ``[first_group, first_group + len(groups))`` (those that
            overlap the slice) for a :class:`GroupedPolicy` phase, else None.
        group_size: slots per group.
    """

    batch_key: str
    tasks: tuple[Task, ...]
    lo: int
    total: int
    env: EnvConfig
    seed: int
    state: dict[str, torch.Tensor]
    groups: tuple[dict[str, torch.Tensor], ...] | None = None
    first_group: int = 0
    group_size: int = 1


class RolloutWorker:
    """The actor's body: holds a copy of the policy module and the env of its current slice."""

    def __init__(self, policy: torch.nn.Module, threads: int = 1) -> None:
        torch.set_num_threads(max(1, int(threads)))  # a dedicated worker process: its own entry point
        self.policy = policy
        self.key: str | None = None
        self.env: Any = None

    def pid(self) -> int:
        return os.getpid()

    def release(self, batch_key: str | None = None) -> None:
        """Close the slice env (of ``batch_key`` only, if given)."""
        if self.env is not None and (batch_key is None or batch_key == self.key):
            self.env.close()
            self.env, self.key = None, None

    def collect(self, job: SliceJob) -> Episodes:
        """The episodes of slots ``[job.lo, job.lo + len(job.tasks))`` for this phase."""
        if job.batch_key != self.key:
            self.release()
            self.env, self.key = make_batch_env(list(job.tasks), job.env), job.batch_key
        self.policy.load_state_dict(job.state)
        policy: Any = self.policy
        if job.groups is not None:
            params = [job.groups[0]] * (job.total // job.group_size)  # groups outside the slice: any values
            params[job.first_group : job.first_group + len(job.groups)] = job.groups
            policy = GroupedPolicy(self.policy, params, job.group_size)
        padded = PaddedSliceEnv(self.env, job.lo, job.total)
        episodes = collect_episodes(padded, policy, None, seed=job.seed)
        return index_episodes(episodes, slice(job.lo, job.lo + len(job.tasks)))


def _detached(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


def merge_slices(slices: Sequence[Episodes]) -> Episodes:
    """The batch's episodes from its slices in slot order, as one in-process rollout gives them (returns are
    summed over the merged reward tensor, the in-process reduction)."""
    merged = concat(slices)
    return merged._replace(returns=merged.rewards.sum(dim=0))


class _RayBatch:
    def __init__(self, sampler: RaySampler, tasks: Sequence[Task], env: EnvConfig) -> None:
        self.sampler, self.tasks, self.env = sampler, tuple(tasks), env
        self.key = uuid.uuid4().hex
        self.slices = slot_slices(len(self.tasks), sampler.workers)

    def _jobs(self, policy: Any, seed: int) -> list[SliceJob]:
        if isinstance(policy, GroupedPolicy):
            module, groups, size = policy.policy, [_detached(p) for p in policy.params_list], policy.group_size
        else:
            module, groups, size = policy, None, 1
        state = _detached(module.state_dict())
        jobs = []
        for lo, hi in self.slices:
            g0, g1 = (lo // size, -(-hi // size)) if groups is not None else (0, 0)  # groups overlapping the slice
            jobs.append(
                SliceJob(
                    batch_key=self.key,
                    tasks=self.tasks[lo:hi],
                    lo=lo,
                    total=len(self.tasks),
                    env=self.env,
                    seed=seed,
                    state=state,
                    groups=None if groups is None else tuple(groups[g0:g1]),
                    first_group=g0,
                    group_size=size,
                )
            )
        return jobs

    def collect(self, policy: Any, *, seed: int) -> Episodes:
        base = policy.policy if isinstance(policy, GroupedPolicy) else policy
        actors = self.sampler.actors(base)
        jobs = self._jobs(policy, seed)
        refs = [actor.collect.remote(job) for actor, job in zip(actors, jobs, strict=False)]
        return merge_slices(self.sampler.wait(refs, f"episodes (seed {seed}) of {len(self.tasks)} slots"))

    def close(self) -> None:
        for actor in self.sampler.started:
            actor.release.remote(self.key)  # fire and forget: the next batch closes it anyway


class RaySampler:
    """Collect each phase's episodes on ``workers`` Ray actors (1 CPU each), with the in-process results.

    Args:
        workers: number of actors; a batch of ``n`` slots uses ``min(workers, n)`` of them.
        timeout_s: limit on every wait (actors starting, one phase of all slices); exceeding it raises a
            :class:`RayError`, never hangs.
        max_restarts: how often Ray restarts a dead actor (its pending slice is re-run each time).
        threads: torch threads per actor.
        fast_backend_ok: accept batches on the fast backend (only to measure Ray's overhead on it:
            ``benchmarks/ray_scaling.py``); by default they are a :class:`RayError`.

    Call :func:`connect` first (or ``ray.init``). The actors start at the first collection, with a copy of the
    policy module; :meth:`close` stops them.
    """

    def __init__(
        self,
        workers: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_restarts: int = 3,
        threads: int = 1,
        fast_backend_ok: bool = False,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise RayError(f"ray_workers must be a positive integer, got {workers!r}")
        if not timeout_s > 0:
            raise RayError(f"the Ray timeout must be positive, got {timeout_s!r}")
        self.ray = import_ray()
        self.workers, self.timeout_s, self.max_restarts, self.threads = workers, float(timeout_s), max_restarts, threads
        self.fast_backend_ok = fast_backend_ok
        self.started: list[Any] = []

    def open(self, tasks: Sequence[Task], env: EnvConfig) -> _RayBatch:
        """Slots for ``tasks``; the fast backend is refused unless ``fast_backend_ok`` (see the class doc)."""
        if not self.fast_backend_ok and resolve_backend(env.backend, tasks[0]) == "fast":
            raise RayError(
                "--ray does not run the fast backend: 2 Ray actors were slower than the fast simulator in process "
                "(README, 'Scaling out'); train without --ray, or with --backend highway on Ray"
            )
        return _RayBatch(self, tasks, env)

    def actors(self, policy: torch.nn.Module) -> list[Any]:
        """The actors, started on first use with a copy of ``policy`` (its parameters are sent per phase)."""
        if not self.started:
            cpus = self.ray.cluster_resources().get("CPU", 0)
            if self.workers > cpus:
                raise RayError(f"ray_workers={self.workers} actors need 1 CPU each; the Ray cluster has {cpus:g}")
            remote = self.ray.remote(num_cpus=1, max_restarts=self.max_restarts, max_task_retries=self.max_restarts)(
                RolloutWorker
            )
            self.started = [remote.remote(policy, self.threads) for _ in range(self.workers)]
            self.wait([a.pid.remote() for a in self.started], f"{self.workers} rollout actors to start (1 CPU each)")
        return self.started

    def pids(self) -> list[int]:
        """Process ids of the running actors (for tests that kill one)."""
        return self.wait([a.pid.remote() for a in self.started], "actor process ids")

    def wait(self, refs: list[Any], what: str) -> list[Any]:
        """``ray.get(refs)`` within ``timeout_s``; a timeout or a failure is a one-line :class:`RayError`."""
        ray = self.ray
        try:
            return ray.get(refs, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise RayError(
                f"ray: timed out after {self.timeout_s:.0f} s waiting for {what}; is the cluster busy or short of CPUs?"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise RayError(f"ray: a rollout actor died {self.max_restarts + 1} times ({what}): {_first_line(exc)}") from None
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise RayError(f"ray: collecting {what} failed: {type(cause).__name__}: {_first_line(cause)}") from None
        except ray.exceptions.RayError as exc:  # lost objects, a lost node, ...
            raise RayError(f"ray: waiting for {what} failed: {type(exc).__name__}: {_first_line(exc)}") from None

    def close(self) -> None:
        for actor in self.started:
            self.ray.kill(actor)
        self.started = []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
