"""The one place tasks become gymnasium envs: :func:`make_env`, :func:`make_vector_env`.

Seeding contract:

* ``make_env(task, seed=s)`` calls ``env.reset(seed=s)`` once before returning the env. The env's RNG is then
  seeded, and the caller's following ``env.reset()`` calls (without a seed) continue that seeded stream,
  so two envs made with the same task and seed yield identical episodes for the same actions.
* ``make_vector_env(tasks, seed=s)`` builds sub-env ``i`` with ``make_env(tasks[i], seed=derive_seed(s, i))``;
  call ``vec.reset()`` WITHOUT a seed afterwards (gymnasium's ``vec.reset(seed=x)`` would reseed sub-env ``i``
  with ``x + i`` instead). ``seed=None`` leaves every sub-env unseeded (nondeterministic for LunarLander; the
  intersection is deterministic anyway).
* Autoreset is gymnasium's default ``NEXT_STEP``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from intersection_meta.config import EnvConfig
from intersection_meta.registry import BACKENDS, unknown_name
from intersection_meta.seeding import derive_seed
from intersection_meta.tasks import CartPoleTask, IntersectionTask, LunarLanderTask, Task

_KINDS: tuple[str, ...] = ("intersection", "cartpole", "lunarlander")


def _check_task(task: Task) -> None:
    if not isinstance(task, IntersectionTask | CartPoleTask | LunarLanderTask):
        raise TypeError(f"expected an IntersectionTask, CartPoleTask or LunarLanderTask, got {type(task).__name__}")


def make_env(task: Task, *, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """Build the gymnasium env of ``task`` (dispatch on ``task.kind``).

    Args:
        task: the task to simulate.
        seed: if given, the env is reset once with ``reset(seed=seed)`` before being returned (see the module
            docstring); the caller still calls ``env.reset()`` to start its first episode.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.

    Returns:
        The env. Intersection: ``TwoVehicleIntersectionEnv`` through ``gym.make`` (flat float32 observations);
        CartPole/LunarLander: gymnasium's envs with a TimeLimit of ``task.max_episode_steps``.
    """
    _check_task(task)
    if task.kind == "intersection":
        from intersection_meta.envs import INTERSECTION_ENV_ID

        env = gym.make(INTERSECTION_ENV_ID, task=task, render_mode=render_mode)
    elif task.kind == "cartpole":
        from intersection_meta.envs.classic import make_cartpole_env

        env = make_cartpole_env(task, render_mode=render_mode)
    elif task.kind == "lunarlander":
        from intersection_meta.envs.classic import make_lunarlander_env

        env = make_lunarlander_env(task, render_mode=render_mode)
    else:
        raise ValueError(f"unknown task kind {task.kind!r}; allowed: {list(_KINDS)}")
    if seed is not None:
        env.reset(seed=int(seed))
    return env


def sub_env_seed(seed: int | None, index: int) -> int | None:
    """Seed of sub-env ``index`` of a vector env built with ``seed``: ``derive_seed(seed, index)``."""
    return None if seed is None else derive_seed(int(seed), int(index))


def make_vector_env(
    tasks: Sequence[Task],
    *,
    seed: int | None = None,
    backend: str = "highway",
    asynchronous: bool = False,
) -> gym.vector.VectorEnv:
    """One sub-env per task: sub-env ``i`` runs ``tasks[i]`` (repeat a task to get several episode slots).

    Args:
        tasks: non-empty, all of the same kind.
        seed: sub-env ``i`` is seeded with :func:`sub_env_seed` ``(seed, i)`` (see the module docstring).
        backend: ``"highway"`` (Sync/AsyncVectorEnv of :func:`make_env` envs; also for CartPole/LunarLander)
            or ``"fast"`` (``FastIntersectionVectorEnv(tasks, seed=seed)``, intersection tasks only, discrete
            or continuous actions; one process, numba threads for large batches).
        asynchronous: ``"highway"`` backend only: ``AsyncVectorEnv`` (one process per sub-env) instead of
            ``SyncVectorEnv``.

    Raises:
        ValueError: empty ``tasks``, mixed kinds, unknown backend, "fast" with non-intersection tasks.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("make_vector_env needs at least one task")
    for task in tasks:
        _check_task(task)
    kinds = sorted({t.kind for t in tasks})
    if len(kinds) > 1:
        raise ValueError(f"all tasks of a vector env must have the same kind, got {kinds}")
    if backend not in BACKENDS or not BACKENDS[backend].concrete:
        raise ValueError(
            unknown_name("backend", backend, {k: v for k, v in BACKENDS.items() if v.concrete})
            + " (resolve 'auto' with resolve_backend)"
        )
    if backend == "fast":
        if kinds[0] != "intersection":
            raise ValueError(f"backend 'fast' simulates intersection tasks only, got kind {kinds[0]!r}")
        if asynchronous:
            raise ValueError("asynchronous=True applies to backend 'highway' only")
        from intersection_meta.envs.fast import FastIntersectionVectorEnv  # numba; imported when needed

        return FastIntersectionVectorEnv(tasks, seed=seed)

    env_fns: list[Callable[[], gym.Env]] = [
        functools.partial(make_env, task, seed=sub_env_seed(seed, i)) for i, task in enumerate(tasks)
    ]
    autoreset = gym.vector.AutoresetMode.NEXT_STEP
    if asynchronous:
        return gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=autoreset)
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=autoreset)


def resolve_backend(backend: str, task: Task) -> str:
    """The concrete simulator for tasks like ``task``: ``auto`` picks the fast compiled simulator for
    intersection tasks (discrete or continuous actions; the same outcomes as highway-env, see
    benchmarks/fidelity.py), else ``highway`` (a gymnasium vector env of single envs).

    Raises:
        ValueError: an unknown backend (listing the registry's), or ``fast`` for a task it cannot simulate.
    """
    if backend not in BACKENDS:
        raise ValueError(unknown_name("backend", backend, BACKENDS))
    fast_ok = task.kind == "intersection"
    if backend == "fast" and not fast_ok:
        raise ValueError("the fast backend simulates intersection scenarios only; use highway or auto")
    if backend == "auto":
        return "fast" if fast_ok else "highway"
    return backend


def simulator_name(backend: str, task: Task) -> str:
    """What actually simulates ``task`` on the concrete ``backend``, for report headers (e.g. ``gymnasium
    CartPole-v1``, never ``highway`` for a CartPole task)."""
    if backend == "fast":
        return "fast (compiled batched intersection simulator)"
    if task.kind == "intersection":
        from importlib.metadata import version

        return f"highway-env {version('highway-env')}"
    env_id = {"cartpole": "CartPole-v1", "lunarlander": "LunarLander-v3"}[task.kind]
    return f"gymnasium {env_id}"


def make_batch_env(tasks: Sequence[Task], env: EnvConfig, *, seed: int | None = None) -> gym.vector.VectorEnv:
    """:func:`make_vector_env` on the run config's ``env`` section (``backend``, resolved for these tasks)."""
    return make_vector_env(tasks, seed=seed, backend=resolve_backend(env.backend, tasks[0]))


def observation_and_action_spaces(task: Task) -> tuple[spaces.Space, spaces.Space]:
    """``(observation_space, action_space)`` of ``make_env(task)``, without simulating anything.

    Intersection spaces are computed from the settings; CartPole/LunarLander spaces are read from a
    freshly built (unreset) env, which is cheap.
    """
    _check_task(task)
    if task.kind == "intersection":
        from intersection_meta.envs.intersection import observation_space, validate_task

        validate_task(task)
        s = task.settings
        obs_space = observation_space(s.observation_features)
        if s.action == "discrete":
            return obs_space, spaces.Discrete(3)
        return obs_space, spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    env = make_env(task)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()
