"""The fast batched intersection backend against highway-env (the independent reference)."""

from __future__ import annotations

import collections
import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.fast import kernel as K
from intersection_meta.envs.fast.vector_env import PARALLEL_MIN_SCENES
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv, with_settings
from intersection_meta.scenario import available_scenarios, load_scenario
from intersection_meta.tasks import DRIVERS, ENTRIES, INTENTS, IntersectionTask

OBS_TOL = 1e-3


def _broad_tasks(n: int, seed: int) -> list[IntersectionTask]:
    """Random crossings of every entry/intent/driver, observing what the shipped scenarios observe (so they batch
    with them in one env, and the conflict features are compared too)."""
    features = load_scenario("cross_straight").medium_task().settings.observation_features
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
    return [with_settings(t, observation_features=features) for t in tasks]


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


# --- fidelity ----------------------------------------------------------------------------------------------
def test_fidelity_against_reference_env():
    """Every shipped intersection scenario (their durations may differ) plus broad tasks, random policies."""
    tasks = _scenario_tasks(4, seed=3) + _broad_tasks(20, seed=4)
    assert len(tasks) >= 40
    outcome, steps = _agreement(tasks, TwoVehicleIntersectionEnv, FastIntersectionVectorEnv(tasks, seed=0))
    assert outcome >= 0.99
    assert steps >= 0.99


def test_fidelity_with_hidden_driver_parameters():
    """IDM drivers with non-default hidden parameters (time headway, minimum gap, max acceleration), on broad
    crossings and on the two scenarios that sample them: every outcome and observation agrees."""
    rng = np.random.default_rng(21)
    broad = [
        dataclasses.replace(
            t,
            other_driver="idm",
            other_idm_time_headway_s=float(rng.uniform(0.2, 4.0)),
            other_idm_min_gap_m=float(rng.uniform(0.0, 12.0)),
            other_idm_max_accel_mps2=float(rng.uniform(0.5, 10.0)),
        )
        for t in _broad_tasks(24, seed=22)
    ]
    tasks = broad + load_scenario("assertive_driver").sample_tasks(12, seed=23)
    tasks += load_scenario("yield_or_not", ["other.idm_max_accel_mps2=[1,9]"]).sample_tasks(12, seed=24)
    assert sum(not t.has_default_idm_parameters for t in tasks) >= 40
    outcome, steps = _agreement(tasks, TwoVehicleIntersectionEnv, FastIntersectionVectorEnv(tasks, seed=0), seed=5)
    assert outcome == 1.0
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
    assert obs.shape == (6, 18) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    obs, rew, term, trunc, info = env.step(env.action_space.sample())
    assert obs.shape == (6, 18) and obs.dtype == np.float32
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
    cont = with_settings(tasks[0], action="continuous")
    with pytest.raises(ValueError, match="share their settings"):
        FastIntersectionVectorEnv([tasks[1], cont])
    env = FastIntersectionVectorEnv(tasks)
    with pytest.raises(RuntimeError):
        env.step(np.zeros(len(tasks), dtype=int))
    env.reset()
    before = env.vehicle_state()
    with pytest.raises(ValueError, match="actions must be in"):
        env.step(np.array([0, 1, 2, 3, 0, 1]))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.full(len(tasks), 0.5))
    with pytest.raises(ValueError, match="expected 6 actions"):
        env.step(np.zeros(5, dtype=int))
    for k, v in env.vehicle_state().items():  # a rejected step changes nothing
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="6 seeds"):
        env.reset(seed=[1, 2])
    cenv = FastIntersectionVectorEnv([with_settings(t, action="continuous") for t in tasks])
    cenv.reset()
    with pytest.raises(ValueError, match="finite floats"):
        cenv.step(np.full((len(tasks), 1), np.nan, dtype=np.float32))


def test_matches_highway_sync_vector_env_step_for_step_across_autoresets():
    """Same tasks and actions through ``make_vector_env(backend="highway")`` (gymnasium's SyncVectorEnv of
    reference envs, NEXT_STEP autoreset): identical batches, including the autoreset steps."""
    from intersection_meta.envs.factory import make_vector_env

    tasks = _broad_tasks(5, seed=11)
    ref = make_vector_env(tasks, seed=0, backend="highway")
    fast = make_vector_env(tasks, seed=0, backend="fast")
    ref_obs, _ = ref.reset()
    fast_obs, _ = fast.reset()
    np.testing.assert_array_equal(fast_obs, ref_obs)
    rng = np.random.default_rng(3)
    resets = 0
    for _ in range(30):
        actions = rng.integers(3, size=len(tasks))
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(actions)
        f_obs, f_rew, f_term, f_trunc, f_info = fast.step(actions)
        # libm vs NumPy SIMD last-bit differences, amplified while a vehicle is nearly stopped (steering gain
        # 1 / max(speed, 0.01)): up to ~1e-4 here.
        np.testing.assert_allclose(f_obs, r_obs, rtol=0, atol=OBS_TOL)
        np.testing.assert_allclose(f_rew, r_rew, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(f_term, r_term)
        np.testing.assert_array_equal(f_trunc, r_trunc)
        np.testing.assert_array_equal(f_info["crashed"], r_info["crashed"])
        np.testing.assert_array_equal(f_info["arrived"], r_info["arrived"])
        for name in ("collision_reward", "high_speed_reward", "arrived_reward", "on_road_reward"):
            np.testing.assert_allclose(f_info["rewards"][name], r_info["rewards"][name], rtol=0, atol=1e-6)
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


# --- continuous actions -------------------------------------------------------------------------------------
def _continuous_actions(n: int, horizon: int, seed: int) -> np.ndarray:
    """(n, horizon, 1) float32 in [-1, 1] (some beyond, to exercise the clip): per-episode mean and spread."""
    rng = np.random.default_rng(seed)
    mu, sigma = rng.uniform(-1, 1, size=(n, 1)), rng.uniform(0, 1.2, size=(n, 1))
    return (mu + sigma * rng.standard_normal((n, horizon))).astype(np.float32)[..., None]


def test_continuous_actions_match_reference_env_step_for_step():
    tasks = [with_settings(t, action="continuous") for t in _scenario_tasks(3, seed=8) + _broad_tasks(16, seed=9)]
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    actions = _continuous_actions(len(tasks), horizon, seed=10)
    env = FastIntersectionVectorEnv(tasks, seed=0)
    assert env.single_action_space == TwoVehicleIntersectionEnv(tasks[0]).action_space
    obs, _ = env.reset()
    hist, rews, ends, infos = [obs], [], [], []
    for t in range(horizon):
        obs, r, term, trunc, info = env.step(actions[:, t])
        hist.append(obs)
        rews.append(r)
        ends.append(term | trunc)
        infos.append(info["crashed"].copy())
    outcomes = collections.Counter()
    for i, task in enumerate(tasks):
        ref = TwoVehicleIntersectionEnv(task)
        ref_obs, _ = ref.reset(seed=0)
        np.testing.assert_array_equal(hist[0][i], ref_obs)
        for t in range(horizon):
            ref_obs, ref_r, ref_term, ref_trunc, ref_info = ref.step(actions[i, t])
            np.testing.assert_allclose(hist[t + 1][i], ref_obs, rtol=0, atol=OBS_TOL)
            assert rews[t][i] == pytest.approx(ref_r, abs=1e-6)
            assert ends[t][i] == (ref_term or ref_trunc)
            assert infos[t][i] == ref_info["crashed"]
            if ref_term or ref_trunc:
                outcomes["collided" if ref_info["crashed"] else "arrived" if ref_info["arrived"] else "timeout"] += 1
                break
    assert len(outcomes) == 3  # the random accelerations reach every outcome


def test_continuous_actions_match_highway_sync_vector_env_across_autoresets():
    from intersection_meta.envs.factory import make_vector_env

    tasks = [with_settings(t, action="continuous", duration_s=6.0) for t in _broad_tasks(5, seed=12)]
    ref = make_vector_env(tasks, seed=0, backend="highway")
    fast = make_vector_env(tasks, seed=0, backend="fast")
    np.testing.assert_array_equal(fast.reset()[0], ref.reset()[0])
    actions = _continuous_actions(len(tasks), 20, seed=13)
    resets = 0
    for t in range(20):
        r_obs, r_rew, r_term, r_trunc, r_info = ref.step(actions[:, t])
        f_obs, f_rew, f_term, f_trunc, f_info = fast.step(actions[:, t])
        np.testing.assert_allclose(f_obs, r_obs, rtol=0, atol=OBS_TOL)
        np.testing.assert_allclose(f_rew, r_rew, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(f_term, r_term)
        np.testing.assert_array_equal(f_trunc, r_trunc)
        np.testing.assert_array_equal(f_info["crashed"], r_info["crashed"])
        np.testing.assert_allclose(f_info["speed"], r_info["speed"], rtol=0, atol=1e-6)
        resets += int((r_term | r_trunc).sum())
    assert resets >= len(tasks)
    ref.close()


# --- threads, per-scene parameters ---------------------------------------------------------------------------
def test_threaded_kernel_gives_the_serial_results():
    import numba

    tasks = [t for t in _scenario_tasks(60, seed=14)]
    tasks = (tasks * (PARALLEL_MIN_SCENES // len(tasks) + 1))[:PARALLEL_MIN_SCENES]
    rng = np.random.default_rng(15)
    actions = rng.integers(3, size=(25, len(tasks)))
    previous = numba.get_num_threads()
    runs = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            env = FastIntersectionVectorEnv(tasks)
            out = [env.reset()[0]]
            for a in actions:
                obs, rew, term, trunc, info = env.step(a)
                out += [obs, rew, term, trunc, info["crashed"]]
            runs.append(out)
    finally:
        numba.set_num_threads(previous)
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_idm_parameters_are_read_per_scene():
    """The other driver's hidden IDM parameters are per-scene kernel parameters: a scene whose task has other
    values matches a reference env of that task, while the scene of the default task keeps the intersection's."""
    # The ego turns left into the exit lane the other vehicle is heading for, 1 s ahead of it: the IDM
    # vehicle follows it (with the timid values its observation differs by up to 0.16 from the stock one).
    task = dataclasses.replace(
        _broad_tasks(1, seed=16)[0], ego_entry="south", ego_intent="left", other_entry="east",
        other_intent="straight", other_driver="idm", ego_speed_mps=9.0, other_speed_mps=9.0, time_gap_s=1.0,
    )  # fmt: skip
    timid = dataclasses.replace(
        task, other_idm_time_headway_s=3.0, other_idm_min_gap_m=7.0, other_idm_max_accel_mps2=2.0
    )
    tasks = [task, timid]
    env = FastIntersectionVectorEnv(tasks)
    np.testing.assert_array_equal(env._params[:, K.P_IDM_TIME_WANTED_S], [1.5, 3.0])
    np.testing.assert_array_equal(env._params[:, K.P_IDM_DISTANCE_WANTED_M], [7.0, 12.0])
    np.testing.assert_array_equal(env._params[:, K.P_IDM_ACC_MAX_MPS2], [6.0, 2.0])
    horizon = 12
    fast = [env.reset()[0]] + [env.step(np.array([1, 1]))[0] for _ in range(horizon)]
    for i, t in enumerate(tasks):
        ref = TwoVehicleIntersectionEnv(t)
        ref_obs = [ref.reset(seed=0)[0]]
        for _ in range(horizon):
            obs, _, term, trunc, _ = ref.step(1)
            ref_obs.append(obs)
            if term or trunc:
                break
        assert len(ref_obs) > 6
        np.testing.assert_allclose(np.array([f[i] for f in fast[: len(ref_obs)]]), ref_obs, rtol=0, atol=OBS_TOL)
    assert np.abs(fast[8][0] - fast[8][1]).max() > 0.05


def test_step_active_holds_inactive_scenes_and_steps_the_others_as_step(tasks):
    """Scenes outside the mask keep their state (no simulation, no autoreset); the others evolve exactly as
    under step(); a held scene that ended is autoreset by its next step()."""
    n = len(tasks)
    rng = np.random.default_rng(3)
    actions = rng.integers(3, size=(30, n))
    masks = rng.random((30, n)) < 0.7
    ref, env = FastIntersectionVectorEnv(tasks), FastIntersectionVectorEnv(tasks)
    ref.reset(seed=0)
    env.reset(seed=0)
    held_ended = 0  # steps that held a scene waiting for its autoreset
    for a, mask in zip(actions, masks, strict=True):
        before = env.vehicle_state()
        held_ended += int((env._si[~mask, K.SI_NEEDS_RESET] != 0).any())
        obs, rew, term, trunc, info = env.step_active(a, mask)
        after = env.vehicle_state()
        for key in before:
            np.testing.assert_array_equal(after[key][~mask], before[key][~mask])
        assert not (obs[~mask].any() or rew[~mask].any() or term[~mask].any() or trunc[~mask].any())
        assert not (info["_crashed"][~mask].any() or info["rewards"]["_arrived_reward"][~mask].any())
        assert info["_crashed"][mask].all()
        ref_obs, ref_rew, ref_term, ref_trunc, ref_info = _step_scenes(ref, a, mask)
        np.testing.assert_array_equal(obs[mask], ref_obs[mask])
        np.testing.assert_array_equal(rew[mask], ref_rew[mask])
        np.testing.assert_array_equal(term[mask], ref_term[mask])
        np.testing.assert_array_equal(trunc[mask], ref_trunc[mask])
        np.testing.assert_array_equal(info["crashed"][mask], ref_info["crashed"][mask])
    assert held_ended > 0


def _step_scenes(env: FastIntersectionVectorEnv, actions: np.ndarray, mask: np.ndarray):
    """step() of every scene of ``env``, then the state of the scenes outside ``mask`` put back: the
    reference for step_active (each scene evolves under step() on the steps it is active)."""
    state = (env._vf, env._vi, env._sf, env._si, env._criticality._state)  # the tracker feeds the conflict features
    saved = [a.copy() for a in state]
    out = env.step(actions)
    for arr, old in zip(state, saved, strict=True):
        arr[~mask] = old[~mask]
    return out


def test_step_active_rejects_bad_masks(tasks):
    env = FastIntersectionVectorEnv(tasks)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="active must be a bool array"):
        env.step_active(np.ones(len(tasks), dtype=int), np.ones(len(tasks) - 1, dtype=bool))
    with pytest.raises(ValueError, match="active must be a bool array"):
        env.step_active(np.ones(len(tasks), dtype=int), np.ones(len(tasks)))
