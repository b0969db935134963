"""Samplers: where a meta-iteration's episodes are collected (in this process, or on Ray actors).

The trainer opens one batch of sub-env slots per phase group (the meta-batch, or the directed step's medium
task), collects episodes on it with a policy (the policy module itself, or a :class:`GroupedPolicy` with
per-task parameters) and a seed, and closes it. :class:`LocalSampler` does this with one vector env in this
process; ``intersection_meta.distributed.RaySampler`` splits the slots over Ray actors with identical results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from intersection_meta.config import EnvConfig
from intersection_meta.envs.factory import make_batch_env
from intersection_meta.rollout import Episodes, collect_episodes
from intersection_meta.tasks import Task


class SlotBatch(Protocol):
    """Sub-env slots (one task each, task-major) that episodes are collected on, phase after phase."""

    def collect(self, policy: Any, *, seed: int) -> Episodes:
        """One episode per slot with ``policy`` (see :func:`~intersection_meta.rollout.collect_episodes`)."""
        ...

    def close(self) -> None: ...


class Sampler(Protocol):
    """Opens :class:`SlotBatch` es; ``close`` releases whatever the sampler holds (processes, actors)."""

    def open(self, tasks: Sequence[Task], env: EnvConfig) -> SlotBatch:
        """Slots for ``tasks`` on the simulator of the run config's ``env`` section."""
        ...

    def close(self) -> None: ...


class _LocalBatch:
    def __init__(self, vec_env: Any) -> None:
        self.vec_env = vec_env

    def collect(self, policy: Any, *, seed: int) -> Episodes:
        return collect_episodes(self.vec_env, policy, None, seed=seed)

    def close(self) -> None:
        self.vec_env.close()


class LocalSampler:
    """One vector env per batch, in this process."""

    def open(self, tasks: Sequence[Task], env: EnvConfig) -> SlotBatch:
        # Built once per batch and reused for the pre- and post-adaptation rollouts: collect_episodes reseeds
        # every sub-env on reset, so construction needs no seed.
        return _LocalBatch(make_batch_env(list(tasks), env))

    def close(self) -> None:
        pass
