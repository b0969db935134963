"""Criticality metrics against closed forms, and identical on both backends (and in the viewer's recordings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from intersection_meta import criticality as C
from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.factory import make_vector_env
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.tasks import IntersectionTask

DT = 1 / 15
KEYS = C.CRITICALITY_KEYS


def crossing_task(
    ego_speed=9.0, ego_distance=40.0, other_speed=9.0, gap=2.0, driver="constant_speed", other_intent="straight"
) -> IntersectionTask:
    """The ego goes straight north from the south arm, the other straight east from the west arm."""
    return IntersectionTask(
        "crit", "south", "straight", ego_speed, ego_distance, "west", other_intent, driver, other_speed, gap
    )


# --- geometry ------------------------------------------------------------------------------------------------


def test_conflict_zone_of_a_perpendicular_crossing_is_the_lane_square():
    """Lanes 4 m wide cross in the square x, y in [0, 4]. The ego's lane is x = 2 (y = 111 - arc), the other's
    y = 2 (x = -111 + arc); a 5 m car touches the square from 2.5 m before it to 2.5 m after it."""
    task = crossing_task(ego_distance=40.0, other_speed=9.0, gap=2.0)
    zone = C.conflict_zone(task)
    ego_start, other_start = 100 - 40.0, 100 - task.other_distance_to_stop_m
    # ego: y in [-2.5, 6.5] <=> arc in [104.5, 113.5]; other: x in [-2.5, 6.5] <=> arc in [108.5, 117.5]
    np.testing.assert_allclose(zone.ego_m, (104.5 - ego_start, 113.5 - ego_start), atol=1e-5)
    np.testing.assert_allclose(zone.other_m, (108.5 - other_start, 117.5 - other_start), atol=1e-5)


def test_routes_that_never_share_junction_area_have_no_zone_and_infinite_pet_and_ttc():
    task = IntersectionTask("crit", "south", "right", 9.0, 40.0, "north", "right", "constant_speed", 9.0, 0.0)
    zone = C.conflict_zone(task)
    assert not zone.exists and zone.ego_m == (math.inf, math.inf)
    env = TwoVehicleIntersectionEnv(task)
    _, info = env.reset(seed=0)
    for _ in range(20):
        _, _, term, trunc, info = env.step(1)
        if term or trunc:
            break
    crit = info["criticality"]
    assert crit["pet_s"] == math.inf and crit["min_ttc_s"] == math.inf
    assert math.isfinite(crit["min_distance_m"]) and crit["min_distance_m"] > 0
    assert C.json_value(crit["pet_s"]) is None
    json.dumps({k: C.json_value(v) for k, v in crit.items()}, allow_nan=False)


# --- pure formulas ---------------------------------------------------------------------------------------------


def test_segment_min_distance_closed_forms():
    assert C.segment_min_distance_m(-3.0, 4.0, 3.0, 4.0) == 4.0  # passing 4 m abeam
    assert C.segment_min_distance_m(3.0, 4.0, 6.0, 8.0) == 5.0  # moving away: the start
    assert C.segment_min_distance_m(-1.0, -1.0, 2.0, 2.0) == 0.0  # through the origin
    assert C.segment_min_distance_m(3.0, 4.0, 3.0, 4.0) == 5.0  # standing still


@pytest.mark.parametrize(
    ("enter", "exit", "expected"),
    [
        ([1.0, 4.0], [2.5, 5.0], 1.5),  # ego first: other enters 1.5 s after the ego left
        ([4.0, 1.0], [5.0, 2.5], 1.5),  # other first
        ([1.0, 2.0], [3.0, 4.0], 0.0),  # both inside at once
        ([1.0, 2.0], [math.nan, math.nan], 0.0),  # the first never left, the second came in
        ([1.0, math.nan], [2.0, math.nan], math.inf),  # the other never came
        ([math.nan, math.nan], [math.nan, math.nan], math.inf),
        ([math.nan, 1.0], [math.nan, 2.0], math.inf),  # the ego stayed out (CriMe: inf)
    ],
    ids=["ego-first", "other-first", "overlap", "first-stays", "other-never", "nobody", "ego-never"],
)
def test_post_encroachment_time_cases(enter, exit, expected):
    assert C.post_encroachment_time_s(enter[0], exit[0], enter[1], exit[1]) == expected


def test_ttc_along_paths_closed_forms():
    zone = (10.0, 19.0, 20.0, 29.0)  # ego occupies d in [10, 19], other d in [20, 29]

    def ttc(d, v):
        return C.ttc_along_paths_s(d[0], v[0], d[1], v[1], *zone)

    assert ttc([0, 0], [5, 10]) == 2.0  # ego in [2, 3.8] s, other in [2, 2.9] s: both at 2 s
    assert ttc([0, 0], [5, 5]) == math.inf  # ego [2, 3.8], other [4, 5.8]: apart
    assert ttc([0, 0], [10, 5]) == math.inf  # ego [1, 1.9], other [4, 5.8]
    assert ttc([15, 0], [1, 10]) == 2.0  # ego inside until 4 s, other arrives at 2 s
    assert ttc([15, 25], [0, 0]) == 0.0  # both inside, standing
    assert ttc([0, 0], [0, 10]) == math.inf  # a standing car before the zone never enters
    assert ttc([20, 0], [5, 10]) == math.inf  # the ego has passed it
    assert C.ttc_along_paths_s(0.0, 1.0, 0.0, 1.0, *(math.inf,) * 4) == math.inf  # no conflict area


# --- the tracker on synthetic frames ------------------------------------------------------------------------


def synthetic_frames(ego_xy0, ego_vel, other_xy0, other_vel, ego_speed, other_speed, n_frames):
    """States ``[T + 1, 2, 4]`` of two cars at constant velocity (ego speed may vary per frame)."""
    t = np.arange(n_frames + 1) * DT
    ego_speed = np.broadcast_to(ego_speed, t.shape)
    ego_d = np.concatenate([[0.0], np.cumsum(ego_speed[:-1] * DT)])
    ego_dir = np.asarray(ego_vel) / np.linalg.norm(ego_vel)
    states = np.zeros((t.size, 2, 4))
    states[:, 0, :2] = np.asarray(ego_xy0) + ego_d[:, None] * ego_dir
    states[:, 0, 2] = ego_speed
    states[:, 1, :2] = np.asarray(other_xy0) + t[:, None] * np.asarray(other_vel)
    states[:, 1, 2] = other_speed
    return states


def track(states, zones, steps_of=15):
    tracker = C.CriticalityTracker(np.asarray([zones]), DT)
    tracker.reset(np.ones(1, bool), states[:1])
    for start in range(1, len(states), steps_of):
        tracker.update(states[None, start : start + steps_of], np.ones(1, bool))
    return {k: float(v[0]) for k, v in tracker.values().items()}


def test_constant_speed_crossing_closed_forms():
    """Ego along +y from (0, -50) at 10 m/s, other along +x from (-60, 0) at 8 m/s; zone |x|, |y| <= 2 plus
    half a car: the ego occupies it for d in [45.5, 54.5] (t 4.55..5.45), the other for [55.5, 64.5]
    (t 6.9375..8.0625). PET = 6.9375 - 5.45; no overlap at constant speeds, so TTC is inf throughout;
    relative position (-60 + 8t, 50 - 10t) is closest at t = (480 + 500) / 164."""
    states = synthetic_frames((0, -50), (0, 10), (-60, 0), (8, 0), 10.0, 8.0, n_frames=150)
    got = track(states, [[45.5, 54.5], [55.5, 64.5]])
    assert got["pet_s"] == pytest.approx(6.9375 - 5.45, abs=1e-9)
    t_star = 980 / 164
    assert got["min_distance_m"] == pytest.approx(math.hypot(-60 + 8 * t_star, 50 - 10 * t_star), abs=1e-9)
    assert got["min_ttc_s"] == math.inf
    assert got["ego_peak_decel_mps2"] == 0.0


def test_frame_grouping_does_not_change_the_metrics():
    states = synthetic_frames((0, -50), (0, 10), (-60, 0), (8, 0), 10.0, 8.0, n_frames=150)
    zones = [[45.5, 54.5], [55.5, 64.5]]
    assert track(states, zones, steps_of=1) == pytest.approx(track(states, zones, steps_of=15), abs=1e-9)


def test_braking_ego_ttc_pet_and_peak_deceleration():
    """At t = 0 both cars would occupy the zone together (ego [4.55, 5.45] s, other, from (-40, 0) at 8 m/s,
    [4.4375, 5.5625] s), so TTC(t) = 4.55 - t. In frame 15 the ego drops from 10 to 5 m/s (a = -75 m/s^2):
    from then on it would enter at 1 + 35.5 / 5 = 8.1 s, after the other left: TTC inf. Min TTC = 4.55 - 14/15
    (frame 14); PET = 8.1 - 5.5625 (the other passed first)."""
    speed = np.full(161, 10.0)
    speed[15:] = 5.0
    states = synthetic_frames((0, -50), (0, 10), (-40, 0), (8, 0), speed, 8.0, n_frames=160)
    got = track(states, [[45.5, 54.5], [35.5, 44.5]])
    assert got["min_ttc_s"] == pytest.approx(4.55 - 14 / 15, abs=1e-9)
    assert got["ego_peak_decel_mps2"] == pytest.approx(5.0 / DT, abs=1e-9)
    assert got["pet_s"] == pytest.approx(8.1 - 5.5625, abs=1e-9)


# --- through the envs: closed forms, identical on both backends ----------------------------------------------


def run_highway(task, actions):
    env = TwoVehicleIntersectionEnv(task)
    _, info = env.reset(seed=0)
    values = [info["criticality"]]
    for a in actions:
        _, _, term, trunc, info = env.step(a)
        values.append(info["criticality"])
        if term or trunc:
            break
    return [[v[k] for k in KEYS] for v in values]


def run_fast(tasks, actions):
    """Per task, the criticality info of every step up to and including its episode's end."""
    env = FastIntersectionVectorEnv(tasks, seed=0)
    _, info = env.reset()
    out = [[[info["criticality"][k][i] for k in KEYS]] for i in range(len(tasks))]
    done = np.zeros(len(tasks), dtype=bool)
    for a in actions:
        _, _, term, trunc, info = env.step(a)
        for i in np.flatnonzero(~done):
            out[i].append([info["criticality"][k][i] for k in KEYS])
        done |= term | trunc
        if done.all():
            break
    return out


def test_env_constant_speed_crossing_matches_the_closed_form_on_both_backends():
    """Ego 40 m before its stop line at 9 m/s (IDLE keeps it), the other (constant speed, 9 m/s) 2 s later:
    other starts D_o = 9 * (40 / 9 + 2) = 58 m out. PET = (D_o + 8.5) / 9 - (40 + 13.5) / 9; the relative
    position (-71 + 9t, -49 + 9t) is closest at t = 120 / 18 (11 * sqrt(2) m)."""
    task = crossing_task()
    actions = [1] * 20
    highway = run_highway(task, actions)[-1]
    fast = run_fast([task], np.ones((20, 1), dtype=int))[0][-1]
    expected = [11 * math.sqrt(2), (58 + 8.5) / 9 - (40 + 13.5) / 9, math.inf, 0.0]
    np.testing.assert_allclose(highway, expected, atol=1e-6)
    np.testing.assert_allclose(fast, expected, atol=1e-6)


def test_env_braking_peak_deceleration_closed_form():
    """SLOWER from 9 m/s targets 4.5 m/s: highway-env's speed control gives a = (4.5 - 9) / 0.6 = -7.5 m/s^2 on
    the first frame, its largest deceleration."""
    task = crossing_task()
    highway = run_highway(task, [0] + [1] * 19)
    fast = run_fast([task], np.array([[0]] + [[1]] * 19))[0]
    assert highway[1][3] == pytest.approx(7.5, abs=1e-9)
    assert fast[1][3] == pytest.approx(7.5, abs=1e-9)


def _mixed_tasks() -> list[IntersectionTask]:
    from intersection_meta.scenario import load_scenario

    tasks = []
    for name in ("yield_left", "cross_straight", "merge_right", "random_crossing"):
        tasks += list(load_scenario(name).sample_tasks(3, seed=5))
    return tasks


def test_identical_on_both_backends_at_every_step():
    tasks = _mixed_tasks()
    actions = np.random.default_rng(0).integers(3, size=(25, len(tasks)))
    fast = run_fast(tasks, actions)
    for i, task in enumerate(tasks):
        highway = run_highway(task, [int(a) for a in actions[:, i]])
        assert len(highway) == len(fast[i])
        # libm vs NumPy SIMD last-bit differences (see the fast kernel's docstring) are the only ones allowed
        np.testing.assert_allclose(fast[i], highway, rtol=1e-9, atol=1e-9, err_msg=task.task_id)


def test_sync_vector_env_carries_the_same_criticality_across_autoresets():
    tasks = _mixed_tasks()[:6]
    ref = make_vector_env(tasks, seed=0, backend="highway")
    fast = make_vector_env(tasks, seed=0, backend="fast")
    _, r_info = ref.reset()
    _, f_info = fast.reset()
    rng = np.random.default_rng(1)
    for _ in range(25):
        for k in KEYS:
            np.testing.assert_allclose(f_info["criticality"][k], r_info["criticality"][k], rtol=1e-9, atol=1e-9)
        actions = rng.integers(3, size=len(tasks))
        *_, r_info = ref.step(actions)
        *_, f_info = fast.step(actions)
    ref.close()


def test_recording_series_matches_the_env_at_every_step(tmp_path: Path):
    from intersection_meta.recording import load_recordings, record_episode, save_recordings

    task = _mixed_tasks()[0]
    env = TwoVehicleIntersectionEnv(task)
    actions = iter([2, 0, 1, 1, 0, 2] + [1] * 30)
    rec = record_episode(env, lambda obs: next(actions), seed=0, label="x", task=task)
    path = save_recordings(tmp_path / "r.npz", [rec])
    series = load_recordings(path)[0].criticality_series()
    step_ends = rec.decision_frames()
    expected = run_highway(task, [2, 0, 1, 1, 0, 2] + [1] * 30)
    np.testing.assert_allclose(series[step_ends], expected, rtol=1e-12, atol=1e-12)


# --- outputs: rollout, metrics.csv, evaluation.json, HUD ------------------------------------------------------


def test_rollout_metrics_csv_and_evaluation_json_carry_the_metrics(tmp_path: Path):
    import csv

    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.config import make_config
    from intersection_meta.evaluate import evaluate_checkpoint, format_report
    from intersection_meta.scenario import load_scenario
    from intersection_meta.trainer import train

    config = make_config(
        {
            "scenario": "yield_left",
            "iterations": 1,
            "meta_batch_size": 2,
            "episodes_per_task": 2,
            "directed_episodes": 2,
            "eval_tasks": 0,
            "hidden_sizes": [8],
            "backend": "fast",
        }
    )
    result = train(config, tmp_path / "run", progress=False, tensorboard=False, scenario=load_scenario("yield_left"))
    with open(result.out_dir / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    for key in KEYS:
        for phase in ("pre", "post"):
            value = float(row[f"{key}_{phase}"])
            assert math.isnan(value) or value >= 0, (key, value)
    assert float(row["min_distance_m_pre"]) > 0 and float(row["ego_peak_decel_mps2_post"]) >= 0

    report = evaluate_checkpoint(
        load_checkpoint(result.checkpoint), n_tasks=3, adapt_steps=1, episodes_per_task=2, scripted=False
    )
    text = json.dumps(report, allow_nan=False)  # inf is stored as null
    back = json.loads(text)
    for entry in back["per_task"]:
        assert set(KEYS) <= set(entry)
        assert entry["min_distance_m"] > 0
        assert entry["pet_s"] is None or entry["pet_s"] >= 0
    assert set(KEYS) <= set(back["steps"][-1])
    assert "criticality" in format_report(report)


def test_rollout_keeps_each_episodes_last_value():
    from intersection_meta.networks import build_policy
    from intersection_meta.rollout import collect_episodes

    tasks = _mixed_tasks()[:4]
    vec = make_vector_env(tasks, seed=0, backend="fast")
    policy = build_policy(vec.single_observation_space, vec.single_action_space, hidden_sizes=(8,))
    eps = collect_episodes(vec, policy, None, seed=3)
    assert eps.criticality is not None and set(eps.criticality) == set(KEYS)
    # replay the same actions on the reference env: its final info is the episode's value
    for b, task in enumerate(tasks):
        acts = [int(a) for a in eps.actions[: int(eps.lengths[b]), b]]
        final = run_highway(task, acts)[-1]
        got = [float(eps.criticality[k][b]) for k in KEYS]
        np.testing.assert_allclose(got, final, rtol=1e-9, atol=1e-9)


def test_failure_report_bins_pet(tmp_path: Path):
    from intersection_meta.failure_report import write_failure_report
    from intersection_meta.scenario import load_scenario
    from intersection_meta.tasks import task_to_dict

    scenario = load_scenario("yield_left")
    tasks = scenario.sample_tasks(6, seed=0)
    per_task = [
        {
            "task_id": t.task_id,
            "task": task_to_dict(t),
            "return_mean": 0.0,
            "success_rate": 0.5,
            "collision_rate": 0.5,
            "min_distance_m": 3.0,
            "pet_s": (None if i % 2 else 1.0 + i),
            "min_ttc_s": None,
            "ego_peak_decel_mps2": 2.0,
        }
        for i, t in enumerate(tasks)
    ]
    report = {
        "scenario": "yield_left",
        "algo": "maml",
        "iteration": 1,
        "tasks": 6,
        "episodes_per_task": 2,
        "simulator": "fast",
        "steps": [{"adapt_step": 0, "return_mean": 0.0}],
        "per_task": per_task,
    }
    write_failure_report(report, scenario, tmp_path, checkpoint="ckpt")
    assert "pet_s" in (tmp_path / "report.md").read_text()


def test_hud_shows_running_criticality():
    from viz import draw

    from intersection_meta.recording import load_recordings

    rec = load_recordings(Path(__file__).parent / "data" / "intersection_pair.npz")[0]
    last = draw.hud_lines(rec, rec.n_frames - 1)
    text = [t for t, _ in last if t.startswith("min dist")]
    assert len(text) == 1
    d = rec.criticality_series()[-1][0]
    assert f"min dist {d:.1f} m" in text[0]
    assert "reward so far" in last[-1][0]
