"""Recordings: contents checked against an independent replay of the env, pickle-free file round trips,
clear errors for missing / corrupt files."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from intersection_meta.envs.factory import make_env
from intersection_meta.recording import (
    STATE_FIELDS,
    Recording,
    RecordingFileError,
    load_recordings,
    record_episode,
    save_recordings,
)
from intersection_meta.scenario import load_scenario
from intersection_meta.tasks import task_from_dict

FIXTURE = Path(__file__).parent / "data" / "intersection_pair.npz"


@pytest.fixture(scope="module")
def intersection_task():
    return load_scenario("straight_vs_left_turner").sample_tasks(3, seed=0)[2]


@pytest.fixture(scope="module")
def cartpole_task():
    return load_scenario("cartpole_physics").sample_tasks(1, seed=0)[0]


def _scripted(actions):
    queue = list(actions)
    return lambda obs: queue.pop(0) if queue else 2


def test_intersection_states_match_an_independent_rollout(intersection_task):
    actions = [0, 0, 2, 2, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    rec = record_episode(make_env(intersection_task), _scripted(actions), seed=5, label="x", task=intersection_task)

    # independent reference: step a fresh env with the same seed and actions, read the vehicles directly
    env = make_env(intersection_task)
    env.reset(seed=5)
    ego = env.unwrapped.vehicle
    other = next(v for v in env.unwrapped.road.vehicles if v is not ego)
    expected = [[[*ego.position, ego.heading, ego.speed], [*other.position, other.heading, other.speed]]]
    rewards, info = [], {}
    for action in actions[: rec.n_steps]:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        expected.append([[*ego.position, ego.heading, ego.speed], [*other.position, other.heading, other.speed]])
        if terminated or truncated:
            break

    assert rec.frame_states.shape == (1 + 15 * rec.n_steps, 2, len(STATE_FIELDS))  # 15 Hz sim, 1 Hz decisions
    np.testing.assert_allclose(rec.decision_states()[:, :, :4], np.asarray(expected))
    np.testing.assert_allclose(rec.rewards, rewards)
    np.testing.assert_array_equal(rec.actions, actions[: rec.n_steps])
    assert rec.outcome == ("collided" if info["crashed"] else "arrived" if info["arrived"] else "timed out")
    assert rec.frame_step[0] == 0 and rec.frame_step[-1] == rec.n_steps
    assert np.all(np.diff(rec.frame_step) >= 0)
    np.testing.assert_allclose(np.diff(rec.frame_time_s), 1 / 15)
    assert task_from_dict(rec.task) == intersection_task
    # the capture hook is gone after the episode: the road's step is the class method again
    assert "step" not in vars(env.unwrapped.road)


def test_crash_is_recorded_per_frame(intersection_task):
    rec = record_episode(make_env(intersection_task), lambda obs: 2, seed=3, label="fast", task=intersection_task)
    assert rec.outcome == "collided"
    crashed = rec.frame_states[:, 0, 5]
    assert crashed[-1] == 1 and crashed[0] == 0
    assert np.all(np.diff(crashed) >= 0)  # once crashed, stays crashed


def test_rgb_recording_of_cartpole(cartpole_task):
    env = make_env(cartpole_task, render_mode="rgb_array")
    rec = record_episode(env, lambda obs: 0, seed=1, label="left", task=cartpole_task)
    assert rec.kind == "cartpole" and rec.outcome == "terminated"
    assert rec.rgb_frames.shape == (rec.n_steps + 1, 200, 300, 3) and rec.rgb_frames.dtype == np.uint8
    assert rec.rgb_frames.std() > 0
    assert not np.array_equal(rec.rgb_frames[0], rec.rgb_frames[-1])  # the pole fell
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        record_episode(make_env(cartpole_task), lambda obs: 0, seed=1, label="x", task=cartpole_task)


def test_round_trip_is_equal_and_pickle_free(tmp_path, intersection_task, cartpole_task):
    recs = [
        record_episode(make_env(intersection_task), lambda obs: 2, seed=3, label="pre", task=intersection_task),
        record_episode(make_env(cartpole_task, render_mode="rgb_array"), lambda obs: 1, seed=2, label="cp",
                       task=cartpole_task, episode=1),
    ]
    path = save_recordings(tmp_path / "recs", recs)
    assert path.name == "recs.npz"
    loaded = load_recordings(path)
    assert loaded == recs
    assert loaded[0] != loaded[1]
    assert loaded[0] != replace(recs[0], label="other")
    with np.load(path, allow_pickle=False) as archive:  # every entry loads without pickle
        assert all(archive[name].dtype != object for name in archive.files)
        meta = json.loads(str(archive["__meta__"][0]))
    assert meta["version"] == 1 and [m["label"] for m in meta["recordings"]] == ["pre", "cp"]


def test_committed_fixture_loads():
    pre, post = load_recordings(FIXTURE)
    assert (pre.label, pre.outcome, post.outcome) == ("pre-adaptation", "collided", "arrived")
    assert isinstance(pre, Recording) and pre.episode == post.episode == 0


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "foreign_npz", "future_version", "no_array"])
def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, damage):
    path = tmp_path / f"{damage}.npz"
    data = FIXTURE.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all" * 10)
    elif damage == "foreign_npz":
        np.savez(path, x=np.arange(3))
    elif damage in ("future_version", "no_array"):
        with np.load(FIXTURE, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        meta = json.loads(str(arrays["__meta__"][0]))
        if damage == "future_version":
            meta["version"] = 99
        else:
            del arrays["1/rewards"]
        arrays["__meta__"] = np.asarray([json.dumps(meta)])
        np.savez_compressed(path, **arrays)
    with pytest.raises(RecordingFileError) as err:
        load_recordings(path)
    assert str(path) in str(err.value)
    if damage == "truncated":
        assert zipfile.is_zipfile(path) is False


def test_recording_module_imports_neither_torch_nor_pygame():
    code = ("import sys, intersection_meta.recording; "
            "bad = {'torch', 'pygame'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
