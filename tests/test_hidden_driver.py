"""The other driver's hidden behaviour parameters (issue 9): they change how it drives, in both backends, by the
IDM formula, and they are not in the observation; the scenario keys are validated and leave old task IDs alone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from highway_env.vehicle.behavior import IDMVehicle

from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.fast import kernel as K
from intersection_meta.envs.fast.road import lane_table
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv, _IntersectionIDMVehicle, validate_task
from intersection_meta.scenario import ScenarioError, load_scenario
from intersection_meta.tasks import (
    IDM_PARAMETER_DEFAULTS,
    IntersectionSettings,
    IntersectionTask,
    task_from_dict,
    task_to_dict,
)

SLOWER, IDLE, FASTER = 0, 1, 2

#: The ego turns left (south -> west) into the exit lane a car from the east is heading for, 1 s ahead of it:
#: the IDM car ends up following the ego along the straight westbound exit lane.
FOLLOW = IntersectionTask("t", "south", "left", 9.0, 40.0, "east", "straight", "idm", 9.0, 1.0)
#: A left turn across a fast oncoming car arriving at about the same time (yield_or_not's medium task).
CROSS = IntersectionTask("t", "south", "left", 8.0, 40.0, "north", "straight", "idm", 9.75, 0.03)


def _hidden(task: IntersectionTask, headway_s: float, gap_m: float, accel_mps2: float) -> IntersectionTask:
    return dataclasses.replace(
        task, other_idm_time_headway_s=headway_s, other_idm_min_gap_m=gap_m, other_idm_max_accel_mps2=accel_mps2
    )


def _reference_run(task: IntersectionTask, action: int, steps: int) -> tuple[list[np.ndarray], list[float], str]:
    env = TwoVehicleIntersectionEnv(task)
    obs, _ = env.reset(seed=0)
    observations, other_speeds, info = [obs], [], {"crashed": False, "arrived": False}
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(action)
        observations.append(obs)
        other_speeds.append(float(env.road.vehicles[1].speed))
        if term or trunc:
            break
    outcome = "collided" if info["crashed"] else "arrived" if info["arrived"] else "timeout"
    return observations, other_speeds, outcome


def _fast_run(tasks: list[IntersectionTask], action: int, steps: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Observations ``[steps + 1, n, F]``, the other car's speed ``[steps, n]`` and each scene's first outcome."""
    env = FastIntersectionVectorEnv(tasks)
    observations, speeds = [env.reset()[0]], []
    outcomes: list[str | None] = [None] * len(tasks)
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(np.full(len(tasks), action))
        observations.append(obs)
        speeds.append(env.vehicle_state()["speed"][:, 1])
        for i in np.flatnonzero(term | trunc):
            if outcomes[i] is None:
                outcomes[i] = "collided" if info["crashed"][i] else "arrived" if info["arrived"][i] else "timeout"
    return np.array(observations), np.array(speeds), outcomes


# --- the parameters change the other car's behaviour -----------------------------------------------------------
def test_larger_time_headway_brakes_earlier_in_both_backends():
    """Following the ego, a driver who wants a 3 s headway brakes earlier and harder than one who wants 0.5 s;
    the two backends drive both the same way."""
    tasks = [_hidden(FOLLOW, 0.5, 2.0, 6.0), _hidden(FOLLOW, 3.0, 2.0, 6.0)]
    steps = 8
    _, fast_speeds, _ = _fast_run(tasks, IDLE, steps)
    for i, task in enumerate(tasks):
        _, ref_speeds, _ = _reference_run(task, IDLE, steps)
        np.testing.assert_allclose(fast_speeds[: len(ref_speeds), i], ref_speeds, rtol=0, atol=1e-6)
    short, long = fast_speeds[:, 0], fast_speeds[:, 1]
    first = int(np.flatnonzero(short != long)[0])
    assert long[first] < short[first]  # the first difference: the long headway brakes first
    assert long.min() < short.min() - 0.5


@pytest.mark.parametrize("backend", ["highway", "fast"])
def test_max_acceleration_decides_whether_the_oncoming_car_stops(backend: str):
    """The same crossing under "always go": a driver who can brake at 8 m/s^2 stops for the ego, one limited to
    1.5 m/s^2 does not, like a driver who never yields (constant_speed)."""
    tasks = [
        _hidden(CROSS, 1.5, 2.0, 8.0),
        _hidden(CROSS, 1.5, 2.0, 1.5),
        dataclasses.replace(CROSS, other_driver="constant_speed"),
    ]
    if backend == "fast":
        outcomes = _fast_run(tasks, FASTER, 20)[2]
    else:
        outcomes = [_reference_run(t, FASTER, 20)[2] for t in tasks]
    assert outcomes == ["arrived", "collided", "collided"]


def _idm_acceleration(v_mps: float, v0_mps: float, d_m: float, dv_mps: float, task: IntersectionTask) -> float:
    """The Intelligent Driver Model with the task's parameters (highway-env's intersection constants otherwise:
    a = 6, b = 3, delta = 4; gaps between vehicle centres, so s0 + the 5 m car length), clipped to +-a_max."""
    a, b = 6.0, 3.0
    s_star = (
        task.other_idm_min_gap_m + 5.0 + v_mps * task.other_idm_time_headway_s + v_mps * dv_mps / (2 * math.sqrt(a * b))
    )
    acc = a * (1 - (v_mps / v0_mps) ** 4) - a * (s_star / d_m) ** 2
    return min(max(acc, -task.other_idm_max_accel_mps2), task.other_idm_max_accel_mps2)


@pytest.mark.parametrize(
    ("headway_s", "gap_m", "accel_mps2"), [(3.0, 4.0, 1.0), (0.8, 0.5, 8.0), (2.0, 10.0, 3.0)], ids=str
)
def test_fast_backend_follows_the_idm_formula(headway_s: float, gap_m: float, accel_mps2: float):
    """One frame per decision (15 Hz policy): while both cars are on the straight exit lane, the other car's speed
    change is dt times the IDM acceleration computed here from the two cars' states and the task's parameters."""
    task = _hidden(
        dataclasses.replace(FOLLOW, settings=IntersectionSettings(policy_frequency_hz=15)), headway_s, gap_m, accel_mps2
    )
    tab = lane_table()
    exit_lane = tab.index(("il1", "o1", 0))
    direction = tab.geometry[exit_lane, [K.L_DIR_X, K.L_DIR_Y]]
    env = FastIntersectionVectorEnv([task])
    env.reset()
    dt = 1 / 15
    checked = clipped = following = 0
    for _ in range(15 * 20):
        before = env.vehicle_state()
        _, _, term, trunc, _ = env.step(np.array([IDLE]))
        after = env.vehicle_state()
        if term[0] or trunc[0]:
            break
        if not (before["lane"][0] == exit_lane).all():
            continue
        ego_xy = np.array([before["x"][0, 0], before["y"][0, 0]])
        other_xy = np.array([before["x"][0, 1], before["y"][0, 1]])
        v_e, v_o = before["speed"][0]
        h_e, h_o = before["heading"][0]
        u_o = np.array([math.cos(h_o), math.sin(h_o)])
        dv = float((v_o * u_o - v_e * np.array([math.cos(h_e), math.sin(h_e)])) @ u_o)
        expected = _idm_acceleration(v_o, FOLLOW.other_speed_mps, float((ego_xy - other_xy) @ direction), dv, task)
        assert (after["speed"][0, 1] - v_o) / dt == pytest.approx(expected, abs=1e-6)
        free = _idm_acceleration(v_o, FOLLOW.other_speed_mps, math.inf, dv, task)
        checked += 1
        clipped += abs(expected) == accel_mps2
        following += abs(expected - free) > 0.1
    assert checked >= 10
    assert following >= 5  # the car ahead (the gap term, with T and s0) shapes the acceleration
    if accel_mps2 == 1.0:
        assert clipped > 0  # the bound on braking was reached


# --- hidden: not in the observation ----------------------------------------------------------------------------
def test_hidden_parameters_are_not_in_the_observation():
    """Tasks that differ only in the hidden driver (its model and IDM parameters) look the same at reset, in both
    backends, and until the other car first reacts to the ego."""
    variants = [
        FOLLOW,
        _hidden(FOLLOW, 0.5, 0.0, 1.5),
        _hidden(FOLLOW, 3.0, 10.0, 8.0),
        dataclasses.replace(FOLLOW, other_driver="constant_speed"),
    ]
    fast_obs, _, _ = _fast_run(variants, IDLE, 2)
    for i, task in enumerate(variants):
        ref_obs, _, _ = _reference_run(task, IDLE, 2)
        np.testing.assert_array_equal(ref_obs[0], _reference_run(FOLLOW, IDLE, 0)[0][0])
        np.testing.assert_array_equal(fast_obs[0, i], fast_obs[0, 0])
        np.testing.assert_array_equal(fast_obs[:, i], fast_obs[:, 0])  # nobody has reacted yet after 2 s
    assert len({t.task_id for t in variants}) == len(variants)


# --- tasks and IDs -------------------------------------------------------------------------------------------------
def test_task_ids_ignore_the_hidden_parameters_only_at_their_defaults():
    assert dataclasses.replace(FOLLOW, **IDM_PARAMETER_DEFAULTS).task_id == FOLLOW.task_id
    changed = {
        dataclasses.replace(FOLLOW, **{field: value + 0.5}).task_id for field, value in IDM_PARAMETER_DEFAULTS.items()
    }
    assert FOLLOW.task_id not in changed and len(changed) == 3


def test_task_dicts_round_trip_and_old_dicts_load_with_defaults():
    task = _hidden(FOLLOW, 2.5, 3.0, 4.0)
    assert task_from_dict(task_to_dict(task)) == task
    old = {k: v for k, v in task_to_dict(FOLLOW).items() if k not in IDM_PARAMETER_DEFAULTS}
    assert task_from_dict(old) == FOLLOW


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"other_idm_time_headway_s": 0.0}, "other_idm_time_headway_s"),
        ({"other_idm_min_gap_m": -1.0}, "other_idm_min_gap_m"),
        ({"other_idm_max_accel_mps2": 0.0}, "other_idm_max_accel_mps2"),
        ({"other_idm_max_accel_mps2": 11.0}, "other_idm_max_accel_mps2"),
        ({"other_driver": "constant_speed", "other_idm_min_gap_m": 4.0}, "apply to 'idm' only"),
    ],
    ids=str,
)
def test_validate_task_rejects_bad_hidden_parameters(changes: dict, match: str):
    with pytest.raises(ValueError, match=match):
        validate_task(dataclasses.replace(FOLLOW, **changes))


def test_the_reference_sets_the_parameters_on_the_vehicle_not_the_class():
    before = {cls: dict(vars(cls)) for cls in (IDMVehicle, _IntersectionIDMVehicle)}
    env = TwoVehicleIntersectionEnv(_hidden(FOLLOW, 2.5, 3.0, 4.0))
    env.reset(seed=0)
    other = env.road.vehicles[1]
    assert (other.TIME_WANTED, other.DISTANCE_WANTED, other.ACC_MAX) == (2.5, 8.0, 4.0)
    assert {cls: dict(vars(cls)) for cls in (IDMVehicle, _IntersectionIDMVehicle)} == before


# --- scenario keys -------------------------------------------------------------------------------------------------
def test_scenario_keys_are_sampled_into_idm_tasks_and_defaulted_for_constant_speed():
    scenario = load_scenario(
        "yield_or_not",
        ["other.idm_time_headway_s=[0.5,3]", "other.idm_min_gap_m=[0,6]", "other.idm_max_accel_mps2=[1,8]"],
    )
    tasks = scenario.sample_tasks(40, seed=0)
    idm = [t for t in tasks if t.other_driver == "idm"]
    constant = [t for t in tasks if t.other_driver == "constant_speed"]
    assert idm and constant
    assert all(0.5 <= t.other_idm_time_headway_s <= 3 and 1 <= t.other_idm_max_accel_mps2 <= 8 for t in idm)
    assert len({t.other_idm_min_gap_m for t in idm}) == len(idm)
    assert all(t.has_default_idm_parameters for t in constant)
    # the other keys are drawn as without the hidden keys (they come last in the schema)
    plain = load_scenario("yield_or_not").sample_tasks(40, seed=0)
    assert [t.other_speed_mps for t in tasks] == [t.other_speed_mps for t in plain]
    assert [t.task_id for t in constant] == [t.task_id for t in plain if t.other_driver == "constant_speed"]


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("other.idm_time_headway_s=0", r"other\.idm_time_headway_s.*\(0, 10\]"),
        ("other.idm_min_gap_m=-0.5", r"other\.idm_min_gap_m.*\[0, 50\]"),
        ("other.idm_max_accel_mps2=[0, 4]", r"other\.idm_max_accel_mps2\[0\].*\(0, 10\]"),
        ("other.idm_max_accel_mps2=12", r"other\.idm_max_accel_mps2.*\(0, 10\]"),
    ],
    ids=str,
)
def test_scenario_rejects_out_of_range_hidden_parameters(override: str, match: str):
    with pytest.raises(ScenarioError, match=match):
        load_scenario("assertive_driver", [override])


def test_scenario_rejects_idm_parameters_for_a_constant_speed_driver():
    with pytest.raises(ScenarioError, match=r"left_nonreactive\.yaml.*other\.idm_min_gap_m.*driver idm only"):
        load_scenario("left_nonreactive", ["other.idm_min_gap_m=[1,3]"])
    with pytest.raises(ScenarioError, match=r"other\.idm_time_headway_s: got \[0\.5, 3\.0\].*driver idm only"):
        load_scenario("assertive_driver", ["other.driver=constant_speed"])
    # the defaults written out (as a replay command pins every key) are accepted
    load_scenario("left_nonreactive", ["other.idm_min_gap_m=2.0", "other.idm_time_headway_s=1.5"])


def test_replaying_a_task_pins_it():
    """``task_values`` (the keys a failure report pins with ``--set``) gives back the task, for both drivers."""
    scenario = load_scenario("yield_or_not", ["other.idm_max_accel_mps2=[1,8]"])
    for task in scenario.sample_tasks(6, seed=3):
        sets = [(k, v) for k, v in scenario.task_values(task).items()]
        assert load_scenario("yield_or_not", sets).sample_tasks(1)[0].task_id == task.task_id
