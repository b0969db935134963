"""The reference two-vehicle intersection environment, built on highway-env's ``IntersectionEnv``.

Everything that maps the package's task vocabulary (entries, intents, drivers) onto highway-env's road
network (node names ``o{k}``, ``ir{k}``, ``il{k}``) lives in this module; magic node strings never leave
``intersection_meta.envs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from highway_env.envs.common.action import ContinuousAction
from highway_env.envs.common.observation import KinematicObservation
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.road.road import Road
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle
from highway_env.vehicle.kinematics import Vehicle

from intersection_meta.criticality import CONFLICT_FEATURES_GONE, CriticalityTracker, zone_array
from intersection_meta.tasks import (
    ALL_OBSERVATION_FEATURES,
    APPROACH_LANE_LENGTH_M,
    CONFLICT_FEATURES,
    DRIVERS,
    IDM_MAX_ACCEL_LIMIT_MPS2,
    IDM_PARAMETER_DEFAULTS,
    INTENTS,
    IntersectionTask,
)

#: Index ``k`` of each entry in highway-env's road network (``o{k}`` outer node, ``ir{k}`` inner node).
ENTRY_INDEX: dict[str, int] = {"south": 0, "west": 1, "north": 2, "east": 3}

#: Exit index offset per intent (right-hand traffic): exit node is ``o{(k + offset) % 4}``.
_INTENT_EXIT_OFFSET: dict[str, int] = {"right": -1, "straight": 2, "left": 1}

#: Normalisation ranges of the Kinematics observation (mapped onto [-1, 1], then clipped).
FEATURES_RANGE: dict[str, list[float]] = {
    "x": [-100, 100],
    "y": [-100, 100],
    "vx": [-20, 20],
    "vy": [-20, 20],
}

#: Acceleration range of the continuous action [m/s^2]: an action a in [-1, 1] commands 5 * a m/s^2.
CONTINUOUS_ACCELERATION_RANGE_MPS2: tuple[float, float] = (-5.0, 5.0)

#: Distance along its exit lane at which a vehicle counts as arrived (highway-env's ``has_arrived``) [m].
ARRIVAL_DISTANCE_M = 25.0

#: Number of vehicles on the road (ego + other) and rows of the observation.
VEHICLES_COUNT = 2

#: The task used when the env is built without one (e.g. ``gym.make(ENV_ID)``): a left turn against
#: an oncoming IDM driver arriving 0.5 s after the ego.
DEFAULT_TASK = IntersectionTask("default", "south", "left", 8.0, 40.0, "north", "straight", "idm", 9.0, 0.5)


# --------------------------------------------------------------------------------------------------
# Task vocabulary -> road network
# --------------------------------------------------------------------------------------------------


def entry_index(entry: str) -> int:
    """Index ``k`` of an entry (south 0, west 1, north 2, east 3)."""
    if entry not in ENTRY_INDEX:
        raise ValueError(f"unknown entry {entry!r}; allowed: {sorted(ENTRY_INDEX)}")
    return ENTRY_INDEX[entry]


def approach_lane_index(entry: str) -> tuple[str, str, int]:
    """highway-env index of the 100 m approach lane of ``entry``; its end (s = 100 m) is the stop line."""
    k = entry_index(entry)
    return (f"o{k}", f"ir{k}", 0)


def destination_node(entry: str, intent: str) -> str:
    """Exit node from ``entry`` with ``intent``: right ``o{k-1}``, straight ``o{k+2}``, left ``o{k+1}``."""
    if intent not in _INTENT_EXIT_OFFSET:
        raise ValueError(f"unknown intent {intent!r}; allowed: {sorted(_INTENT_EXIT_OFFSET)}")
    return f"o{(entry_index(entry) + _INTENT_EXIT_OFFSET[intent]) % 4}"


def validate_task(task: IntersectionTask) -> None:
    """Raise ``ValueError`` (or ``TypeError``) if ``task`` cannot be simulated; names the offending field."""
    if not isinstance(task, IntersectionTask):
        raise TypeError(f"expected an IntersectionTask, got {type(task).__name__}")
    entry_index(task.ego_entry)
    entry_index(task.other_entry)
    for name in ("ego_intent", "other_intent"):
        if getattr(task, name) not in INTENTS:
            raise ValueError(f"{name}={getattr(task, name)!r}; allowed: {list(INTENTS)}")
    if task.other_driver not in DRIVERS:
        raise ValueError(f"other_driver={task.other_driver!r}; allowed: {list(DRIVERS)}")
    if task.ego_entry == task.other_entry:
        raise ValueError(f"ego and other share the entry {task.ego_entry!r}; they must differ")
    if not task.ego_speed_mps > 0:
        raise ValueError(f"ego_speed_mps must be > 0 (it defines the time gap), got {task.ego_speed_mps}")
    if task.other_speed_mps < 0:
        raise ValueError(f"other_speed_mps must be >= 0, got {task.other_speed_mps}")
    if task.ego_distance_to_stop_m < 0:
        raise ValueError(f"ego_distance_to_stop_m must be >= 0, got {task.ego_distance_to_stop_m}")
    if not 0 < task.other_idm_time_headway_s < float("inf"):
        raise ValueError(f"other_idm_time_headway_s must be > 0 (and finite), got {task.other_idm_time_headway_s}")
    if not 0 <= task.other_idm_min_gap_m < float("inf"):
        raise ValueError(f"other_idm_min_gap_m must be >= 0 (and finite), got {task.other_idm_min_gap_m}")
    if not 0 < task.other_idm_max_accel_mps2 <= IDM_MAX_ACCEL_LIMIT_MPS2:
        raise ValueError(
            f"other_idm_max_accel_mps2 must be in (0, {IDM_MAX_ACCEL_LIMIT_MPS2:g}], got "
            f"{task.other_idm_max_accel_mps2}"
        )
    if task.other_driver != "idm" and not task.has_default_idm_parameters:
        raise ValueError(
            f"other_driver={task.other_driver!r} with non-default IDM parameters: they apply to 'idm' only; "
            f"keep the defaults {IDM_PARAMETER_DEFAULTS}"
        )
    s = task.settings
    if s.action not in ("discrete", "continuous"):
        raise ValueError(f"settings.action={s.action!r}; allowed: ['continuous', 'discrete']")
    unknown = [f for f in s.observation_features if f not in ALL_OBSERVATION_FEATURES]
    if unknown or not s.observation_features:
        raise ValueError(
            f"settings.observation_features has unknown features {unknown} (or is empty); "
            f"allowed: {list(ALL_OBSERVATION_FEATURES)}"
        )
    if len(s.target_speeds_mps) < 2 or list(s.target_speeds_mps) != sorted(s.target_speeds_mps):
        raise ValueError(
            f"settings.target_speeds_mps must be >= 2 increasing speeds, got {s.target_speeds_mps}"
        )
    if s.policy_frequency_hz <= 0 or s.simulation_frequency_hz % s.policy_frequency_hz != 0:
        raise ValueError(
            "settings.simulation_frequency_hz must be a positive multiple of policy_frequency_hz, got "
            f"{s.simulation_frequency_hz} and {s.policy_frequency_hz}"
        )
    if s.duration_s <= 0:
        raise ValueError(f"settings.duration_s must be > 0, got {s.duration_s}")


def observation_space(features: Sequence[str]) -> spaces.Box:
    """The flat observation space of ``VEHICLES_COUNT`` rows of ``features`` (both backends): every feature lies in
    [-1, 1], except ``conflict_time``, which lies in [0, 1]."""
    low = np.array([0.0 if f == "conflict_time" else -1.0 for f in features] * VEHICLES_COUNT, dtype=np.float32)
    return spaces.Box(low, np.ones_like(low), dtype=np.float32)


def build_config(task: IntersectionTask) -> dict[str, Any]:
    """The complete highway-env config of ``task`` (the ONE place a task becomes a highway-env config).

    Every nested sub-dict is given whole, because highway-env's ``configure`` is a shallow ``dict.update``.
    """
    validate_task(task)
    s = task.settings
    w = s.rewards
    if s.action == "discrete":
        action = {
            "type": "DiscreteMetaAction",
            "longitudinal": True,
            "lateral": False,
            "target_speeds": [float(v) for v in s.target_speeds_mps],
        }
    else:
        action = {
            "type": "ContinuousAction",
            "longitudinal": True,
            "lateral": False,
            "acceleration_range": list(CONTINUOUS_ACCELERATION_RANGE_MPS2),
            # The ego cannot reverse; it may exceed the top target speed only by the clip's lag.
            "speed_range": [0.0, float(max(s.target_speeds_mps))],
            "dynamical": False,
            "clip": True,
        }
    return {
        "observation": {
            "type": "Kinematics",
            "vehicles_count": VEHICLES_COUNT,
            "features": list(s.observation_features),
            "features_range": {k: list(v) for k, v in FEATURES_RANGE.items()},
            "absolute": bool(s.observation_absolute),
            "normalize": True,
            "clip": True,
            "flatten": False,
            "observe_intentions": False,
            # The other vehicle is observed wherever it is (highway-env's default hides vehicles more
            # than 10 m behind the ego along the ego's lane, which makes the other flicker in and out).
            "see_behind": True,
        },
        "action": action,
        "duration": float(s.duration_s),
        "policy_frequency": int(s.policy_frequency_hz),
        "simulation_frequency": int(s.simulation_frequency_hz),
        "destination": destination_node(task.ego_entry, task.ego_intent),
        "controlled_vehicles": 1,
        "initial_vehicle_count": 0,
        "spawn_probability": 0.0,
        "collision_reward": float(w.collision_reward),
        "high_speed_reward": float(w.high_speed_reward),
        "arrived_reward": float(w.arrived_reward),
        "reward_speed_range": [float(v) for v in w.reward_speed_range_mps],
        "normalize_reward": bool(w.normalize_reward),
        "offroad_terminal": False,
    }


# --------------------------------------------------------------------------------------------------
# Vehicles
# --------------------------------------------------------------------------------------------------


class _IntersectionIDMVehicle(IDMVehicle):
    """IDM driver with the values stock ``IntersectionEnv._make_vehicles`` would set on ``IDMVehicle``
    globally; here they are this private subclass's own class attributes, so nothing else changes.

    Other constants are IDMVehicle's: TIME_WANTED 1.5 s, DELTA 4, ACC_MAX 6 m/s^2. A task's hidden driver
    parameters replace TIME_WANTED, DISTANCE_WANTED and ACC_MAX on the one vehicle's instance
    (:func:`_set_driver_parameters`), never on a class.
    """

    DISTANCE_WANTED = 7.0  # [m] jam distance
    COMFORT_ACC_MAX = 6.0  # [m/s^2]
    COMFORT_ACC_MIN = -3.0  # [m/s^2]


def idm_distance_wanted_m(task: IntersectionTask) -> float:
    """highway-env's ``DISTANCE_WANTED`` of the task's IDM driver: its minimum gap s0 (bumper to bumper) plus the
    car length, because ``IDMVehicle`` measures the gap between vehicle centres (default 2 + 5 = 7 m)."""
    return float(task.other_idm_min_gap_m) + Vehicle.LENGTH


def _set_driver_parameters(vehicle: IDMVehicle, task: IntersectionTask) -> None:
    """The task's hidden IDM parameters as attributes of this vehicle instance (``IDMVehicle`` reads them through
    ``self``): desired time headway T, minimum gap s0, and the maximum acceleration ACC_MAX that clips the IDM
    command to [-ACC_MAX, ACC_MAX] (so it bounds braking too; IDM's own a, COMFORT_ACC_MAX, stays 6 m/s^2)."""
    vehicle.TIME_WANTED = float(task.other_idm_time_headway_s)
    vehicle.DISTANCE_WANTED = idm_distance_wanted_m(task)
    vehicle.ACC_MAX = float(task.other_idm_max_accel_mps2)


class _RouteFollowingVehicle(ControlledVehicle):
    """Ego vehicle for the continuous action: steers along its route with ControlledVehicle's lateral
    controller, while the longitudinal acceleration is the agent's command, held until the next command.

    (highway-env's ContinuousAction uses a plain ``Vehicle``, which cannot follow a turning route when
    steering is not part of the action.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commanded_acceleration_mps2 = 0.0

    def act(self, action: dict | str | None = None) -> None:
        if isinstance(action, dict):
            self.commanded_acceleration_mps2 = float(action["acceleration"])
        self.follow_road()
        steering = float(np.clip(self.steering_control(self.target_lane_index), -self.MAX_STEERING_ANGLE,
                                 self.MAX_STEERING_ANGLE))
        Vehicle.act(self, {"steering": steering, "acceleration": self.commanded_acceleration_mps2})


class _LongitudinalContinuousAction(ContinuousAction):
    """highway-env's ContinuousAction (longitudinal only) driving a :class:`_RouteFollowingVehicle`."""

    @property
    def vehicle_class(self) -> type:
        return _RouteFollowingVehicle


class _ArrayKinematicObservation(KinematicObservation):
    """highway-env's Kinematics observation computed with numpy instead of pandas (same numbers).

    Supports exactly the features in ``OBSERVATION_FEATURES`` with ``normalize=True`` and explicit
    ``features_range``, ``order="sorted"``, no obstacles; it halves the cost of a step. Equality with
    ``KinematicObservation.observe`` is tested. It also provides the package's ``CONFLICT_FEATURES``
    (already normalised, never made relative), read from the env's criticality tracker
    (:meth:`TwoVehicleIntersectionEnv.conflict_features`).
    """

    def observe(self) -> np.ndarray:
        if not self.env.road:
            return np.zeros(self.space().shape, dtype=np.float32)
        ego = self.observer_vehicle
        others = self.env.road.close_objects_to(
            ego,
            self.env.PERCEPTION_DISTANCE,
            count=self.vehicles_count - 1,
            see_behind=self.see_behind,
            sort=self.order == "sorted",
            vehicles_only=not self.include_obstacles,
        )
        conflict = self.env.conflict_features() if any(f in CONFLICT_FEATURES for f in self.features) else None
        rows = [self._row(ego, None, conflict)]
        origin = None if self.absolute else ego
        rows += [self._row(v, origin, conflict) for v in others[-self.vehicles_count + 1 :]] if others else []
        table = np.zeros((self.vehicles_count, len(self.features)), dtype=np.float64)
        table[: len(rows)] = rows
        if conflict is not None:  # a car no longer on the road: far past the conflict area, not zero padding
            for j, feature in enumerate(self.features):
                if feature in CONFLICT_FEATURES:
                    table[len(rows) :, j] = CONFLICT_FEATURES_GONE[CONFLICT_FEATURES.index(feature)]
        for j, feature in enumerate(self.features):
            if feature in self.features_range:
                low, high = self.features_range[feature]
                column = -1 + (table[: len(rows), j] - low) * (1 - -1) / (high - low)  # utils.lmap
                table[: len(rows), j] = np.clip(column, -1, 1) if self.clip else column
        return table.astype(np.float32)

    def _row(self, vehicle: Vehicle, origin: Vehicle | None, conflict: np.ndarray | None) -> list[float]:
        velocity, direction = vehicle.velocity, vehicle.direction
        values = {
            "presence": 1.0,
            "x": vehicle.position[0],
            "y": vehicle.position[1],
            "vx": velocity[0],
            "vy": velocity[1],
            "cos_h": direction[0],
            "sin_h": direction[1],
        }
        if origin is not None:
            origin_velocity = origin.velocity
            values["x"] -= origin.position[0]
            values["y"] -= origin.position[1]
            values["vx"] -= origin_velocity[0]
            values["vy"] -= origin_velocity[1]
        if conflict is not None:
            k = 0 if vehicle is self.env.road.tracked[0] else 1
            values["conflict_distance"], values["conflict_time"] = conflict[k]
        return [values[f] for f in self.features]


class _FrameLogRoad(Road):
    """highway-env's ``Road`` that logs (x, y, speed, crashed) of the two tracked vehicles after every
    ``step(dt)``, i.e. every simulation frame, for the criticality metrics (``criticality.FRAME_FIELDS``)."""

    tracked: tuple[Vehicle, Vehicle] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[list[list[float]]] = []

    def step(self, dt: float) -> None:
        super().step(dt)
        if self.tracked is not None:
            self.frames.append(tracked_states(self.tracked))


def tracked_states(vehicles: tuple[Vehicle, Vehicle]) -> list[list[float]]:
    """``[[x, y, speed, crashed]] * 2`` of (ego, other)."""
    return [[float(v.position[0]), float(v.position[1]), float(v.speed), float(v.crashed)] for v in vehicles]


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------


class TwoVehicleIntersectionEnv(IntersectionEnv):
    """An ego vehicle crossing highway-env's four-way intersection with exactly one other vehicle.

    ## Description
    A subclass of highway-env's ``IntersectionEnv`` (1.12.1) built from an
    :class:`~intersection_meta.tasks.IntersectionTask`. The road is highway-env's intersection: four 100 m
    approach lanes ``("o{k}", "ir{k}", 0)`` whose end (s = 100 m) is the stop line, with k = 0 south,
    1 west, 2 north, 3 east; from entry k a right turn exits at ``o{(k-1)%4}``, straight at
    ``o{(k+2)%4}``, a left turn at ``o{(k+1)%4}``. The ego controls only its longitudinal motion and
    steers along its planned route automatically. No traffic is ever spawned.

    Differences from stock ``IntersectionEnv`` (deliberate, all documented here):

    * exactly two vehicles, placed by the task (no random traffic, no challenger, no "prevent early
      collisions" removal, no ``_spawn_vehicle`` call in ``step``);
    * the road is a plain ``Road``, not ``RegulatedRoad``: highway-env's right-of-way enforcement (which
      makes non-ego ControlledVehicles stop on a predicted conflict, then resume at the lane speed limit
      of 10 m/s) is off, so the other vehicle keeps its own target speed;
    * the IDM driver is a private ``IDMVehicle`` subclass (no process-wide class-attribute changes, no
      ``randomize_behavior``); the observation sees the other vehicle even behind the ego
      (``see_behind=True``); the observation is returned flat.

    ## Action Space
    ``settings.action == "discrete"``: ``Discrete(3)``, highway-env's DiscreteMetaAction, longitudinal only:
    0 SLOWER, 1 IDLE, 2 FASTER. SLOWER/FASTER set the target speed to
    ``target_speeds[clip(i(speed) -/+ 1)]`` where ``i(v) = clip(round((v - ts[0]) / (ts[-1] - ts[0]) * (n-1)),
    0, n-1)`` (nearest index on a uniform grid) of the CURRENT speed; IDLE keeps the target. The speed is
    tracked by ``a = (target - speed) / 0.6 s``.
    ``settings.action == "continuous"``: ``Box(-1, 1, (1,), float32)``, acceleration ``5 * a`` m/s^2, held
    for the whole decision step; speed is kept in ``[0, max(target_speeds)]`` by highway-env's soft clip.

    ## Observation Space
    ``Box(-1, 1, (2 * F,), float32)`` with F = ``len(settings.observation_features)``: the flattened 2 x F
    Kinematics table, row 0 the ego, row 1 the other vehicle (zeros once it has been removed, see below,
    or if it is 200 m or more away). x, y (world frame if ``settings.observation_absolute``, else relative
    to the ego) are divided by 100 m, vx, vy (relative likewise) by 20 m/s, then clipped to [-1, 1];
    presence is 1, cos_h/sin_h are the heading's cosine/sine. Flattening is done inside this env.
    Opt-in ``conflict_distance`` (distance along the route to the entry of the conflict area, / 100 m, clipped to
    [-1, 1]) and ``conflict_time`` (time until entering it at the current speed, capped at 10 s, / 10 s, in
    [0, 1]) are per vehicle and never relative; both are 1 without a conflict area
    (:mod:`intersection_meta.criticality`). Bounds: :func:`observation_space`.

    ## Rewards
    highway-env's intersection reward with the task's weights: if the ego has arrived, ``arrived_reward``;
    else ``collision_reward * crashed
    + high_speed_reward * clip(lmap(speed, reward_speed_range, [0, 1]), 0, 1)
    + arrived_reward * arrived`` (arrived is 0 here); times ``on_road`` (1 while the ego is on its lane);
    optionally mapped from ``[collision_reward, arrived_reward]`` to ``[0, 1]`` (``normalize_reward``).
    The terms are in ``info["rewards"]``.

    ## Starting State
    Ego on ``("o{k}", "ir{k}", 0)`` of its entry at s = ``100 - ego_distance_to_stop_m``, heading along the
    lane, speed ``ego_speed_mps``, route planned to its exit. Discrete: an ``MDPVehicle`` whose initial
    target speed is highway-env's default, ``target_speeds[i(ego_speed_mps)]`` (nearest target speed).
    Continuous: a route-following vehicle with commanded acceleration 0 until the first action.
    Other on its entry's approach lane at s = ``100 - other_distance_to_stop_m`` (may be negative: the
    lane is extrapolated), speed ``other_speed_mps``, route planned to its exit, target speed = its
    initial speed. ``"idm"``: IDMVehicle with COMFORT_ACC_MAX 6, COMFORT_ACC_MIN -3 and the task's hidden
    driver parameters set on the instance: TIME_WANTED = ``other_idm_time_headway_s`` (default 1.5 s),
    DISTANCE_WANTED = ``other_idm_min_gap_m`` + the 5 m car length (default 2 + 5 = 7 m), ACC_MAX =
    ``other_idm_max_accel_mps2`` (default 6) (target speed clipped to the 10 m/s lane limit inside IDM, no lane
    changes, no randomisation).
    ``"constant_speed"``: ``ControlledVehicle`` tracking its initial speed along its route, blind to the ego.
    ``road.vehicles == [ego, other]`` in this order. The state is deterministic (no randomness is used).

    Per ``step(action)``, in order (this is what a re-implementation must replicate):

    1. ``time += 1 / policy_frequency``.
    2. For each of ``F = simulation_frequency // policy_frequency`` frames (dt = 1 / simulation_frequency):
       a. frame 0 of the step only: the action is applied to the ego (``action_type.act``: target speed
          update for discrete, commanded acceleration for continuous);
       b. ``road.act()``: each vehicle in ``[ego, other]`` order computes its steering/acceleration
          (ControlledVehicle: ``follow_road`` then lane-following steering and ``(target - v) / 0.6``;
          IDM: ``follow_road``, steering, then IDM acceleration w.r.t. the front vehicle on its CURRENT
          lane, clipped to +-6 m/s^2; crashed IDM vehicles keep their previous action);
       c. ``road.step(dt)``: each vehicle in ``[ego, other]`` order integrates highway-env's kinematic
          bicycle model (``Vehicle.step``; crashed vehicles brake with ``a = -speed`` and zero steering)
          and sets ``lane_index = network.get_closest_lane_index(position, heading)`` over ALL lanes
          (inside the junction this may be a lane off the vehicle's route; it drives IDM's front-vehicle
          search, ``on_road`` and ``has_arrived``); then ``ego.handle_collisions(other, dt)``: rectangles
          intersecting now => both ``crashed``; intersecting after moving by ``velocity * dt`` => impact
          displacements ``+-transition / 2`` stored, added (and ``crashed`` set) at each vehicle's next
          ``Vehicle.step``.
    3. The criticality tracker takes the step's frames (it holds the travelled distances the conflict features
       use). Observation, reward, ``terminated`` (ego crashed or ego arrived: on an ``il* -> o*`` exit lane with
       s >= 25 m) and ``truncated`` (``time >= duration``) are computed, then ``info``.
    4. ``_clear_vehicles``: the other vehicle is removed from the road once it is on an exit lane with
       s >= 100 - 4 * 5 = 80 m (highway-env's semantics, kept), so it is absent from LATER observations.
    5. No vehicle is spawned.

    ## Episode End
    Terminated when the ego crashes or arrives; truncated when ``time >= duration_s`` (no TimeLimit
    wrapper; a crash/arrival at the last step is both).

    ## Arguments
    ``TwoVehicleIntersectionEnv(task=None, render_mode=None)``: ``task`` an ``IntersectionTask``
    (``DEFAULT_TASK`` if None); ``render_mode`` None, ``"rgb_array"`` or ``"human"``.
    ``reset(seed=..., options={"task": other_task})`` switches to another task (same settings shape
    recommended: the spaces follow the task). Registered as ``intersection_meta/TwoVehicleIntersection-v0``.

    ``info`` (reset and every step): ``crashed`` (bool, ego), ``arrived`` (bool, ego), ``rewards``
    (dict of floats), ``speed`` (ego, m/s), ``criticality`` (dict of floats: the episode's running
    criticality metrics so far, from every simulation frame; :mod:`intersection_meta.criticality`),
    ``action``, ``agents_rewards``/``agents_terminated`` (steps).
    """

    def __init__(self, task: IntersectionTask | None = None, render_mode: str | None = None) -> None:
        task = DEFAULT_TASK if task is None else task
        config = build_config(task)
        self.task = task
        super().__init__(config=config, render_mode=render_mode)

    # --- spaces ------------------------------------------------------------------------------------

    def define_spaces(self) -> None:
        super().define_spaces()
        if type(self.observation_type) is KinematicObservation:
            self.observation_type = _ArrayKinematicObservation(self, **self.config["observation"])
        if type(self.action_type) is ContinuousAction:
            self.action_type = _LongitudinalContinuousAction(self, **self.config["action"])
            self.action_space = self.action_type.space()
        self.observation_space = observation_space(self.config["observation"]["features"])

    # --- scene -------------------------------------------------------------------------------------

    def _make_road(self) -> None:
        super()._make_road()
        regulated = self.road
        self.road = _FrameLogRoad(
            network=regulated.network,
            np_random=self.np_random,
            record_history=self.config["show_trajectories"],
            neighbour_vehicles_connected_lanes=self.config["neighbour_vehicles_connected_lanes"],
        )

    def _make_vehicles(self, n_vehicles: int = 0) -> None:
        del n_vehicles  # exactly two vehicles, always
        task = self.task
        road = self.road

        ego_lane_index = approach_lane_index(task.ego_entry)
        ego_lane = road.network.get_lane(ego_lane_index)
        ego_s = APPROACH_LANE_LENGTH_M - task.ego_distance_to_stop_m
        ego = self.action_type.vehicle_class(
            road, ego_lane.position(ego_s, 0.0), heading=ego_lane.heading_at(ego_s), speed=task.ego_speed_mps
        )
        ego.plan_route_to(destination_node(task.ego_entry, task.ego_intent))

        other_class = _IntersectionIDMVehicle if task.other_driver == "idm" else ControlledVehicle
        other = other_class.make_on_lane(
            road,
            approach_lane_index(task.other_entry),
            longitudinal=APPROACH_LANE_LENGTH_M - task.other_distance_to_stop_m,
            speed=task.other_speed_mps,
        )
        other.target_speed = float(task.other_speed_mps)
        if isinstance(other, IDMVehicle):
            other.enable_lane_change = False  # single-lane roads: MOBIL could never act anyway
            _set_driver_parameters(other, task)
        other.plan_route_to(destination_node(task.other_entry, task.other_intent))

        road.vehicles = [ego, other]
        self.controlled_vehicles = [ego]
        road.tracked = (ego, other)

    # --- gymnasium API -----------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Reset; ``options={"task": IntersectionTask}`` switches task first (no other option is accepted)."""
        if options:
            unknown = set(options) - {"task"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['task']")
            task = options["task"]
            self.configure(build_config(task))
            self.task = task
        obs, info = super().reset(seed=seed, options=None)
        info["criticality"] = self._criticality_info()
        return self._flatten(obs), info

    def _reset(self) -> None:
        # The criticality tracker starts with the scene, before the first observation (which may read it).
        super()._reset()
        sim_hz = self.config["simulation_frequency"]
        self._criticality = CriticalityTracker(zone_array([self.task]), 1 / sim_hz)
        self._criticality.reset(np.ones(1, dtype=bool), np.asarray([tracked_states(self.road.tracked)]))

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One decision step; see the class docstring for the exact order of operations."""
        obs, reward, terminated, truncated, info = super(IntersectionEnv, self).step(action)
        info["criticality"] = self._criticality_info()
        self._clear_vehicles()
        return self._flatten(obs), float(reward), bool(terminated), bool(truncated), info

    def _simulate(self, action: Any = None) -> None:
        # The step's frames feed the criticality tracker before the observation (which may read it) is made.
        present = self.road.tracked[1] in self.road.vehicles
        self.road.frames.clear()
        super()._simulate(action)
        self._criticality.update(np.asarray([self.road.frames]), np.array([present]))

    def conflict_features(self) -> np.ndarray:
        """``[2, 2]``: (conflict_distance, conflict_time) of the ego and the other car now, normalised
        (:func:`intersection_meta.criticality.conflict_features`)."""
        return self._criticality.conflict_features()[0]

    def _info(self, obs: Any, action: Any = None) -> dict:
        info = super()._info(obs, action)
        info["crashed"] = bool(self.vehicle.crashed)
        info["arrived"] = bool(self.has_arrived(self.vehicle, ARRIVAL_DISTANCE_M))
        info["speed"] = float(self.vehicle.speed)
        info["rewards"] = {k: float(v) for k, v in info["rewards"].items()}
        return info

    def _criticality_info(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self._criticality.values().items()}

    @staticmethod
    def _flatten(obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(-1)


def with_settings(task: IntersectionTask, **changes: Any) -> IntersectionTask:
    """A copy of ``task`` with some ``settings`` fields replaced (convenience for tests and tools)."""
    return dataclasses.replace(task, settings=dataclasses.replace(task.settings, **changes))
