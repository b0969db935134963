"""The fast intersection simulator split over worker processes: :class:`ShardedFastIntersectionVectorEnv`.

The batch of scenes is cut into ``workers`` contiguous shards. Shard 0 is simulated in the calling process,
every other shard by one worker process running the same :class:`FastIntersectionVectorEnv` code. Actions,
observations, rewards, termination flags and the per-step info arrays travel through one
``multiprocessing.shared_memory`` block; the pipes only carry tiny control messages (``"step"``, a reset
request, ``"close"``). The scenes are independent and deterministic, so the results are identical to one
``FastIntersectionVectorEnv`` over the whole batch (tested).

Workers are started with the ``spawn`` method (safe with threaded libraries such as torch in the parent) and
are shut down by :meth:`ShardedFastIntersectionVectorEnv.close` or when the env is garbage collected.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing import shared_memory
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from intersection_meta.envs.fast_intersection import FastIntersectionVectorEnv, _check_settings
from intersection_meta.tasks import IntersectionTask

__all__ = ["ShardedFastIntersectionVectorEnv", "shard_bounds"]

#: Reward terms reported in ``infos["rewards"]`` by the fast env (in this order).
_REWARD_TERMS = ("collision_reward", "high_speed_reward", "arrived_reward", "on_road_reward")
#: Per-scene info arrays (besides the reward terms).
_INFO_KEYS = ("crashed", "arrived", "speed")


def shard_bounds(num_envs: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` scene ranges of ``workers`` shards, sizes differing by at most one."""
    edges = np.linspace(0, num_envs, workers + 1).round().astype(int)
    return [(int(edges[k]), int(edges[k + 1])) for k in range(workers)]


def _layout(num_envs: int, obs_dim: int, workers: int) -> dict[str, tuple[tuple[int, ...], np.dtype, int]]:
    """Name -> (shape, dtype, byte offset) of the arrays in the shared block (8-byte aligned)."""
    specs: list[tuple[str, tuple[int, ...], Any]] = [
        ("actions", (num_envs,), np.int64),
        ("obs", (num_envs, obs_dim), np.float32),
        ("rewards", (num_envs,), np.float64),
        ("terminated", (num_envs,), np.bool_),
        ("truncated", (num_envs,), np.bool_),
        ("crashed", (num_envs,), np.bool_),
        ("arrived", (num_envs,), np.bool_),
        ("speed", (num_envs,), np.float64),
        *((term, (num_envs,), np.float64) for term in _REWARD_TERMS),
        ("reset_mask", (num_envs,), np.bool_),
        ("cpu_s", (workers,), np.float64),
    ]
    out, offset = {}, 0
    for name, shape, dtype in specs:
        dt = np.dtype(dtype)
        out[name] = (shape, dt, offset)
        offset += -(-int(np.prod(shape)) * dt.itemsize // 8) * 8
    return out


def _views(buf: Any, layout: dict, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Views of the shared arrays restricted to scenes ``[lo, hi)`` (``cpu_s`` whole)."""
    views = {}
    for name, (shape, dtype, offset) in layout.items():
        arr = np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)
        views[name] = arr if name == "cpu_s" else arr[lo:hi]
    return views


def _write(views: dict[str, np.ndarray], result: tuple) -> None:
    """Copy one ``step``/``reset`` result of a shard into its shared views."""
    obs, rewards, terminated, truncated, infos = result
    views["obs"][...] = obs
    views["rewards"][...] = rewards
    views["terminated"][...] = terminated
    views["truncated"][...] = truncated
    for key in _INFO_KEYS:
        views[key][...] = infos[key]
    for term in _REWARD_TERMS:
        views[term][...] = infos["rewards"][term]


def _worker(
    conn: Any,
    shm_name: str,
    layout: dict,
    lo: int,
    hi: int,
    rank: int,
    tasks: list[IntersectionTask],
    seed: int | None,
    env_kwargs: dict[str, Any],
) -> None:
    """Worker process: simulate scenes ``[lo, hi)`` on command until ``"close"``."""
    shm = shared_memory.SharedMemory(name=shm_name)
    env, views = None, None
    try:
        views = _views(shm.buf, layout, lo, hi)
        env = FastIntersectionVectorEnv(tasks, seed=seed, **env_kwargs)
        conn.send(("ok", None))
        while True:
            cmd, arg = conn.recv()
            try:
                if cmd == "step":
                    _write(views, env.step(views["actions"]))
                elif cmd == "reset":
                    options = {"reset_mask": views["reset_mask"].copy()} if arg["masked"] else None
                    obs, infos = env.reset(seed=arg["seed"], options=options)
                    n = hi - lo
                    _write(views, (obs, np.zeros(n), np.zeros(n, bool), np.zeros(n, bool), infos))
                elif cmd == "state":
                    conn.send(("ok", env.vehicle_state()))
                    continue
                elif cmd == "close":
                    conn.send(("ok", None))
                    return
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                views["cpu_s"][rank] = time.process_time()
                conn.send(("ok", None))
            except Exception:  # reported to the parent, which raises it
                conn.send(("error", traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        del views
        if env is not None:
            env.close()
        shm.close()


def _shutdown(conns: list, procs: list, shm: shared_memory.SharedMemory) -> None:
    """Stop the workers and free the shared block (idempotent; used by ``close`` and the finalizer)."""
    for conn in conns:
        try:
            conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
    for conn, proc in zip(conns, procs, strict=True):
        try:
            if conn.poll(5.0):
                conn.recv()
        except (EOFError, OSError):
            pass
        proc.join(timeout=5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5.0)
        conn.close()
    try:
        shm.close()
    except BufferError:  # views still alive (finalizer during garbage collection); freed with them
        pass
    try:
        shm.unlink()
    except FileNotFoundError:
        pass


class ShardedFastIntersectionVectorEnv(VectorEnv):
    """:class:`FastIntersectionVectorEnv` over ``len(tasks)`` scenes, split over ``workers`` processes.

    Args:
        tasks: one ``IntersectionTask`` per sub-env (as for ``FastIntersectionVectorEnv``).
        seed: seed of ``self.np_random`` (the dynamics are deterministic).
        workers: number of shards (>= 1, at most ``len(tasks)``); shard 0 runs in this process, the others in
            ``workers - 1`` spawned processes.
        regulated_road, see_behind: passed to every shard's ``FastIntersectionVectorEnv``.

    Same spaces, autoreset mode (``NEXT_STEP``), observations, rewards, flags and infos as one
    ``FastIntersectionVectorEnv(tasks, seed)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        tasks: Sequence[IntersectionTask],
        seed: int | None = None,
        *,
        workers: int = 2,
        regulated_road: bool = False,
        see_behind: bool = True,
    ) -> None:
        tasks = list(tasks)
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if len(tasks) and workers > len(tasks):
            raise ValueError(f"workers ({workers}) must not exceed the number of scenes ({len(tasks)})")
        env_kwargs = {"regulated_road": regulated_road, "see_behind": see_behind}
        self._closed = True
        self.bounds = shard_bounds(len(tasks), int(workers))
        lo0, hi0 = self.bounds[0]
        # Validates the tasks (also of the other shards, whose settings must match shard 0's).
        self._local = FastIntersectionVectorEnv(tasks[lo0:hi0], seed=seed, **env_kwargs)
        if len(tasks) > hi0:
            _check_settings(tasks)
        self.tasks = tuple(tasks)
        self.settings = self._local.settings
        self.num_envs = len(tasks)
        self.workers = int(workers)
        self.render_mode = None
        self.single_observation_space = self._local.single_observation_space
        self.single_action_space = self._local.single_action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        obs_dim = int(self.single_observation_space.shape[0])
        self._layout = _layout(self.num_envs, obs_dim, self.workers)
        size = max(sum(-(-int(np.prod(s)) * d.itemsize // 8) * 8 for s, d, _ in self._layout.values()), 8)
        self._shm = shared_memory.SharedMemory(create=True, size=size)
        self._all = _views(self._shm.buf, self._layout, 0, self.num_envs)
        self._mine = _views(self._shm.buf, self._layout, lo0, hi0)
        ctx = mp.get_context("spawn")
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._procs, self._shm)
        self._closed = False
        for rank, (lo, hi) in enumerate(self.bounds[1:], start=1):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(child, self._shm.name, self._layout, lo, hi, rank, tasks[lo:hi], seed, env_kwargs),
                daemon=True,
                name=f"fast-intersection-shard-{rank}",
            )
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._gather()
        self._started = False

    # --- plumbing ------------------------------------------------------------------------------------------
    def _broadcast(self, cmd: str, arg: Any = None) -> None:
        for conn in self._conns:
            conn.send((cmd, arg))

    def _gather(self) -> list[Any]:
        out, errors = [], []
        for rank, conn in enumerate(self._conns, start=1):
            try:
                status, payload = conn.recv()
            except EOFError:
                status, payload = "error", f"worker {rank} exited unexpectedly"
            if status == "error":
                errors.append(f"shard {rank}: {payload}")
            out.append(payload)
        if errors:
            raise RuntimeError("fast-intersection worker failed:\n" + "\n".join(errors))
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the env is closed")

    def _result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Copies of the shared result arrays, in ``FastIntersectionVectorEnv``'s format."""
        a = self._all
        mask = np.ones(self.num_envs, dtype=bool)
        rewards = {term: a[term].copy() for term in _REWARD_TERMS}
        rewards.update({"_" + term: mask.copy() for term in _REWARD_TERMS})
        infos: dict[str, Any] = {}
        for key in _INFO_KEYS:
            infos[key] = a[key].copy()
            infos["_" + key] = mask.copy()
        infos["rewards"] = rewards
        infos["_rewards"] = mask.copy()
        return a["obs"].copy(), a["rewards"].copy(), a["terminated"].copy(), a["truncated"].copy(), infos

    # --- gymnasium API -------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        self._check_open()
        if isinstance(seed, (list, tuple)):
            seed = seed[0] if seed else None
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        unknown = set(options or {}) - {"reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['reset_mask']")
        masked = bool(options and "reset_mask" in options)
        if masked:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if not self._started:
                raise ValueError("the first reset must reset every sub-env (no reset_mask)")
            self._all["reset_mask"][...] = mask
        self._broadcast("reset", {"seed": seed, "masked": masked})
        lo0, hi0 = self.bounds[0]
        local_options = {"reset_mask": self._mine["reset_mask"].copy()} if masked else None
        obs, infos = self._local.reset(seed=seed, options=local_options)
        n0 = hi0 - lo0
        _write(self._mine, (obs, np.zeros(n0), np.zeros(n0, bool), np.zeros(n0, bool), infos))
        self._gather()
        self._started = True
        obs, _, _, _, infos = self._result()
        return obs, infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self._check_open()
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions).reshape(-1)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {np.shape(actions)}")
        if np.any((actions < 0) | (actions >= self.single_action_space.n)):
            raise ValueError(f"actions must be in [0, {self.single_action_space.n - 1}], got {actions}")
        self._all["actions"][...] = actions
        self._broadcast("step")
        _write(self._mine, self._local.step(self._mine["actions"]))
        self._gather()
        return self._result()

    def vehicle_state(self) -> dict[str, np.ndarray]:
        """The simulator state arrays of all shards, concatenated along the scene axis."""
        self._check_open()
        self._broadcast("state")
        parts = [self._local.vehicle_state(), *self._gather()]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by this process plus the workers (as of their last command)."""
        return time.process_time() + float(self._all["cpu_s"][1:].sum())

    @property
    def worker_pids(self) -> list[int]:
        return [int(p.pid) for p in self._procs]

    def close(self, **kwargs: Any) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._all = self._mine = {}
        self._local.close()
        self._finalizer()
