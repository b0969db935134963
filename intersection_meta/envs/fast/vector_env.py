"""``FastIntersectionVectorEnv``: the gymnasium ``VectorEnv`` around the compiled kernel.

``FastIntersectionVectorEnv(tasks, seed=...)`` simulates ``len(tasks)`` scenes of the reference
``TwoVehicleIntersectionEnv`` at once (see :mod:`intersection_meta.envs.fast.kernel` for what is simulated
and how exactly), as a gymnasium 1.x ``VectorEnv`` with ``NEXT_STEP`` autoreset. The simulation is
deterministic: seeds only seed ``self.np_random`` (unused by the dynamics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numba
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from intersection_meta.criticality import CONFLICT_FEATURES_GONE, CRITICALITY_KEYS, CriticalityTracker, zone_array
from intersection_meta.envs.fast import kernel as K
from intersection_meta.envs.fast.numerics import dot_is_fused
from intersection_meta.envs.fast.road import destination_node, entry_index, lane_table, route
from intersection_meta.tasks import (
    APPROACH_LANE_LENGTH_M,
    CONFLICT_FEATURES,
    IntersectionSettings,
    IntersectionTask,
)

__all__ = ["PARALLEL_MIN_SCENES", "FastIntersectionVectorEnv"]

#: Batches of at least this many scenes are spread over numba's threads (``numba.set_num_threads``);
#: smaller ones run in the calling thread. Earlier measurement on 2 cores: 2 threads do 86% of the serial work
#: per CPU-second at 4,096 scenes, 95% at 65,536, 74% at 1,024 and under 40% at 256. Re-measured on the idle
#: 2-core machine (yield_left, ms per step() 1 -> 2 threads): 256 scenes 1.45 -> 0.76 (1.90x), 400 scenes
#: 2.18 -> 1.20 (1.82x), 128 scenes 1.80x, 20 scenes 1.51x; a busy second core makes threads cost more.
#: 256 lets the default run's 400-scene batches use both cores (the directed step's 20 scenes stay serial).
PARALLEL_MIN_SCENES = 256

_DISCRETE_ACTIONS = ("SLOWER", "IDLE", "FASTER")


def _check_settings(tasks: Sequence[IntersectionTask]) -> IntersectionSettings:
    if len(tasks) == 0:
        raise ValueError("FastIntersectionVectorEnv needs at least one task")
    from intersection_meta.envs.intersection import validate_task  # the reference env's own checks

    for t in tasks:
        if not isinstance(t, IntersectionTask):
            raise TypeError(f"FastIntersectionVectorEnv takes IntersectionTask values, got {type(t).__name__}")
        validate_task(t)
    s0 = tasks[0].settings
    for f in s0.observation_features:
        if f not in K.FEATURES:
            raise ValueError(f"observation feature {f!r} is not supported by the fast backend; allowed: {K.FEATURES}")
    for t in tasks[1:]:
        s = t.settings
        same = (
            s.policy_frequency_hz == s0.policy_frequency_hz
            and s.simulation_frequency_hz == s0.simulation_frequency_hz
            and s.action == s0.action
            and tuple(s.target_speeds_mps) == tuple(s0.target_speeds_mps)
            and tuple(s.observation_features) == tuple(s0.observation_features)
            and s.observation_absolute == s0.observation_absolute
        )
        if not same:
            raise ValueError(
                "all tasks of a FastIntersectionVectorEnv must share their settings (only reward weights and "
                f"durations may differ); task {t.task_id} differs from task {tasks[0].task_id}"
            )
    return s0


class FastIntersectionVectorEnv(VectorEnv):
    """N two-vehicle intersection scenes simulated by a compiled kernel (see the module docstring).

    Args:
        tasks: one ``IntersectionTask`` per sub-env (they must share their settings except reward weights and
            durations).
        seed: optional seed of ``self.np_random`` (the dynamics are deterministic).

    Observations are float32 arrays ``(num_envs, 2 * n_features)``. Actions: integers in {0 SLOWER, 1 IDLE,
    2 FASTER} (``settings.action == "discrete"``) or an array ``(num_envs, 1)`` in [-1, 1] (``"continuous"``:
    acceleration ``5 a`` m/s^2, computed in the action's dtype like highway-env's ``ContinuousAction``).
    ``step`` infos hold ``crashed``, ``arrived``, ``speed``, ``rewards`` (a dict of reward-term arrays) and
    ``criticality`` (a dict of the episode's running criticality metrics, :mod:`intersection_meta.criticality`,
    computed from every simulation frame), each with gymnasium's ``_key`` mask.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, tasks: Sequence[IntersectionTask], seed: int | None = None) -> None:
        from intersection_meta.envs.intersection import CONTINUOUS_ACCELERATION_RANGE_MPS2, observation_space

        self.tasks = tuple(tasks)
        self.settings = _check_settings(self.tasks)
        settings = self.settings
        self.num_envs = len(self.tasks)
        self.render_mode = None
        self._discrete = settings.action == "discrete"
        self._features = np.array([K.FEATURES.index(f) for f in settings.observation_features], dtype=np.int64)
        # (observation column, index in criticality's (conflict_distance, conflict_time)) of each conflict feature.
        self._conflict_columns = [
            (j, CONFLICT_FEATURES.index(f))
            for j, f in enumerate(settings.observation_features)
            if f in CONFLICT_FEATURES
        ]
        self.single_observation_space = observation_space(settings.observation_features)
        if self._discrete:
            self.single_action_space: gym.spaces.Space = gym.spaces.Discrete(len(_DISCRETE_ACTIONS))
        else:
            self.single_action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._acceleration_range_mps2 = tuple(float(a) for a in CONTINUOUS_ACCELERATION_RANGE_MPS2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._frames = int(settings.simulation_frequency_hz // settings.policy_frequency_hz)
        self._dt = 1 / settings.simulation_frequency_hz
        self._policy_dt = 1 / settings.policy_frequency_hz
        self._target_speeds = np.asarray(settings.target_speeds_mps, dtype=np.float64)
        self._build_scenes()
        n = self.num_envs
        self._vf = np.zeros((n, 2, K.NVF))
        self._vi = np.zeros((n, 2, K.NVI), dtype=np.int64)
        self._sf = np.zeros((n, K.NSF))
        self._si = np.zeros((n, K.NSI), dtype=np.int64)
        self._started = False
        self._no_actions = np.zeros(n, dtype=np.int64)
        self._no_acc = np.zeros(n)
        self._all_active = np.ones(n, dtype=bool)
        # Criticality metrics: the kernel writes each frame's states here, the tracker reads them after a step.
        self._frame_states = np.zeros((n, self._frames, 2, 4))
        self._criticality = CriticalityTracker(zone_array(self.tasks), self._dt, PARALLEL_MIN_SCENES)
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)

    # --- initial scenes --------------------------------------------------------------------------------------
    def _build_scenes(self) -> None:
        """Initial vehicle states, routes and per-scene parameters of every task."""
        from intersection_meta.envs.intersection import _IntersectionIDMVehicle as Idm
        from intersection_meta.envs.intersection import idm_distance_wanted_m

        tab = lane_table()
        self._geo, self._successors = tab.geometry, tab.successors
        self._from_id, self._to_id = tab.from_id, tab.to_id
        self._fused = dot_is_fused()
        n = self.num_envs
        lane0 = np.zeros((n, 2), dtype=np.int64)
        s0 = np.zeros((n, 2))
        init_vf = np.zeros((n, 2, K.NVF))
        init_vi = np.zeros((n, 2, K.NVI), dtype=np.int64)
        init_si = np.zeros((n, K.NSI), dtype=np.int64)
        params = np.zeros((n, K.NP))
        destinations = []
        for i, t in enumerate(self.tasks):
            ke, ko = entry_index(t.ego_entry), entry_index(t.other_entry)
            lane0[i] = (tab.index((f"o{ke}", f"ir{ke}", 0)), tab.index((f"o{ko}", f"ir{ko}", 0)))
            s0[i] = (
                APPROACH_LANE_LENGTH_M - t.ego_distance_to_stop_m,
                APPROACH_LANE_LENGTH_M - t.other_distance_to_stop_m,
            )
            init_vf[i, :, K.V_SPEED] = (t.ego_speed_mps, t.other_speed_mps)
            destinations.append((destination_node(ke, t.ego_intent), destination_node(ko, t.other_intent)))
            r = t.settings.rewards
            p = params[i]
            p[K.P_OTHER_IS_IDM] = float(t.other_driver == "idm")
            # The task's hidden driver parameters (the reference sets them on its IDM vehicle's instance).
            p[K.P_IDM_DISTANCE_WANTED_M] = idm_distance_wanted_m(t)
            p[K.P_IDM_TIME_WANTED_S] = t.other_idm_time_headway_s
            p[K.P_IDM_ACC_MAX_MPS2] = t.other_idm_max_accel_mps2
            p[K.P_IDM_COMFORT_ACC_MAX_MPS2] = Idm.COMFORT_ACC_MAX
            p[K.P_IDM_COMFORT_ACC_MIN_MPS2] = Idm.COMFORT_ACC_MIN
            p[K.P_IDM_DELTA] = Idm.DELTA
            p[K.P_W_COLLISION] = r.collision_reward
            p[K.P_W_HIGH_SPEED] = r.high_speed_reward
            p[K.P_W_ARRIVED] = r.arrived_reward
            p[K.P_SPEED_LO_MPS], p[K.P_SPEED_HI_MPS] = r.reward_speed_range_mps
            p[K.P_NORMALIZE_REWARD] = float(r.normalize_reward)
            p[K.P_DURATION_S] = t.settings.duration_s
        if self._discrete:
            params[:, K.P_EGO_MIN_SPEED_MPS] = K.VEHICLE_MIN_SPEED_MPS
            params[:, K.P_EGO_MAX_SPEED_MPS] = K.VEHICLE_MAX_SPEED_MPS
        else:  # ContinuousAction's speed_range (see intersection.build_config)
            params[:, K.P_EGO_MIN_SPEED_MPS] = 0.0
            params[:, K.P_EGO_MAX_SPEED_MPS] = float(max(self.settings.target_speeds_mps))
        K.init_poses(self._geo, lane0, s0, self._fused, init_vf, init_vi)
        planned = [[route(int(init_vi[i, v, K.VI_LANE]), destinations[i][v]) for v in range(2)] for i in range(n)]
        width = max(len(rt) for pair in planned for rt in pair) + 1
        routes = -np.ones((n, 2, width), dtype=np.int64)
        route_len = np.zeros((n, 2), dtype=np.int64)
        for i in range(n):
            for v in range(2):
                routes[i, v, : len(planned[i][v])] = planned[i][v]
                route_len[i, v] = len(planned[i][v])
        # ControlledVehicle: target speed = initial speed; MDPVehicle: the closest allowed target speed.
        init_vf[:, :, K.V_TARGET_SPEED] = init_vf[:, :, K.V_SPEED]
        if self._discrete:
            for i in range(n):
                k = K.speed_to_index(init_vf[i, K.EGO, K.V_SPEED], self._target_speeds)
                init_si[i, K.SI_SPEED_INDEX] = k
                init_vf[i, K.EGO, K.V_TARGET_SPEED] = self._target_speeds[k]
        init_si[:, K.SI_PRESENT] = 1
        init_vf[:, :, K.V_TRIG_ANGLE] = np.nan
        self._init_vf, self._init_vi, self._init_si = init_vf, init_vi, init_si
        self._params, self._routes, self._route_len = params, routes, route_len

    # --- gymnasium API -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset every scene, or those of ``options={"reset_mask": mask}``; returns all observations."""
        if isinstance(seed, (list, tuple)):
            if len(seed) != self.num_envs:
                raise ValueError(f"reset(seed=[...]) needs {self.num_envs} seeds, got {len(seed)}")
            seed = seed[0]
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        unknown = set(options or {}) - {"reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['reset_mask']")
        mask = np.ones(self.num_envs, dtype=bool)
        if options and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"], dtype=bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if not self._started:
                raise ValueError("the first reset must reset every sub-env (no reset_mask)")
        self._started = True
        obs, out_f, out_b = self._outputs()
        K.reset_and_observe(
            mask, self._vf, self._vi, self._sf, self._si, self._init_vf, self._init_vi, self._init_si,
            self._params, self._geo, self._features, self.settings.observation_absolute, self._fused,
            obs, out_f, out_b,
        )  # fmt: skip
        self._criticality.reset(mask, self._tracked_states())
        self._fill_conflict_features(obs, out_b[K.B_OTHER_SEEN])
        return obs, self._infos(out_f, out_b)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """One decision step of every scene (``NEXT_STEP`` autoreset of the scenes that ended last step)."""
        return self._step(actions, self._all_active)

    def step_active(
        self, actions: Any, active: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """:meth:`step` of the scenes of the bool mask ``active`` only; the others are held as they are (not
        simulated, not autoreset: a held scene that ended is reset by its next step) and report a zero
        observation and reward, ``terminated = truncated = False`` and infos with their ``_key`` masks False.

        This is what :func:`~intersection_meta.rollout.collect_episodes` uses so that scenes whose episode has
        ended cost nothing; the scenes it steps evolve exactly as under :meth:`step`.
        """
        mask = np.asarray(active)
        if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
            raise ValueError(f"active must be a bool array of shape ({self.num_envs},), got {mask.dtype} {mask.shape}")
        return self._step(actions, mask)

    def _step(self, actions: Any, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if self._discrete:
            discrete_actions, commanded_acc = self._discrete_actions(actions), self._no_acc
        else:
            discrete_actions, commanded_acc = self._no_actions, self._continuous_actions(actions)
        obs, out_f, out_b = self._outputs()
        resetting = self._si[:, K.SI_NEEDS_RESET] != 0
        present = self._si[:, K.SI_PRESENT] != 0
        threaded = self.num_envs >= PARALLEL_MIN_SCENES and numba.get_num_threads() > 1
        step = K.step_parallel if threaded else K.step_serial
        bad = step(
            discrete_actions, active, commanded_acc, self._vf, self._vi, self._sf, self._si, self._init_vf,
            self._init_vi, self._init_si, self._params, self._routes, self._route_len, self._geo,
            self._successors, self._from_id, self._to_id, self._target_speeds, self._features,
            self.settings.observation_absolute, self._discrete, self._frames, self._dt, self._policy_dt,
            self._fused, obs, out_f, out_b, self._frame_states,
        )  # fmt: skip
        if bad >= 0:
            raise ValueError(
                f"actions must be in [0, {len(_DISCRETE_ACTIONS) - 1}], got {discrete_actions[bad]} for sub-env {bad}"
            )
        resetting &= active  # held scenes were neither simulated nor reset: their metrics stay as they are
        self._criticality.update(self._frame_states, present, skip=resetting | ~active)
        if resetting.any():
            self._criticality.reset(resetting, self._tracked_states())
        self._fill_conflict_features(obs, out_b[K.B_OTHER_SEEN], None if active is self._all_active else active)
        infos = self._infos(out_f, out_b, None if active is self._all_active else active)
        return obs, out_f[K.O_REWARD], out_b[K.B_TERMINATED], out_b[K.B_TRUNCATED], infos

    # --- helpers ---------------------------------------------------------------------------------------------
    def _discrete_actions(self, actions: Any) -> np.ndarray:
        """Integer actions as int64 (their range is checked by the kernel, before it steps anything)."""
        a = np.asarray(actions)
        if a.size != self.num_envs or a.ndim > 2:
            raise ValueError(f"expected {self.num_envs} actions, got shape {a.shape}")
        if a.dtype != np.int64:
            if a.dtype.kind not in "iub" and not (a.dtype.kind == "f" and np.array_equal(a, np.round(a))):
                raise ValueError(f"discrete actions must be integers, got {a.dtype} values {a.reshape(-1)}")
            a = a.astype(np.int64)
        return a.reshape(-1)

    def _continuous_actions(self, actions: Any) -> np.ndarray:
        """``ContinuousAction.get_action``: clip to [-1, 1], ``utils.lmap`` to the acceleration range, in the
        action's own dtype (float32 from the action space), as highway-env computes it per sub-env."""
        a = np.asarray(actions)
        if a.shape not in ((self.num_envs, 1), (self.num_envs,)):
            raise ValueError(f"expected actions of shape ({self.num_envs}, 1), got {a.shape}")
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise ValueError(f"continuous actions must be finite floats, got dtype {a.dtype}")
        a = np.clip(a.reshape(-1), -1, 1)
        lo, hi = self._acceleration_range_mps2
        return (lo + (a - (-1)) * (hi - lo) / (1 - (-1))).astype(np.float64)

    def _fill_conflict_features(self, obs: np.ndarray, seen: np.ndarray, active: np.ndarray | None = None) -> None:
        """Write the conflict features (left 0 by the kernel) into ``obs`` from the criticality tracker's state, as
        the reference's observation does: the other car's where its row is ``seen``, else
        ``CONFLICT_FEATURES_GONE``; held scenes (not ``active``) stay 0."""
        if not self._conflict_columns:
            return
        values = self._criticality.conflict_features()  # [N, 2, 2]
        n_feat = self._features.size
        for j, k in self._conflict_columns:
            obs[:, j] = values[:, K.EGO, k] if active is None else np.where(active, values[:, K.EGO, k], 0.0)
            obs[:, n_feat + j] = np.where(seen, values[:, K.OTHER, k], CONFLICT_FEATURES_GONE[k])
            if active is not None:
                obs[~active, n_feat + j] = 0.0

    def _outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fresh output arrays of one call: observations, float rows ``K.O_*``, bool rows ``K.B_*``
        (returned to the caller as row views, one allocation each)."""
        n = self.num_envs
        obs = np.empty((n, self.single_observation_space.shape[0]), dtype=np.float32)
        return obs, np.empty((K.NOF, n)), np.empty((K.NOB, n), dtype=bool)

    def _infos(self, out_f: np.ndarray, out_b: np.ndarray, present: np.ndarray | None = None) -> dict[str, Any]:
        """gymnasium's infos with the ``_key`` masks set for every sub-env, or for those of ``present``."""
        n_rewards = len(K.REWARD_TERMS)
        masks = np.empty((5 + n_rewards + len(CRITICALITY_KEYS), self.num_envs), dtype=bool)
        masks[:] = True if present is None else present
        rewards: dict[str, np.ndarray] = {}
        for k, (name, row) in enumerate(zip(K.REWARD_TERMS, K.REWARD_TERM_ROWS, strict=True)):
            rewards[name] = out_f[row]
            rewards["_" + name] = masks[4 + k]
        criticality: dict[str, np.ndarray] = {}
        for k, (name, values) in enumerate(self._criticality.values().items()):
            criticality[name] = values
            criticality["_" + name] = masks[5 + n_rewards + k]
        return {
            "crashed": out_b[K.B_CRASHED],
            "_crashed": masks[0],
            "arrived": out_b[K.B_ARRIVED],
            "_arrived": masks[1],
            "speed": out_f[K.O_SPEED],
            "_speed": masks[2],
            "rewards": rewards,
            "_rewards": masks[3],
            "criticality": criticality,
            "_criticality": masks[4 + n_rewards],
        }

    def _tracked_states(self) -> np.ndarray:
        """``[N, 2, 4]`` x, y, speed, crashed of both vehicles (``criticality.FRAME_FIELDS``)."""
        vf = self._vf
        crashed = self._vi[:, :, K.VI_CRASHED].astype(np.float64)
        return np.stack([vf[:, :, K.V_X], vf[:, :, K.V_Y], vf[:, :, K.V_SPEED], crashed], axis=-1)

    # --- introspection (tests, fidelity tools) -------------------------------------------------------------
    def vehicle_state(self) -> dict[str, np.ndarray]:
        """A copy of the vehicles' state: ``x, y, heading, speed, lane, crashed`` ``(num_envs, 2)`` (ego then
        other) and ``present`` ``(num_envs,)``."""
        return {
            "x": self._vf[:, :, K.V_X].copy(),
            "y": self._vf[:, :, K.V_Y].copy(),
            "heading": self._vf[:, :, K.V_HEADING].copy(),
            "speed": self._vf[:, :, K.V_SPEED].copy(),
            "lane": self._vi[:, :, K.VI_LANE].copy(),
            "crashed": self._vi[:, :, K.VI_CRASHED] != 0,
            "present": self._si[:, K.SI_PRESENT] != 0,
        }
