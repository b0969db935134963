"""Tasks: one concrete, frozen draw from a scenario's distribution (the unit a meta-learner adapts to).

A task holds every number an environment needs, so ``make_env(task)`` needs nothing else. Tasks are
hashable, printable and have a stable short ``task_id`` derived from their parameters, so a user can
name (and replay) the exact crossing they saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import numpy as np

Entry = Literal["south", "west", "north", "east"]
Intent = Literal["straight", "left", "right"]
Driver = Literal["idm", "constant_speed"]

ENTRIES: tuple[str, ...] = ("south", "west", "north", "east")
INTENTS: tuple[str, ...] = ("straight", "left", "right")
DRIVERS: tuple[str, ...] = ("idm", "constant_speed")

#: The default per-vehicle features of the intersection observation: highway-env's Kinematics features.
OBSERVATION_FEATURES: tuple[str, ...] = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h")

#: Opt-in per-vehicle conflict-area features (not highway-env's; :func:`intersection_meta.criticality.conflict_features`
#: defines them): the distance along the car's route to the entry of the conflict area it shares with the other
#: car, and the time until it enters it at its current speed.
CONFLICT_FEATURES: tuple[str, ...] = ("conflict_distance", "conflict_time")

#: Every feature an intersection observation may list (``observation.features``), in any order.
ALL_OBSERVATION_FEATURES: tuple[str, ...] = OBSERVATION_FEATURES + CONFLICT_FEATURES

#: Length of every approach lane of highway-env's intersection: its end (s = 100 m) is the stop line.
APPROACH_LANE_LENGTH_M = 100.0

#: Largest maximum acceleration a task's IDM driver may have [m/s^2] (about 1 g).
IDM_MAX_ACCEL_LIMIT_MPS2 = 10.0

#: The other driver's hidden IDM parameters (task field -> default): desired time headway T, minimum gap s0
#: (bumper to bumper: highway-env's ``DISTANCE_WANTED`` is s0 plus the 5 m car length, since it measures gaps
#: between vehicle centres) and maximum acceleration (highway-env's ``ACC_MAX``: the IDM command is clipped to
#: [-ACC_MAX, ACC_MAX], so it bounds braking as well; a low value is a driver who cannot or will not brake hard).
#: The defaults are the values highway-env's intersection gives every IDM vehicle (``TIME_WANTED`` 1.5 s,
#: ``DISTANCE_WANTED`` 7 m, ``ACC_MAX`` 6 m/s^2), so a task that leaves them alone drives as before. They apply
#: to ``other_driver == "idm"`` only (a constant-speed driver carries the defaults), and they are not in the
#: observation: a policy can only infer them from how the other car moves.
IDM_PARAMETER_DEFAULTS: dict[str, float] = {
    "other_idm_time_headway_s": 1.5,
    "other_idm_min_gap_m": 2.0,
    "other_idm_max_accel_mps2": 6.0,
}


@dataclass(frozen=True)
class RewardWeights:
    """Weights of highway-env's intersection reward terms (names as in ``IntersectionEnv._rewards``)."""

    collision_reward: float = -5.0
    high_speed_reward: float = 1.0
    arrived_reward: float = 1.0
    reward_speed_range_mps: tuple[float, float] = (7.0, 9.0)
    normalize_reward: bool = False


@dataclass(frozen=True)
class IntersectionSettings:
    """Everything about an intersection episode that is not sampled per task."""

    duration_s: float = 13.0
    policy_frequency_hz: int = 1
    simulation_frequency_hz: int = 15
    #: "discrete": highway-env's DiscreteMetaAction (SLOWER, IDLE, FASTER), longitudinal only.
    #: "continuous": highway-env's ContinuousAction, longitudinal acceleration only (both backends).
    action: Literal["discrete", "continuous"] = "discrete"
    #: Target speeds of the discrete meta-actions [m/s].
    target_speeds_mps: tuple[float, ...] = (0.0, 4.5, 9.0)
    observation_features: tuple[str, ...] = OBSERVATION_FEATURES
    #: Coordinates in the observation: absolute (world frame) or relative to the ego.
    observation_absolute: bool = True
    rewards: RewardWeights = field(default_factory=RewardWeights)


@dataclass(frozen=True)
class IntersectionTask:
    """A two-vehicle crossing: the ego vehicle and one other vehicle, fully specified.

    ``time_gap_s`` is the other vehicle's arrival time at the stop line minus the ego's, both at constant
    initial speed: positive means the ego arrives first. The other vehicle's start position is derived
    from it by :func:`other_distance_to_stop_m`.

    ``other_idm_*`` are the other driver's hidden behaviour parameters (the Intelligent Driver Model's desired
    time headway T, minimum gap s0 and the bound on its acceleration and braking, see
    :data:`IDM_PARAMETER_DEFAULTS`); they only apply to ``other_driver == "idm"``, where a constant-speed
    driver must keep the defaults. Whether the other driver yields at all is ``other_driver`` itself: ``idm``
    brakes for the ego in its path, ``constant_speed`` never does.
    """

    scenario: str
    ego_entry: str
    ego_intent: str
    ego_speed_mps: float
    ego_distance_to_stop_m: float
    other_entry: str
    other_intent: str
    other_driver: str
    other_speed_mps: float
    time_gap_s: float
    settings: IntersectionSettings = field(default_factory=IntersectionSettings)
    kind: Literal["intersection"] = "intersection"
    other_idm_time_headway_s: float = IDM_PARAMETER_DEFAULTS["other_idm_time_headway_s"]
    other_idm_min_gap_m: float = IDM_PARAMETER_DEFAULTS["other_idm_min_gap_m"]
    other_idm_max_accel_mps2: float = IDM_PARAMETER_DEFAULTS["other_idm_max_accel_mps2"]

    @property
    def other_distance_to_stop_m(self) -> float:
        return other_distance_to_stop_m(
            self.ego_speed_mps, self.ego_distance_to_stop_m, self.other_speed_mps, self.time_gap_s
        )

    @property
    def task_id(self) -> str:
        return task_id(self)

    @property
    def has_default_idm_parameters(self) -> bool:
        """Whether every ``other_idm_*`` field holds its default (:data:`IDM_PARAMETER_DEFAULTS`)."""
        return all(getattr(self, f) == v for f, v in IDM_PARAMETER_DEFAULTS.items())

    def describe(self) -> str:
        idm = (
            ""
            if self.has_default_idm_parameters
            else f", IDM T {self.other_idm_time_headway_s:.2f} s s0 {self.other_idm_min_gap_m:.1f} m "
            f"a_max {self.other_idm_max_accel_mps2:.2f} m/s^2"
        )
        return (
            f"[{self.task_id}] ego {self.ego_entry}->{self.ego_intent} {self.ego_speed_mps:.2f} m/s "
            f"at {self.ego_distance_to_stop_m:.1f} m; other {self.other_entry}->{self.other_intent} "
            f"({self.other_driver}{idm}) {self.other_speed_mps:.2f} m/s, gap {self.time_gap_s:+.2f} s "
            f"(starts {self.other_distance_to_stop_m:.1f} m before its stop line)"
        )


@dataclass(frozen=True)
class CartPoleTask:
    """CartPole-v1 with its physics changed (attributes of ``CartPoleEnv``)."""

    scenario: str
    pole_half_length_m: float = 0.5
    pole_mass_kg: float = 0.1
    cart_mass_kg: float = 1.0
    gravity_mps2: float = 9.8
    force_n: float = 10.0
    max_episode_steps: int = 500
    kind: Literal["cartpole"] = "cartpole"

    @property
    def task_id(self) -> str:
        return task_id(self)

    def describe(self) -> str:
        return (
            f"[{self.task_id}] pole half-length {self.pole_half_length_m:.3f} m, "
            f"pole {self.pole_mass_kg:.3f} kg, "
            f"cart {self.cart_mass_kg:.3f} kg, g {self.gravity_mps2:.2f} m/s^2, force {self.force_n:.2f} N"
        )


@dataclass(frozen=True)
class LunarLanderTask:
    """LunarLander-v3 with its gravity and wind changed (``gym.make`` keyword arguments)."""

    scenario: str
    gravity_mps2: float = -10.0
    enable_wind: bool = False
    wind_power: float = 15.0
    turbulence_power: float = 1.5
    continuous: bool = False
    max_episode_steps: int = 1000
    kind: Literal["lunarlander"] = "lunarlander"

    @property
    def task_id(self) -> str:
        return task_id(self)

    def describe(self) -> str:
        wind = (
            f"wind {self.wind_power:.1f}, turbulence {self.turbulence_power:.2f}"
            if self.enable_wind
            else "no wind"
        )
        return f"[{self.task_id}] gravity {self.gravity_mps2:.2f} m/s^2, {wind}"


Task = IntersectionTask | CartPoleTask | LunarLanderTask
TASK_TYPES: dict[str, type] = {
    "intersection": IntersectionTask,
    "cartpole": CartPoleTask,
    "lunarlander": LunarLanderTask,
}


def other_distance_to_stop_m(
    ego_speed_mps: float, ego_distance_to_stop_m: float, other_speed_mps: float, time_gap_s: float
) -> float:
    """Distance of the other vehicle to its stop line such that, at constant speeds, it arrives there
    ``time_gap_s`` after the ego: d_o = v_o * (d_e / v_e + gap)."""
    return other_speed_mps * (ego_distance_to_stop_m / ego_speed_mps + time_gap_s)


def sampled_parameters(task: Task) -> dict[str, object]:
    """The task's own parameters (no scenario name, no fixed settings), as plain Python values."""
    skip = {"scenario", "settings", "kind"}
    return {f.name: getattr(task, f.name) for f in fields(task) if f.name not in skip}


#: Task fields added after task IDs were first recorded: at their default value they are left out of the ID, so
#: every task that does not use them keeps the ID it had before they existed.
_LATER_FIELD_DEFAULTS: dict[str, object] = dict(IDM_PARAMETER_DEFAULTS)


def task_id(task: Task) -> str:
    """Stable 8-hex-digit ID from the task's kind and parameters (floats rounded to 1e-6); fields added later
    (the other driver's IDM parameters) count only when they differ from their defaults."""

    def canon(v: object) -> object:
        if isinstance(v, float | np.floating):
            return round(float(v), 6)
        return v

    params = {
        k: v
        for k, v in sampled_parameters(task).items()
        if not (k in _LATER_FIELD_DEFAULTS and canon(v) == _LATER_FIELD_DEFAULTS[k])
    }
    payload = {"kind": task.kind, **{k: canon(v) for k, v in params.items()}}
    digest = hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:8]


def task_to_dict(task: Task) -> dict:
    """Plain nested dict (YAML/JSON friendly) of a task; inverse of :func:`task_from_dict`."""
    d = asdict(task)
    return d


def task_from_dict(d: dict) -> Task:
    d = dict(d)
    kind = d.get("kind")
    if kind not in TASK_TYPES:
        raise ValueError(f"unknown task kind {kind!r}; allowed: {sorted(TASK_TYPES)}")
    if kind == "intersection" and isinstance(d.get("settings"), dict):
        s = dict(d["settings"])
        s["rewards"] = RewardWeights(
            **{
                **s.get("rewards", {}),
                "reward_speed_range_mps": tuple(
                    s.get("rewards", {}).get("reward_speed_range_mps", (7.0, 9.0))
                ),
            }
        )
        s["target_speeds_mps"] = tuple(s.get("target_speeds_mps", (0.0, 4.5, 9.0)))
        s["observation_features"] = tuple(s.get("observation_features", OBSERVATION_FEATURES))
        d["settings"] = IntersectionSettings(**s)
    return TASK_TYPES[kind](**d)
