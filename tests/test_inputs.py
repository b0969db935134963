"""Bounded inputs and the one error path (issue 12): hostile YAML, crafted checkpoints and recordings, counts
and seeds on every command line, OS errors and Ctrl-C, each ending in one line with the right exit status."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from intersection_meta.checkpoint import CheckpointError, load_checkpoint, load_raw
from intersection_meta.config import ConfigError, load_config_file, make_config, split_overrides
from intersection_meta.recording import RecordingFileError, load_recordings, save_recordings
from intersection_meta.scenario import ScenarioError, load_scenario, scenario_path
from intersection_meta.schema import MAX_YAML_BYTES, abbreviate

REPO = Path(__file__).resolve().parent.parent
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\nname: *i\n"
)


def one_line(text: str, limit: int = 600) -> bool:
    return "\n" not in text.strip() and len(text) < limit and "Traceback" not in text


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, cwd=REPO,
                          **kwargs)


# -- hostile YAML ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (ALIAS_BOMB.encode(), "aliases are expanded"),
        (b"name: " + b"[" * 500 + b"]" * 500 + b"\n", "nested deeper than"),
        (b"name: x\nitems: [" + b"0," * 400_000 + b"0]\n", "values once aliases are expanded"),
        (b"name: caf\xe9\n", "not UTF-8"),
        (b"description: " + b"x" * (MAX_YAML_BYTES + 10) + b"\n", "larger than"),
        (b"name: x\nversion: " + b"9" * 5000 + b"\n", "cannot be read"),
        (scenario_path("cartpole_physics").read_bytes().replace(b"description: ", b"description: " + b"y" * 5000),
         "at most"),
    ],
    ids=["alias_bomb", "nesting_500", "long_list", "not_utf8", "too_large", "huge_int", "long_description"],
)
def test_hostile_scenario_and_config_files_give_one_short_line(tmp_path: Path, content: bytes, fragment: str):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    t0 = time.perf_counter()
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert fragment in str(err.value) and one_line(str(err.value))
    assert str(path) in str(err.value)
    if fragment not in ("at most",):  # the config loader reads the same files through the same parser
        with pytest.raises(ConfigError) as cerr:
            make_config(load_config_file(path), source=str(path))
        assert fragment in str(cerr.value) and one_line(str(cerr.value))
    assert time.perf_counter() - t0 < 10  # (each used to take minutes and gigabytes)


def test_values_quoted_in_errors_are_abbreviated(tmp_path: Path):
    path = tmp_path / "s.yaml"
    base = scenario_path("cartpole_physics").read_text()
    path.write_text(base.replace("target_return: 150.0", "target_return: [" + ", ".join(["1"] * 5000) + "]"))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert "target_return" in str(err.value) and len(str(err.value)) < 400
    with pytest.raises(ConfigError) as cerr:
        make_config(split_overrides(["meta_lr=" + "[" + "1," * 5000 + "1]"])[0], source="--set")
    assert len(str(cerr.value)) < 600
    assert len(abbreviate(list(range(10**5)))) <= 100


@pytest.mark.parametrize(
    ("item", "key", "value"),
    [
        ("inner_lr=1e-3", "meta.inner_lr", 1e-3),
        ("inner_lr=1e30", "meta.inner_lr", 1e30),
        ("inner_lr=1.0e+30", "meta.inner_lr", 1e30),
        ("meta_lr=2E-4", "train.meta_lr", 2e-4),
        ("meta_batch_size=1e1", "train.meta_batch_size", 10),
    ],
)
def test_scientific_notation_is_a_number(item: str, key: str, value: float):
    config = make_config(split_overrides([item])[0], source="--set")
    assert config.flat()[key] == value and type(config.flat()[key]) is type(value)


def test_a_fractional_count_is_still_refused():
    with pytest.raises(ConfigError, match="meta_batch_size: got 2.5"):
        make_config(split_overrides(["meta_batch_size=2.5"])[0], source="--set")


def test_directed_lr_decay_zero_is_a_config_error_not_a_learner_crash():
    r = cli("intersection_meta.train", "--scenario", "cartpole_physics", "--set", "directed_lr_decay=0")
    assert r.returncode == 2 and "meta.directed_lr_decay" in r.stderr and one_line(r.stderr.splitlines()[-1])
    assert "Traceback" not in r.stderr


def test_a_meta_batch_beyond_memory_is_refused_up_front_with_the_estimate(tmp_path: Path):
    t0 = time.perf_counter()
    r = cli("intersection_meta.train", "--scenario", "cartpole_physics", "--set", "meta_batch_size=100000000",
            "--out", str(tmp_path / "r"), "--quiet")
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "GiB" in last and "train.meta_batch_size=100000000" in last and "Traceback" not in r.stderr
    assert time.perf_counter() - t0 < 120


# -- counts and seeds on every command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["intersection_meta.scenarios", "sample", "cartpole_physics", "-n", "-1"],
        ["intersection_meta.scenarios", "sample", "cartpole_physics", "-n", "0"],
        ["intersection_meta.scenarios", "sample", "cartpole_physics", "--seed", "-1"],
        ["intersection_meta.scenarios", "sample", "cartpole_physics", "-n", "10000000000"],
        ["intersection_meta.train", "--seed", "-1"],
        ["intersection_meta.train", "--iterations", "0"],
        ["intersection_meta.train", "--iterations", "2.5"],
        ["intersection_meta.train", "--threads", "0"],
        ["intersection_meta.evaluate", "--checkpoint", "x", "--episodes", "0"],
        ["intersection_meta.evaluate", "--checkpoint", "x", "--tasks", "0"],
        ["intersection_meta.evaluate", "--checkpoint", "x", "--adapt-steps", "-1"],
        ["intersection_meta.evaluate", "--checkpoint", "x", "--seed", "-3"],
        ["intersection_meta.bench", "--suite", "cartpole_physics", "--iterations", "1", "--seeds", "0"],
        ["intersection_meta.bench", "--suite", "cartpole_physics", "--iterations", "-1"],
        ["intersection_meta.bench", "--suite", "cartpole_physics", "--iterations", "1", "--jobs", "0"],
    ],
)
def test_every_count_and_seed_is_validated(args):
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "error" in r.stderr


def test_scientific_notation_of_a_whole_count_works_on_the_command_line():
    r = cli("intersection_meta.scenarios", "sample", "cartpole_physics", "-n", "2e0", "--seed", "1e1", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2


# -- crafted checkpoints and recordings ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    from intersection_meta.trainer import train

    out = tmp_path_factory.mktemp("ck") / "run"
    config = make_config({"scenario": "cartpole_physics", "iterations": 1, "meta_batch_size": 2,
                          "episodes_per_task": 2, "directed_episodes": 2, "eval_tasks": 0, "hidden_sizes": [8]})
    train(config, out, progress=False, tensorboard=False,
          scenario=load_scenario("cartpole_physics", ["episode.max_steps=10"]))
    return out / "checkpoints" / "last.pt"


def _crafted(good: Path, tmp_path: Path, change) -> Path:
    raw = torch.load(good, weights_only=True)
    change(raw)
    path = tmp_path / "crafted.pt"
    torch.save(raw, path)
    return path


def _nan_weight(raw):
    name = next(iter(raw["policy_state"]))
    raw["policy_state"][name] = torch.full_like(raw["policy_state"][name], float("nan"))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (_nan_weight, "non-finite weights"),
        (lambda raw: raw["spaces"].update(obs_dim=10**12), "outside"),
        (lambda raw: raw["spaces"].update(action={"type": "discrete", "n": -3}), "outside"),
        (lambda raw: raw["spaces"].update(action={"type": "box", "dim": 2, "low": [0.0], "high": [1.0]}), "dim"),
        (lambda raw: raw.update(policy_state={"w": "not a tensor"}), "mapping of tensors"),
        (lambda raw: raw["policy_state"].update({next(iter(raw["policy_state"])): torch.zeros(3, 3)}),
         "do not match"),
    ],
    ids=["nan_weights", "huge_obs_dim", "negative_actions", "box_bounds", "not_tensors", "wrong_shape"],
)
def test_crafted_checkpoints_are_one_line_errors(good_checkpoint: Path, tmp_path: Path, change, fragment):
    path = _crafted(good_checkpoint, tmp_path, change)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert fragment in str(err.value) and one_line(str(err.value)) and str(path) in str(err.value)


def test_a_zero_byte_checkpoint_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as err:
        load_raw(path)
    assert "not a readable checkpoint" in str(err.value) and one_line(str(err.value))


def test_replay_of_nan_weights_is_exit_2(good_checkpoint: Path, tmp_path: Path):
    path = _crafted(good_checkpoint, tmp_path, _nan_weight)
    r = cli("viz.replay", "--checkpoint", str(path), "--snapshot", str(tmp_path / "s.png"),
            env={**os.environ, "SDL_VIDEODRIVER": "offscreen"})
    assert r.returncode == 2 and "non-finite weights" in r.stderr and "Traceback" not in r.stderr


def test_resume_from_a_crafted_checkpoint_is_exit_2(good_checkpoint: Path, tmp_path: Path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    raw = torch.load(good_checkpoint, weights_only=True)
    raw["optimizer_state"] = {"state": {}, "param_groups": [{"params": [0]}]}  # the wrong parameter count
    torch.save(raw, run / "checkpoints" / "last.pt")
    r = cli("intersection_meta.train", "--resume", str(run), "--quiet", "--no-tensorboard")
    assert r.returncode == 2 and "cannot resume" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.fixture(scope="module")
def good_recording() -> Path:
    return REPO / "tests" / "data" / "intersection_pair.npz"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("rewards", np.zeros(10**3), "actions must have"),
        ("frame_states", np.zeros((5, 3, 6)), "frame_states must have shape"),
        ("frame_time_s", np.full(3, np.nan), "frame_time_s must have shape"),
        ("rewards", None, "non-finite"),
        ("frame_step", None, "frame_step must rise"),
    ],
)
def test_crafted_recordings_are_one_line_errors(good_recording: Path, tmp_path: Path, field, value, fragment):
    recordings = load_recordings(good_recording)
    rec = recordings[0]
    if value is None and field == "rewards":
        value = np.full_like(rec.rewards, np.nan)
    elif value is None:
        value = rec.frame_step[::-1].copy()
    object.__setattr__(rec, field, value)
    path = save_recordings(tmp_path / "crafted.npz", [rec])
    with pytest.raises(RecordingFileError) as err:
        load_recordings(path)
    assert fragment in str(err.value) and one_line(str(err.value))


# -- OS errors and Ctrl-C -----------------------------------------------------------------------------------------

TINY_CLI = [
    "intersection_meta.train", "--scenario", "cartpole_physics", "--set", "episode.max_steps=20",
    "--set", "meta_batch_size=2", "--set", "episodes_per_task=2", "--set", "directed_episodes=2",
    "--set", "hidden_sizes=[8]", "--quiet", "--no-tensorboard",
]


@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        (lambda tmp: _file(tmp / "a_file"), "File exists"),
        (lambda tmp: tmp / ("x" * 300), "File name too long"),
        (lambda tmp: Path("/proc/self/no_such_dir/run"), "No such file or directory"),
    ],
    ids=["out_is_a_file", "name_too_long", "unwritable"],
)
def test_bad_output_directories_are_one_line_exit_2(tmp_path: Path, out, fragment):
    r = cli(*TINY_CLI, "--out", str(out(tmp_path)), "--set", "eval_tasks=0")
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and fragment in last and "Traceback" not in r.stderr


def _file(path: Path) -> Path:
    path.write_text("not a directory")
    return path


def _limit_file_size(limit_bytes: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_is_one_line_exit_2_and_keeps_the_last_good_checkpoint(tmp_path: Path, good_checkpoint: Path):
    out = tmp_path / "run"
    limit = good_checkpoint.stat().st_size + 4_000  # checkpoints fit; tasks.jsonl outgrows it after a few iterations
    r = subprocess.run(
        [sys.executable, "-m", *TINY_CLI, "--set", "eval_tasks=0", "--iterations", "20", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=REPO, preexec_fn=_limit_file_size(limit),
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "File too large" in last and "Traceback" not in r.stderr
    done = load_raw(out / "checkpoints" / "last.pt")["iteration"]
    assert 0 < done < 20
    from intersection_meta.trainer import read_metrics

    assert [int(r["iteration"]) for r in read_metrics(out / "metrics.csv")][:done] == list(range(1, done + 1))
    r = cli("intersection_meta.train", "--resume", str(out), "--quiet", "--no-tensorboard",
            "--no-eval")  # with room again, the run continues
    assert r.returncode == 0, r.stderr


def test_ctrl_c_during_the_final_evaluation_is_exit_130_with_the_run_saved(tmp_path: Path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", *TINY_CLI, "--iterations", "1", "--set", "eval_tasks=2000", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    for line in proc.stderr:
        if line.startswith("evaluating on"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted during the final evaluation" in err and "Traceback" not in err
    assert load_raw(out / "checkpoints" / "last.pt")["iteration"] == 1
    assert math.isfinite(float(load_raw(out)["iteration"]))
