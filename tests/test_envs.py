"""Tests of the environments: the two-vehicle intersection, CartPole/LunarLander tasks and the factory."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from highway_env.envs.common.observation import KinematicObservation
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle

from intersection_meta.envs import (
    INTERSECTION_ENV_ID,
    make_env,
    make_vector_env,
    observation_and_action_spaces,
    register_envs,
)
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv, with_settings
from intersection_meta.tasks import OBSERVATION_FEATURES, CartPoleTask, IntersectionTask, LunarLanderTask

FASTER, IDLE, SLOWER = 2, 1, 0


def itask(
    ego_entry: str = "south",
    ego_intent: str = "left",
    ego_speed: float = 8.0,
    ego_dist: float = 40.0,
    other_entry: str = "north",
    other_intent: str = "straight",
    driver: str = "idm",
    other_speed: float = 9.0,
    gap: float = 0.5,
) -> IntersectionTask:
    return IntersectionTask(
        "t", ego_entry, ego_intent, ego_speed, ego_dist, other_entry, other_intent, driver, other_speed, gap
    )


#: (ego entry, ego intent, other entry, other intent): every intent for both vehicles, all four entries.
FLAVOURS = [
    ("south", "left", "north", "straight"),
    ("south", "straight", "west", "straight"),
    ("west", "right", "east", "left"),
    ("north", "left", "south", "right"),
    ("east", "straight", "north", "left"),
]


def _snapshot_class_constants() -> dict[str, object]:
    out = {}
    for cls in (Vehicle, ControlledVehicle, MDPVehicle, IDMVehicle):
        for name, value in vars(cls).items():
            if name.isupper():
                out[f"{cls.__name__}.{name}"] = np.array(value).tolist()
    return out


def _rollout(env: gym.Env, actions: list, seed: int | None = None) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return observations, rewards


# --------------------------------------------------------------------------------------------------
# Intersection: API conformance
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["idm", "constant_speed"])
@pytest.mark.parametrize("flavour", FLAVOURS, ids=["-".join(f) for f in FLAVOURS])
def test_intersection_passes_gymnasium_env_checker(flavour, driver):
    ego_entry, ego_intent, other_entry, other_intent = flavour
    env = TwoVehicleIntersectionEnv(
        itask(ego_entry, ego_intent, other_entry=other_entry, other_intent=other_intent, driver=driver)
    )
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (14,) and obs.dtype == np.float32


def test_continuous_intersection_passes_env_checker_and_follows_its_turn():
    task = with_settings(
        itask(ego_intent="left", other_entry="east", other_intent="right", gap=5.0), action="continuous"
    )
    env = TwoVehicleIntersectionEnv(task)
    check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Box(-1, 1, (1,), np.float32)
    env.reset(seed=0)
    info = {}
    for _ in range(13):
        _, _, terminated, truncated, info = env.step(np.array([0.3], dtype=np.float32))
        if terminated or truncated:
            break
    ego = env.road.vehicles[0]
    assert info["arrived"] and not info["crashed"]
    assert ego.lane_index[1] == "o1"  # left turn from the south exits west
    assert ego.speed <= 9.0 + 0.5  # speed_range keeps it near the top target speed


def test_registered_id_works_and_registration_is_idempotent():
    register_envs()
    register_envs()
    env = gym.make(INTERSECTION_ENV_ID, task=itask(driver="constant_speed"))
    obs, _info = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape == (14,)
    assert isinstance(env.unwrapped, TwoVehicleIntersectionEnv)
    env.step(IDLE)
    default = gym.make(INTERSECTION_ENV_ID)  # falls back to DEFAULT_TASK
    assert default.reset(seed=0)[0].shape == (14,)


def test_observation_features_and_relative_coordinates_follow_settings():
    task = with_settings(itask(), observation_features=("presence", "x", "y"), observation_absolute=False)
    env = TwoVehicleIntersectionEnv(task)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,)
    ego, other = env.road.vehicles
    # row 1 is the other vehicle relative to the ego, normalised by 100 m
    np.testing.assert_allclose(obs[4:6], np.clip((other.position - ego.position) / 100.0, -1, 1), atol=1e-6)
    np.testing.assert_allclose(obs[1:3], ego.position / 100.0, atol=1e-6)


@pytest.mark.parametrize("absolute", [True, False])
@pytest.mark.parametrize("features", [OBSERVATION_FEATURES, ("vy", "x", "sin_h")])
def test_numpy_observation_equals_highway_env_pandas_observation(absolute, features):
    task = with_settings(
        itask("west", "left", 9.0, 15.0, "east", "straight", "idm", 9.0, 0.2),
        observation_features=features,
        observation_absolute=absolute,
    )
    env = TwoVehicleIntersectionEnv(task)
    obs, _ = env.reset(seed=0)
    checked = 0
    for action in [FASTER] * 13:
        reference = KinematicObservation.observe(env.observation_type)  # highway-env's pandas version
        np.testing.assert_array_equal(env.observation_type.observe(), reference)
        np.testing.assert_array_equal(obs, reference.reshape(-1))
        checked += 1
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    assert checked >= 3


# --------------------------------------------------------------------------------------------------
# Intersection: placement
# --------------------------------------------------------------------------------------------------

#: Compass side of each entry in highway-env's world frame (x east, y pointing to the SOUTH, i.e. down).
_SIDE = {"south": (0, 1), "north": (0, -1), "west": (-1, 0), "east": (1, 0)}


def _turn_of(entry_heading: float, exit_heading: float) -> str:
    """Intent from approach and exit headings (y points down, so a left turn has a negative cross product)."""
    d = np.array([math.cos(entry_heading), math.sin(entry_heading)])
    e = np.array([math.cos(exit_heading), math.sin(exit_heading)])
    if d @ e > 0.99:
        return "straight"
    return "left" if d[0] * e[1] - d[1] * e[0] < 0 else "right"


@pytest.mark.parametrize("driver", ["idm", "constant_speed"])
@pytest.mark.parametrize("flavour", FLAVOURS, ids=["-".join(f) for f in FLAVOURS])
def test_vehicles_are_placed_as_the_task_says(flavour, driver):
    ego_entry, ego_intent, other_entry, other_intent = flavour
    task = itask(ego_entry, ego_intent, 7.0, 35.0, other_entry, other_intent, driver, 6.0, 1.25)
    env = TwoVehicleIntersectionEnv(task)
    env.reset(seed=0)
    assert len(env.road.vehicles) == 2
    ego, other = env.road.vehicles
    assert env.vehicle is ego
    placed = ((ego, ego_entry, ego_intent, 7.0), (other, other_entry, other_intent, 6.0))
    for vehicle, entry, intent, speed in placed:
        lane = vehicle.lane
        _s, lateral = lane.local_coordinates(vehicle.position)
        assert vehicle.lane_index[0].startswith("o") and vehicle.lane_index[1].startswith("ir")
        assert lane.length == pytest.approx(100.0)
        assert lateral == pytest.approx(0.0, abs=1e-9)
        assert vehicle.speed == pytest.approx(speed)
        # the approach lane lies on the entry's compass side
        side = np.array(_SIDE[entry])
        assert lane.position(0, 0) @ side > 100
        # the planned route ends on an exit lane whose direction makes the task's turn
        last = vehicle.route[-1]
        exit_lane = env.road.network.get_lane((last[0], last[1], 0))
        assert last[0].startswith("il") and last[1].startswith("o")
        assert _turn_of(lane.heading_at(0), exit_lane.heading_at(0)) == intent
    # longitudinal positions: distances to the stop line (end of the approach lane)
    d_ego = 100.0 - ego.lane.local_coordinates(ego.position)[0]
    d_other = 100.0 - other.lane.local_coordinates(other.position)[0]
    assert d_ego == pytest.approx(35.0)
    assert d_other == pytest.approx(6.0 * (35.0 / 7.0 + 1.25))  # constant-speed arrival 1.25 s after the ego
    # drivers and target speeds
    assert isinstance(ego, MDPVehicle) and ego.target_speed == pytest.approx(9.0)  # nearest of (0, 4.5, 9)
    assert other.target_speed == pytest.approx(6.0)
    if driver == "idm":
        assert isinstance(other, IDMVehicle)
        assert (other.DISTANCE_WANTED, other.COMFORT_ACC_MAX, other.COMFORT_ACC_MIN) == (7.0, 6.0, -3.0)
    else:
        assert type(other) is ControlledVehicle


def test_exactly_two_vehicles_while_stepping_and_no_spawning():
    env = TwoVehicleIntersectionEnv(itask(driver="constant_speed", other_speed=5.0, gap=3.0))
    env.reset(seed=3)
    for _ in range(6):
        first = list(env.road.vehicles)
        env.step(IDLE)
        assert env.road.vehicles == first  # the same two objects, nobody spawned
    assert len(env.road.vehicles) == 2


def test_reset_can_switch_task_and_rejects_other_options():
    env = TwoVehicleIntersectionEnv(itask())
    new = itask("east", "right", 6.0, 20.0, "west", "straight", "constant_speed", 4.0, 0.0)
    env.reset(seed=0, options={"task": new})
    ego, other = env.road.vehicles
    assert ego.lane_index == ("o3", "ir3", 0) and other.lane_index == ("o1", "ir1", 0)
    assert env.unwrapped.task == new
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"config": {}})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"other_entry": "south"}, "share the entry"),
        ({"ego_intent": "uturn"}, "ego_intent"),
        ({"other_driver": "human"}, "other_driver"),
        ({"ego_entry": "up"}, "unknown entry"),
    ],
)
def test_invalid_tasks_raise_clear_errors(change, match):
    with pytest.raises(ValueError, match=match):
        TwoVehicleIntersectionEnv(dataclasses.replace(itask(), **change))


# --------------------------------------------------------------------------------------------------
# Intersection: dynamics and episode ends
# --------------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_trajectory():
    task = itask("west", "left", 8.0, 30.0, "east", "straight", "idm", 8.0, 0.3)
    actions = [FASTER, IDLE, SLOWER, FASTER, IDLE, IDLE, FASTER, SLOWER, IDLE, FASTER, IDLE, IDLE, IDLE]
    obs_a, rew_a = _rollout(make_env(task, seed=5), actions)
    obs_b, rew_b = _rollout(make_env(task, seed=5), actions)
    assert len(obs_a) > 3
    np.testing.assert_array_equal(np.stack(obs_a), np.stack(obs_b))
    assert rew_a == rew_b
    env = make_env(task)
    obs_c, rew_c = _rollout(env, actions, seed=11)
    obs_d, rew_d = _rollout(env, actions, seed=11)  # the same env again
    np.testing.assert_array_equal(np.stack(obs_c), np.stack(obs_d))
    assert rew_c == rew_d


def test_no_process_wide_class_attribute_changes():
    before = _snapshot_class_constants()
    for driver in ("idm", "constant_speed"):
        env = TwoVehicleIntersectionEnv(itask(driver=driver))
        env.reset(seed=0)
        for _ in range(3):
            env.step(FASTER)
    env = make_env(with_settings(itask(), action="continuous"), seed=0)
    env.step(np.array([1.0], dtype=np.float32))
    assert _snapshot_class_constants() == before


def test_info_keys_on_reset_and_step():
    env = make_env(itask(), seed=0)
    _, info = env.reset()
    for current in (info, env.step(IDLE)[4]):
        assert isinstance(current["crashed"], bool) and isinstance(current["arrived"], bool)
        terms = {"collision_reward", "high_speed_reward", "arrived_reward", "on_road_reward"}
        assert set(current["rewards"]) >= terms
        assert all(isinstance(v, float) for v in current["rewards"].values())


def test_ego_that_stops_is_truncated_at_the_duration():
    env = make_env(itask(), seed=0)
    env.reset()
    steps = 0
    while True:
        _, reward, terminated, truncated, info = env.step(SLOWER)
        steps += 1
        if terminated or truncated:
            break
    assert steps == 13  # duration 13 s at 1 Hz
    assert truncated and not terminated
    assert not info["crashed"] and not info["arrived"]
    assert env.unwrapped.vehicle.speed == pytest.approx(0.0, abs=0.05)
    assert reward == pytest.approx(0.0)  # below the rewarded speed range, no crash


def test_collision_when_the_ego_speeds_into_a_crossing_vehicle():
    task = itask("south", "straight", 9.0, 30.0, "west", "straight", "constant_speed", 9.0, 0.0)
    env = make_env(task, seed=0)
    env.reset()
    for _ in range(13):
        _, reward, terminated, truncated, info = env.step(FASTER)
        if terminated or truncated:
            break
    assert info["crashed"] and terminated and not info["arrived"]
    assert info["rewards"]["collision_reward"] == 1.0
    assert reward < 0


def test_arrival_terminates_with_the_arrived_reward():
    env = make_env(itask(driver="constant_speed", gap=6.0), seed=0)
    env.reset()
    for _ in range(13):
        _, reward, terminated, truncated, info = env.step(FASTER)
        if terminated or truncated:
            break
    assert terminated and info["arrived"] and not info["crashed"]
    assert reward == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------
# CartPole and LunarLander
# --------------------------------------------------------------------------------------------------


def _cartpole_reference_step(state: np.ndarray, action: int, task: CartPoleTask) -> np.ndarray:
    """One explicit-Euler step of the cart-pole equations (Barto et al. 1983), tau 0.02 s."""
    x, x_dot, theta, theta_dot = state
    force = task.force_n if action == 1 else -task.force_n
    total = task.pole_mass_kg + task.cart_mass_kg
    pml = task.pole_mass_kg * task.pole_half_length_m
    temp = (force + pml * theta_dot**2 * math.sin(theta)) / total
    theta_acc = (task.gravity_mps2 * math.sin(theta) - math.cos(theta) * temp) / (
        task.pole_half_length_m * (4.0 / 3.0 - task.pole_mass_kg * math.cos(theta) ** 2 / total)
    )
    x_acc = temp - pml * theta_acc * math.cos(theta) / total
    tau = 0.02
    return np.array([x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc])


def test_cartpole_physics_follow_the_task_after_reset():
    task = CartPoleTask(
        "c",
        pole_half_length_m=1.3,
        pole_mass_kg=0.4,
        cart_mass_kg=2.0,
        gravity_mps2=12.0,
        force_n=15.0,
        max_episode_steps=50,
    )
    env = make_env(task, seed=0)
    state, _ = env.reset()
    cp = env.unwrapped
    assert cp.total_mass == pytest.approx(2.4) and cp.polemass_length == pytest.approx(0.52)
    next_state, *_ = env.step(1)
    np.testing.assert_allclose(next_state, _cartpole_reference_step(state, 1, task), rtol=1e-5, atol=1e-6)
    # a default pole from the same state moves differently
    default = make_env(CartPoleTask("c"), seed=0)
    default.reset()
    default.unwrapped.state = np.array(state, dtype=np.float64)
    default_next, *_ = default.step(1)
    assert not np.allclose(default_next, next_state)
    assert env.spec.max_episode_steps == 50
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("continuous", [False, True])
def test_lunarlander_task_env(continuous):
    task = LunarLanderTask(
        "l",
        gravity_mps2=-4.0,
        enable_wind=True,
        wind_power=5.0,
        turbulence_power=0.5,
        continuous=continuous,
        max_episode_steps=77,
    )
    env = make_env(task, seed=0)
    ll = env.unwrapped
    assert (ll.gravity, ll.enable_wind, ll.wind_power, ll.turbulence_power) == (-4.0, True, 5.0, 0.5)
    assert ll.continuous is continuous and env.spec.max_episode_steps == 77
    check_env(ll, skip_render_check=True)
    with pytest.raises(ValueError, match="gravity"):
        make_env(dataclasses.replace(task, gravity_mps2=-13.0))


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        itask(),
        with_settings(itask(), action="continuous", observation_features=("x", "y", "vx")),
        CartPoleTask("c"),
        LunarLanderTask("l"),
        LunarLanderTask("l", continuous=True),
    ],
    ids=["intersection", "intersection-continuous", "cartpole", "lunarlander", "lunarlander-continuous"],
)
def test_observation_and_action_spaces_match_the_env(task):
    obs_space, act_space = observation_and_action_spaces(task)
    env = make_env(task)
    assert obs_space == env.observation_space and act_space == env.action_space


def test_vector_env_runs_a_different_task_per_sub_env():
    tasks = [
        itask(),
        itask("west", "right", 5.0, 20.0, "north", "left", "constant_speed", 7.0, 1.0),
        itask("east", "straight", 9.0, 60.0, "south", "right", "idm", 4.0, -1.0),
    ]
    vec = make_vector_env(tasks, seed=0)
    assert vec.num_envs == 3 and vec.single_observation_space.shape == (14,)
    obs, _ = vec.reset()
    assert len({o.tobytes() for o in obs}) == 3
    obs, reward, _terminated, _truncated, info = vec.step(np.array([IDLE, IDLE, IDLE]))
    assert obs.shape == (3, 14) and reward.shape == (3,)
    assert len(set(reward.tolist())) == 3
    assert {"crashed", "arrived", "rewards"} <= set(info)
    assert info["crashed"].shape == (3,)
    vec.close()


def test_vector_env_of_classic_tasks_is_seeded_per_sub_env():
    tasks = [CartPoleTask("c", pole_half_length_m=0.3), CartPoleTask("c", pole_half_length_m=0.9)]
    a, b = make_vector_env(tasks, seed=4), make_vector_env(tasks, seed=4)
    obs_a, _ = a.reset()
    obs_b, _ = b.reset()
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(obs_a[0], obs_a[1])  # sub-envs get different seeds
    step_a = a.step(np.array([1, 1]))[0]
    np.testing.assert_array_equal(step_a, b.step(np.array([1, 1]))[0])


def test_vector_env_argument_errors():
    with pytest.raises(ValueError, match="same kind"):
        make_vector_env([itask(), CartPoleTask("c")])
    with pytest.raises(ValueError, match="unknown backend 'gpu'; valid: fast, highway"):
        make_vector_env([itask()], backend="gpu")
    with pytest.raises(ValueError, match="at least one task"):
        make_vector_env([])
    with pytest.raises(ValueError, match="intersection tasks only"):
        make_vector_env([CartPoleTask("c")], backend="fast")


def test_auto_backend_picks_fast_for_every_intersection_action_type():
    from intersection_meta.envs.factory import resolve_backend
    from intersection_meta.envs.intersection import with_settings

    continuous = with_settings(itask(), action="continuous")
    assert make_vector_env([continuous], backend="fast").single_action_space.shape == (1,)
    assert resolve_backend("auto", continuous) == "fast"
    assert resolve_backend("auto", itask()) == "fast"
    assert resolve_backend("auto", CartPoleTask("c")) == "highway"
    with pytest.raises(ValueError, match="intersection scenarios only"):
        resolve_backend("fast", CartPoleTask("c"))
