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

#: Kinematics features the intersection observation may use (a subset of highway-env's).
OBSERVATION_FEATURES: tuple[str, ...] = ("presence", "x", "y", "vx", "vy", "cos_h", "sin_h")

#: Length of every approach lane of highway-env's intersection: its end (s = 100 m) is the stop line.
APPROACH_LANE_LENGTH_M = 100.0


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

    @property
    def other_distance_to_stop_m(self) -> float:
        return other_distance_to_stop_m(
            self.ego_speed_mps, self.ego_distance_to_stop_m, self.other_speed_mps, self.time_gap_s
        )

    @property
    def task_id(self) -> str:
        return task_id(self)

    def describe(self) -> str:
        return (
            f"[{self.task_id}] ego {self.ego_entry}->{self.ego_intent} {self.ego_speed_mps:.2f} m/s "
            f"at {self.ego_distance_to_stop_m:.1f} m; other {self.other_entry}->{self.other_intent} "
            f"({self.other_driver}) {self.other_speed_mps:.2f} m/s, gap {self.time_gap_s:+.2f} s "
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


def task_id(task: Task) -> str:
    """Stable 8-hex-digit ID from the task's kind and parameters (floats rounded to 1e-6)."""

    def canon(v: object) -> object:
        if isinstance(v, float | np.floating):
            return round(float(v), 6)
        return v

    payload = {"kind": task.kind, **{k: canon(v) for k, v in sampled_parameters(task).items()}}
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
