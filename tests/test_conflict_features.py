"""The opt-in conflict-area observation features (``conflict_distance``, ``conflict_time``) on both backends."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

from intersection_meta.criticality import (
    CONFLICT_FEATURES_GONE,
    CONFLICT_DISTANCE_SCALE_M,
    CONFLICT_TIME_CAP_S,
    VEHICLE_LENGTH_M,
    conflict_features,
    conflict_zone,
)
from intersection_meta.envs.factory import make_env, make_vector_env, observation_and_action_spaces
from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.scenario import ScenarioError, load_scenario
from intersection_meta.tasks import (
    CONFLICT_FEATURES,
    OBSERVATION_FEATURES,
    IntersectionSettings,
    IntersectionTask,
)

ALL = (*OBSERVATION_FEATURES, *CONFLICT_FEATURES)
KINEMATIC_TOL = 1e-3  # libm vs NumPy SIMD last bits (tests/test_fast_intersection.py's OBS_TOL)
CONFLICT_TOL = 1e-6


def _columns(features: tuple[str, ...], name: str) -> tuple[int, int]:
    """(ego column, other column) of feature ``name`` in the flat observation."""
    j = features.index(name)
    return j, len(features) + j


def _set_features(features: tuple[str, ...]) -> str:
    return "observation.features=[" + ", ".join(features) + "]"


# --- the formula ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("d", "v", "expected"),
    [
        (10.0, 5.0, (0.3, 0.6)),  # 30 m before the area at 5 m/s: 6 s
        (10.0, 0.0, (0.3, 1.0)),  # standing before it: never enters
        (10.0, 1.0, (0.3, 1.0)),  # 30 s away: capped at 10 s
        (45.0, 5.0, (-0.05, 0.0)),  # inside [40, 50]
        (55.0, 5.0, (-0.15, 1.0)),  # past it: never re-enters
        (-500.0, 100.0, (1.0, 0.54)),  # 540 m away (clipped), 5.4 s
        (300.0, 5.0, (-1.0, 1.0)),  # far past (clipped)
    ],
)
def test_conflict_features_formula(d, v, expected):
    assert conflict_features(d, v, 40.0, 50.0) == pytest.approx(expected, abs=1e-12)


def test_conflict_features_are_far_without_a_conflict_area():
    assert conflict_features(0.0, 5.0, np.inf, np.inf) == (1.0, 1.0)


# --- closed form: constant speed toward a perpendicular crossing -----------------------------------------------
def _perpendicular_zone_m(env: TwoVehicleIntersectionEnv, own: tuple, crossing: tuple) -> tuple[float, float]:
    """Distances from the stop line (start of junction lane ``own``) to where a car's front reaches the near edge
    of the perpendicular straight junction lane ``crossing`` (its footprint starts touching the conflict area) and
    to where its rear leaves the far edge."""
    network = env.unwrapped.road.network
    lane, cross = network.get_lane(own), network.get_lane(crossing)
    start, end = lane.position(0, 0), lane.position(lane.length, 0)
    direction = (end - start) / np.linalg.norm(end - start)
    centre_along = float(np.dot(cross.position(0, 0) - start, direction))  # the crossing lane's centre line
    half = cross.width_at(0) / 2 + VEHICLE_LENGTH_M / 2
    return centre_along - half, centre_along + half


@pytest.mark.parametrize("backend", ["highway", "fast"])
def test_constant_speed_closed_form(backend):
    """The ego at 9 m/s (a target speed, IDLE: no acceleration) and a constant-speed car: each decision step
    (1 s) the distance falls by 9 m, and the time is distance / speed, until the ego is inside the area."""
    speed_e, speed_o, dist_e = 9.0, 6.0, 40.0
    task = IntersectionTask(
        "closed_form", "south", "straight", speed_e, dist_e, "west", "straight", "constant_speed", speed_o, 5.0,
        settings=IntersectionSettings(observation_features=ALL),
    )  # fmt: skip
    reference = TwoVehicleIntersectionEnv(task)
    reference.reset()
    zone_e = dist_e + np.array(_perpendicular_zone_m(reference, ("ir0", "il2", 0), ("ir1", "il3", 0)))
    zone_o = task.other_distance_to_stop_m + np.array(
        _perpendicular_zone_m(reference, ("ir1", "il3", 0), ("ir0", "il2", 0))
    )
    # The stop line is 11 m from the centre, the crossing lane at 2 m, 4 m wide, the car 5 m long.
    np.testing.assert_allclose(zone_e, dist_e + np.array([4.5, 13.5]))
    env = make_vector_env([task], backend=backend)
    obs, _ = env.reset(seed=0)
    cd, ct = _columns(ALL, "conflict_distance"), _columns(ALL, "conflict_time")
    inside = 0
    for step in range(8):
        for vehicle, (entry, exit_), speed in ((0, zone_e, speed_e), (1, zone_o, speed_o)):
            travelled_m = speed * step
            to_go_m = entry - travelled_m
            assert obs[0, cd[vehicle]] == pytest.approx(to_go_m / CONFLICT_DISTANCE_SCALE_M, abs=1e-6)
            if to_go_m > 0:
                expected_time = min(to_go_m / speed, CONFLICT_TIME_CAP_S) / CONFLICT_TIME_CAP_S
            else:
                expected_time = 0.0 if travelled_m <= exit_ else 1.0  # inside, or past it
            assert obs[0, ct[vehicle]] == pytest.approx(expected_time, abs=1e-6)
        inside += zone_e[0] < speed_e * step <= zone_e[1]
        obs, _, terminated, truncated, info = env.step(np.array([1]))
        assert not (terminated[0] or truncated[0] or info["crashed"][0])
    assert inside == 1  # the ego is inside the area at one of the checked steps (conflict_time 0), then past it
    env.close()


# --- the two backends agree, step by step, across autoresets -------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "features", "absolute"),
    [
        ("cross_straight", ALL, True),
        ("mixed_intent", ("conflict_time", "x", "y", "vx", "vy", "conflict_distance"), True),
        ("random_crossing", ALL, False),
    ],
)
def test_backends_agree_on_every_step(scenario, features, absolute):
    overrides = [_set_features(features), f"observation.absolute={str(absolute).lower()}"]
    tasks = load_scenario(scenario, overrides).sample_tasks(4, seed=3)
    assert all(t.settings.observation_features == features for t in tasks)
    reference = make_vector_env(tasks, backend="highway")
    fast = make_vector_env(tasks, backend="fast")
    assert isinstance(fast, FastIntersectionVectorEnv)
    conflict = np.zeros(2 * len(features), dtype=bool)
    for name in CONFLICT_FEATURES:
        conflict[list(_columns(features, name))] = True
    rng = np.random.default_rng(0)
    r_obs, _ = reference.reset(seed=0)
    f_obs, _ = fast.reset(seed=0)
    initial = r_obs.copy()
    ends = autoreset_checked = 0
    ended = np.zeros(len(tasks), dtype=bool)
    for _ in range(30):
        np.testing.assert_allclose(f_obs[:, conflict], r_obs[:, conflict], rtol=0, atol=CONFLICT_TOL)
        np.testing.assert_allclose(f_obs[:, ~conflict], r_obs[:, ~conflict], rtol=0, atol=KINEMATIC_TOL)
        actions = rng.integers(3, size=len(tasks))
        r_obs, _, r_term, r_trunc, _ = reference.step(actions)
        f_obs, _, f_term, f_trunc, _ = fast.step(actions)
        if ended.any():  # NEXT_STEP autoreset: the step after an end shows the initial observation again
            np.testing.assert_array_equal(f_obs[ended][:, conflict], initial[ended][:, conflict])
            autoreset_checked += int(ended.sum())
        np.testing.assert_array_equal(f_term | f_trunc, r_term | r_trunc)
        ended = r_term | r_trunc
        ends += int(ended.sum())
    assert ends >= len(tasks) and autoreset_checked >= len(tasks)
    assert np.unique(r_obs[:, conflict]).size > 4  # the features vary (not constant placeholders)
    reference.close()


def test_held_scenes_observe_zero_conflict_features():
    tasks = load_scenario("cross_straight", [_set_features(ALL)]).sample_tasks(3, seed=0)
    env = FastIntersectionVectorEnv(tasks)
    env.reset(seed=0)
    obs, *_ = env.step_active(np.ones(3, dtype=np.int64), np.array([True, False, True]))
    assert np.all(obs[1] == 0.0)
    assert np.all(obs[[0, 2]][:, list(_columns(ALL, "conflict_distance"))] != 0.0)


# --- no conflict area ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["highway", "fast"])
def test_no_conflict_area_gives_far_values(backend):
    """Both cars turn right (south -> east, north -> west): their junction lanes do not overlap."""
    overrides = [_set_features(ALL), "ego.intent=right", "other.intent=right", "other.driver=constant_speed"]
    tasks = load_scenario("mixed_intent", overrides).sample_tasks(3, seed=0)
    assert not any(conflict_zone(t).exists for t in tasks)
    env = make_vector_env(tasks, backend=backend)
    obs, _ = env.reset(seed=0)
    presence_other = _columns(ALL, "presence")[1]
    for _ in range(12):
        seen = obs[:, presence_other] == 1.0
        for k, name in enumerate(CONFLICT_FEATURES):
            ego_col, other_col = _columns(ALL, name)
            np.testing.assert_array_equal(obs[:, ego_col], 1.0)
            np.testing.assert_array_equal(obs[seen, other_col], 1.0)
            # a car no longer on the road is far past the area, not zero padding (which would read "inside it")
            np.testing.assert_array_equal(obs[~seen, other_col], CONFLICT_FEATURES_GONE[k])
        obs, *_ = env.step(np.full(3, 2))
    env.close()


# --- spaces, check_env, defaults -----------------------------------------------------------------------------
def test_check_env_and_spaces_with_the_features():
    features = ("x", "conflict_time", "vy", "conflict_distance")
    task = load_scenario("random_crossing", [_set_features(features)]).sample_tasks(1, seed=5)[0]
    env = make_env(task)
    check_env(env.unwrapped, skip_render_check=True)
    space = env.observation_space
    assert space.shape == (2 * len(features),)
    np.testing.assert_array_equal(space.low, np.tile([-1, 0, -1, -1], 2))
    np.testing.assert_array_equal(space.high, np.ones(8))
    assert observation_and_action_spaces(task)[0] == space
    assert FastIntersectionVectorEnv([task]).single_observation_space == space
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        assert space.contains(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    env.close()


def test_shipped_scenarios_observe_the_features_and_task_ids_do_not_depend_on_them(tmp_path):
    """The shared base file lists the conflict features; the schema's (and a task's) own default stays highway-env's
    seven kinematic features; the feature list is a setting, not a task parameter, so task IDs ignore it."""
    scenario = load_scenario("cross_straight")
    task = scenario.sample_tasks(1, seed=0)[0]
    assert task.settings.observation_features == ALL
    assert make_env(task).observation_space.shape == (2 * len(ALL),)
    assert OBSERVATION_FEATURES == IntersectionSettings().observation_features
    assert "conflict_distance" not in OBSERVATION_FEATURES
    kinematic = load_scenario("cross_straight", [_set_features(OBSERVATION_FEATURES)]).sample_tasks(1, seed=0)[0]
    assert make_env(kinematic).observation_space == gym.spaces.Box(-1.0, 1.0, shape=(14,), dtype=np.float32)
    assert kinematic.task_id == task.task_id
    assert dataclasses.replace(kinematic, settings=task.settings) == task
    spec = load_scenario("cross_straight").to_dict()
    del spec["observation"]["features"]
    standalone = tmp_path / "standalone.yaml"
    standalone.write_text(yaml.safe_dump({k: v for k, v in spec.items() if k != "extends"}))
    assert load_scenario(standalone).medium_task().settings.observation_features == OBSERVATION_FEATURES


def test_unknown_feature_error_lists_the_conflict_features():
    with pytest.raises(ScenarioError, match=r"observation\.features\[0\].*conflict_distance.*conflict_time"):
        load_scenario("cross_straight", ["observation.features=[conflict_dist]"])
