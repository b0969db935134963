"""The fast batched intersection backend against highway-env (the independent reference)."""

from __future__ import annotations

import itertools
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from highway_env.envs.intersection_env import IntersectionEnv

from intersection_meta.envs.fast_intersection import (
    FastIntersectionVectorEnv,
    _closest_lane_full,
    _heading_at,
    _local_coordinates,
    _position,
    _reference_network,
    _wrap_to_pi,
    lane_table,
)
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv
from intersection_meta.scenario import available_scenarios, load_scenario
from intersection_meta.tasks import DRIVERS, ENTRIES, INTENTS, IntersectionTask

OBS_TOL = 1e-3


def _broad_tasks(n: int, seed: int) -> list[IntersectionTask]:
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n):
        ego_entry = str(rng.choice(ENTRIES))
        tasks.append(
            IntersectionTask(
                "broad",
                ego_entry,
                str(rng.choice(INTENTS)),
                float(rng.uniform(3, 12)),
                float(rng.uniform(20, 80)),
                str(rng.choice([e for e in ENTRIES if e != ego_entry])),
                str(rng.choice(INTENTS)),
                str(rng.choice(DRIVERS)),
                float(rng.uniform(3, 12)),
                float(rng.uniform(-3, 3)),
            )
        )
    return tasks


def _scenario_tasks(per_scenario: int, seed: int) -> list[IntersectionTask]:
    tasks = []
    for name in available_scenarios():
        scenario = load_scenario(name)
        if scenario.kind == "intersection":
            tasks += list(scenario.sample_tasks(per_scenario, seed=seed))
    return tasks


def _reference_episode(env: gym.Env, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    obs, _ = env.reset(seed=0)
    obs_list, rewards, info = [obs], [], {"crashed": False, "arrived": False}
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        obs_list.append(obs)
        rewards.append(r)
        if term or trunc:
            break
    outcome = "collided" if info["crashed"] else "arrived" if info["arrived"] else "timeout"
    return np.array(obs_list), np.array(rewards), outcome


def _fast_episodes(
    env: FastIntersectionVectorEnv, actions: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    obs, _ = env.reset(seed=0)
    hist, rews, ends, infos = [obs], [], [], []
    for t in range(actions.shape[1]):
        obs, r, term, trunc, info = env.step(actions[:, t])
        hist.append(obs)
        rews.append(r)
        ends.append(term | trunc)
        infos.append((info["crashed"], info["arrived"]))
    out = []
    for i in range(actions.shape[0]):
        end = next(t for t in range(len(ends)) if ends[t][i]) + 1
        crashed, arrived = infos[end - 1][0][i], infos[end - 1][1][i]
        outcome = "collided" if crashed else "arrived" if arrived else "timeout"
        out.append((np.array([h[i] for h in hist[: end + 1]]), np.array([r[i] for r in rews[:end]]), outcome))
    return out


def _agreement(tasks, make_reference, fast_env, seed=0):
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=len(tasks))
    actions = np.array([rng.choice(3, size=horizon, p=p) for p in probs])
    fast = _fast_episodes(fast_env, actions)
    outcome_ok = steps = steps_ok = 0
    for i, task in enumerate(tasks):
        ref_obs, ref_rew, ref_outcome = _reference_episode(make_reference(task), actions[i])
        f_obs, f_rew, f_outcome = fast[i]
        outcome_ok += ref_outcome == f_outcome
        common = min(len(ref_rew), len(f_rew))
        steps += max(len(ref_rew), len(f_rew))
        steps_ok += int(
            (np.abs(ref_obs[1 : common + 1] - f_obs[1 : common + 1]).max(axis=1) <= OBS_TOL).sum()
        )
    return outcome_ok / len(tasks), steps_ok / steps


# --- geometry against highway-env's own lanes --------------------------------------------------------------
def test_lane_geometry_and_closest_lane_match_highway_env():
    tab = lane_table()
    net = _reference_network()
    rng = np.random.default_rng(0)
    pts = rng.uniform(-60, 60, size=(300, 2))
    pts[:150] = rng.uniform(-15, 15, size=(150, 2))  # dense in the junction
    heading = rng.uniform(-np.pi, np.pi, size=300)
    closest = _closest_lane_full(tab, pts[:, 0], pts[:, 1], heading)
    for k, name in enumerate(tab.names):
        lane = net.get_lane(name)
        ids = np.full(len(pts), k)
        s, r = _local_coordinates(tab, ids, pts[:, 0], pts[:, 1])
        ref = np.array([lane.local_coordinates(p) for p in pts])
        np.testing.assert_allclose(s, ref[:, 0], atol=1e-9)
        np.testing.assert_allclose(r, ref[:, 1], atol=1e-9)
        np.testing.assert_allclose(_heading_at(tab, ids, s), [lane.heading_at(v) for v in s], atol=1e-12)
        x, y = _position(tab, ids, s)
        np.testing.assert_allclose(np.stack([x, y], 1), [lane.position(v, 0) for v in s], atol=1e-9)
    expected = [tab.index(net.get_closest_lane_index(p, h)) for p, h in zip(pts, heading, strict=True)]
    assert closest.tolist() == expected


def test_twin_lane_never_closer_when_safe():
    """The closed-form shortcut: on an approach/exit lane with |r| + |heading error| < _TWIN_SAFE, the
    opposite lane of the same arm is farther (checked with highway-env's own distances)."""
    from intersection_meta.envs.fast_intersection import _TWIN_SAFE

    tab = lane_table()
    net = _reference_network()
    rng = np.random.default_rng(1)
    checked = 0
    for k in np.nonzero(tab.twin >= 0)[0]:
        lane, twin = net.get_lane(tab.names[k]), net.get_lane(tab.names[tab.twin[k]])
        for _ in range(300):
            s = rng.uniform(-250, 350)
            r = rng.uniform(-_TWIN_SAFE, _TWIN_SAFE)
            err = rng.uniform(-1, 1) * (_TWIN_SAFE - abs(r))
            pos = lane.position(s, r)
            h = lane.heading_at(s) + err
            assert abs(r) + abs(err) < _TWIN_SAFE
            assert twin.distance_with_heading(pos, h) > lane.distance_with_heading(pos, h)
            checked += 1
    assert checked == 8 * 300


def test_dot_and_norm_are_bitwise_numpy():
    from intersection_meta.envs.fast_intersection import _dot2, _norm2

    rng = np.random.default_rng(0)
    u, w = rng.normal(size=(2000, 2)) * 10, rng.normal(size=(2000, 2))
    assert np.array_equal(
        _dot2(u[:, 0], u[:, 1], w[:, 0], w[:, 1]), [np.dot(a, b) for a, b in zip(u, w, strict=True)]
    )
    assert np.array_equal(_norm2(u[:, 0], u[:, 1]), [np.linalg.norm(a) for a in u])


def test_polygons_and_separating_axis_test_are_bitwise_highway_env():
    from highway_env import utils
    from highway_env.vehicle.kinematics import Vehicle

    from intersection_meta.envs.fast_intersection import _polygons, _polygons_intersecting, _velocity

    rng = np.random.default_rng(0)
    k, dt = 400, 1 / 15
    xa, ya, ha, va = (
        rng.uniform(-20, 20, k),
        rng.uniform(-20, 20, k),
        rng.uniform(-7, 7, k),
        rng.uniform(0, 10, k),
    )
    xb, yb = xa + rng.uniform(-4, 4, k), ya + rng.uniform(-4, 4, k)
    hb, vb = rng.uniform(-7, 7, k), rng.uniform(0, 10, k)
    pa, pb = _polygons(xa, ya, ha), _polygons(xb, yb, hb)
    inter, will, trans = _polygons_intersecting(pa, pb, _velocity(va, ha) * dt, _velocity(vb, hb) * dt)
    assert will.sum() > 100
    for i in range(k):
        a, b = Vehicle(None, [xa[i], ya[i]], ha[i], va[i]), Vehicle(None, [xb[i], yb[i]], hb[i], vb[i])
        assert np.array_equal(pa[i], a.polygon()[:4])
        ref_i, ref_w, ref_t = utils.are_polygons_intersecting(
            a.polygon(), b.polygon(), a.velocity * dt, b.velocity * dt
        )
        assert (ref_i, ref_w) == (inter[i], will[i])
        if ref_w:
            assert np.array_equal(ref_t, trans[i])


def test_wrap_to_pi_is_bitwise_highway_env():
    x = np.concatenate([np.linspace(-20, 20, 10001), [-np.pi, np.pi, -3 * np.pi, 3 * np.pi, 0.0, -0.0]])
    ref = ((x + np.pi) % (2 * np.pi)) - np.pi
    assert np.array_equal(_wrap_to_pi(x), ref)


# --- fidelity ----------------------------------------------------------------------------------------------
def test_fidelity_against_reference_env():
    """Every shipped intersection scenario (their durations may differ) plus broad tasks, random policies."""
    tasks = _scenario_tasks(4, seed=3) + _broad_tasks(20, seed=4)
    assert len(tasks) >= 40
    outcome, steps = _agreement(tasks, TwoVehicleIntersectionEnv, FastIntersectionVectorEnv(tasks, seed=0))
    assert outcome >= 0.99
    assert steps >= 0.99


class _RegulatedReference(TwoVehicleIntersectionEnv):
    """The reference scene on stock highway-env's RegulatedRoad (right-of-way rules on)."""

    def _make_road(self) -> None:
        IntersectionEnv._make_road(self)


def test_regulated_road_option_matches_stock_regulated_road():
    tasks = _broad_tasks(30, seed=5)
    fast = FastIntersectionVectorEnv(tasks, seed=0, regulated_road=True)
    outcome, steps = _agreement(tasks, _RegulatedReference, fast, seed=1)
    assert outcome >= 0.99
    assert steps >= 0.99


# --- gymnasium vector env API ------------------------------------------------------------------------------
@pytest.fixture
def tasks() -> list[IntersectionTask]:
    return _broad_tasks(6, seed=7)


def test_spaces_shapes_dtypes(tasks):
    env = FastIntersectionVectorEnv(tasks, seed=0)
    ref = TwoVehicleIntersectionEnv(tasks[0])
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = env.reset(seed=1)
    assert obs.shape == (6, 14) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert obs.shape == (6, 14) and obs.dtype == np.float32
    assert rew.shape == (6,) and rew.dtype == np.float64
    assert term.dtype == bool and trunc.dtype == bool
    assert info["crashed"].dtype == bool and info["arrived"].dtype == bool
    assert {k for k in info["rewards"] if not k.startswith("_")} == {
        "collision_reward",
        "high_speed_reward",
        "arrived_reward",
        "on_road_reward",
    }
    assert all(v.shape == (6,) for v in info["rewards"].values())


def test_next_step_autoreset_ignores_action_and_returns_reset_obs(tasks):
    env = FastIntersectionVectorEnv(tasks, seed=0)
    obs0, _ = env.reset(seed=0)
    ended = np.zeros(len(tasks), dtype=bool)
    for _ in range(13):
        _, _, term, trunc, _ = env.step(np.full(len(tasks), 2))
        ended = term | trunc
        if ended.any():
            break
    assert ended.any()
    obs, rew, term, trunc, info = env.step(np.zeros(len(tasks), dtype=int))
    np.testing.assert_array_equal(obs[ended], obs0[ended])
    assert (rew[ended] == 0).all() and not term[ended].any() and not trunc[ended].any()
    assert not info["crashed"][ended].any()
    # After the autoreset step the sub-env runs a fresh episode: one IDLE step from the initial state.
    fresh = FastIntersectionVectorEnv(tasks, seed=0)
    fresh.reset()
    ref_obs, *_ = fresh.step(np.ones(len(tasks), dtype=int))
    obs, *_ = env.step(np.ones(len(tasks), dtype=int))
    np.testing.assert_array_equal(obs[ended], ref_obs[ended])


def test_episodes_truncate_at_duration(tasks):
    env = FastIntersectionVectorEnv(tasks, seed=0)
    env.reset()
    done_at = np.full(len(tasks), -1)
    for t in range(13):
        _, _, term, trunc, _ = env.step(np.zeros(len(tasks), dtype=int))
        newly = (term | trunc) & (done_at < 0)
        done_at[newly] = t
        if t == 12:
            assert (done_at >= 0).all()
            assert (trunc | (done_at < 12)).all()


def test_deterministic(tasks):
    rng = np.random.default_rng(0)
    actions = rng.integers(3, size=(30, len(tasks)))
    runs = []
    for seed in (0, 123):
        env = FastIntersectionVectorEnv(tasks, seed=seed)
        out = [env.reset(seed=seed)[0]]
        for a in actions:
            obs, rew, term, trunc, _ = env.step(a)
            out += [obs, rew, term, trunc]
        runs.append(out)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_reset_mask_resets_only_selected(tasks):
    env = FastIntersectionVectorEnv(tasks, seed=0)
    obs0, _ = env.reset()
    obs1, *_ = env.step(np.full(len(tasks), 2))
    mask = np.zeros(len(tasks), dtype=bool)
    mask[0] = True
    obs, _ = env.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[0], obs0[0])
    np.testing.assert_array_equal(obs[1:], obs1[1:])


def test_factory_fast_backend(tasks):
    from intersection_meta.envs.factory import make_vector_env

    env = make_vector_env(tasks, seed=0, backend="fast")
    assert isinstance(env, FastIntersectionVectorEnv)
    assert env.num_envs == len(tasks)


def test_invalid_inputs(tasks):
    with pytest.raises(ValueError):
        FastIntersectionVectorEnv([])
    other = dataclasses.replace(
        tasks[1], settings=dataclasses.replace(tasks[1].settings, simulation_frequency_hz=10)
    )
    with pytest.raises(ValueError, match="share their settings"):
        FastIntersectionVectorEnv([tasks[0], other])
    cont = dataclasses.replace(tasks[0], settings=dataclasses.replace(tasks[0].settings, action="continuous"))
    with pytest.raises(ValueError, match="discrete"):
        FastIntersectionVectorEnv([cont])
    env = FastIntersectionVectorEnv(tasks)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(len(tasks), dtype=int))
    env.reset()
    with pytest.raises(ValueError):
        env.step(np.full(len(tasks), 3))


def test_matches_highway_sync_vector_env_step_for_step_across_autoresets():
    """Same tasks and actions through ``make_vector_env(backend="highway")`` (gymnasium's SyncVectorEnv of
    reference envs, NEXT_STEP autoreset): identical batches, including the autoreset steps."""
    from intersection_meta.envs.factory import make_vector_env

    tasks = _broad_tasks(5, seed=11)
    ref = make_vector_env(tasks, seed=0, backend="highway")
    fast = make_vector_env(tasks, seed=0, backend="fast")
    ref_obs, _ = ref.reset()
    fast_obs, _ = fast.reset()
    np.testing.assert_allclose(fast_obs, ref_obs, atol=1e-6)
    rng = np.random.default_rng(3)
    resets = 0
    for _ in range(30):
        actions = rng.integers(3, size=len(tasks))
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(actions)
        f_obs, f_rew, f_term, f_trunc, f_info = fast.step(actions)
        np.testing.assert_allclose(f_obs, r_obs, atol=1e-6)
        np.testing.assert_allclose(f_rew, r_rew, atol=1e-9)
        np.testing.assert_array_equal(f_term, r_term)
        np.testing.assert_array_equal(f_trunc, r_trunc)
        np.testing.assert_array_equal(f_info["crashed"], r_info["crashed"])
        np.testing.assert_array_equal(f_info["arrived"], r_info["arrived"])
        for name in ("collision_reward", "high_speed_reward", "arrived_reward", "on_road_reward"):
            np.testing.assert_allclose(f_info["rewards"][name], r_info["rewards"][name], atol=1e-9)
        resets += int((r_term | r_trunc).sum())
    assert resets >= len(tasks)
    ref.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"observation_absolute": False},
        {"observation_features": ("presence", "vx", "x", "sin_h")},
        {"target_speeds_mps": (0.0, 3.0, 6.0, 9.0, 12.0), "duration_s": 8.0},
    ],
)
def test_settings_variants_match_reference(changes):
    tasks = [
        dataclasses.replace(t, settings=dataclasses.replace(t.settings, **changes))
        for t in _broad_tasks(8, 13)
    ]
    outcome, steps = _agreement(tasks, TwoVehicleIntersectionEnv, FastIntersectionVectorEnv(tasks), seed=2)
    assert outcome == 1.0 and steps == 1.0


def test_rejects_invalid_tasks_and_options(tasks):
    same_entry = dataclasses.replace(tasks[0], other_entry=tasks[0].ego_entry)
    with pytest.raises(ValueError, match="entry"):
        FastIntersectionVectorEnv([same_entry])
    env = FastIntersectionVectorEnv(tasks)
    with pytest.raises(ValueError, match="reset options"):
        env.reset(options={"task": tasks[0]})


# --- sharding over worker processes ---------------------------------------------------------------------------
def test_shard_bounds_are_contiguous_and_balanced():
    from intersection_meta.envs.sharded import shard_bounds

    bounds = shard_bounds(10, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 10
    assert all(b[1] == c[0] for b, c in itertools.pairwise(bounds))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def test_sharded_env_matches_single_process_env_and_shuts_down_workers():
    import gc
    import os
    import time

    from intersection_meta.envs.factory import make_vector_env
    from intersection_meta.envs.sharded import ShardedFastIntersectionVectorEnv

    tasks = _broad_tasks(23, seed=5)
    single = FastIntersectionVectorEnv(tasks, seed=1)
    sharded = make_vector_env(tasks, seed=1, backend="fast", workers=3)
    assert isinstance(sharded, ShardedFastIntersectionVectorEnv) and len(sharded.worker_pids) == 2
    o1, _ = single.reset()
    o2, _ = sharded.reset()
    np.testing.assert_array_equal(o1, o2)
    rng = np.random.default_rng(0)
    for t in range(70):
        actions = rng.integers(3, size=len(tasks))
        r1, r2 = single.step(actions), sharded.step(actions)
        for a, b in zip(r1[:4], r2[:4], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
        assert r1[4].keys() == r2[4].keys() and r1[4]["rewards"].keys() == r2[4]["rewards"].keys()
        for k in ("crashed", "arrived", "speed"):
            np.testing.assert_array_equal(r1[4][k], r2[4][k])
        for k, v in r1[4]["rewards"].items():
            np.testing.assert_array_equal(v, r2[4]["rewards"][k])
        if t == 40:  # a masked reset mid-run
            mask = rng.random(len(tasks)) < 0.5
            o1, _ = single.reset(options={"reset_mask": mask})
            o2, _ = sharded.reset(options={"reset_mask": mask})
            np.testing.assert_array_equal(o1, o2)
    s1, s2 = single.vehicle_state(), sharded.vehicle_state()
    for k in s1:
        np.testing.assert_array_equal(s1[k], s2[k])
    assert sharded.cpu_seconds() > 0
    pids = sharded.worker_pids
    sharded.close()
    with pytest.raises(RuntimeError):
        sharded.step(np.zeros(len(tasks), dtype=int))
    assert not any(os.path.exists(f"/proc/{p}") and _is_running(p) for p in pids)
    # Garbage collection (no close()) also stops the workers.
    env = ShardedFastIntersectionVectorEnv(tasks[:4], workers=2)
    pids = env.worker_pids
    del env
    gc.collect()
    deadline = time.monotonic() + 10
    while any(_is_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_is_running(p) for p in pids)


def _is_running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def test_workers_option_is_validated():
    from intersection_meta.envs.factory import make_vector_env
    from intersection_meta.envs.sharded import ShardedFastIntersectionVectorEnv

    tasks = _broad_tasks(2, seed=0)
    assert isinstance(make_vector_env(tasks, backend="fast"), FastIntersectionVectorEnv)
    with pytest.raises(ValueError, match="workers"):
        make_vector_env(tasks, backend="highway", workers=2)
    with pytest.raises(ValueError, match="workers"):
        make_vector_env(tasks, backend="fast", workers=0)
    with pytest.raises(ValueError, match="workers"):
        ShardedFastIntersectionVectorEnv(tasks, workers=3)
