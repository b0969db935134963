"""Scenario authoring: constraints (``require:``), rejection sampling, inheritance (``extends:``), normal draws."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from intersection_meta.scenario import (
    MAX_DRAWS_PER_TASK,
    SCENARIO_DIR,
    Normal,
    Scenario,
    ScenarioError,
    load_scenario,
    read_scenario_file,
)
from intersection_meta.tasks import APPROACH_LANE_LENGTH_M

YIELD_LEFT = read_scenario_file(SCENARIO_DIR / "yield_left.yaml")[0]
#: A medium task that satisfies |gap| > 1 (the midpoint gap, 0, does not).
MEDIUM = {"other": {"time_gap_s": 1.5}}


def _scenario(**changes) -> Scenario:
    data = yaml.safe_load(yaml.safe_dump(YIELD_LEFT))
    for dotted, value in changes.items():
        node = data
        *head, last = dotted.split("__")
        for k in head:
            node = node[k]
        node[last] = value
    return Scenario.from_dict(data, source="test.yaml")


# ---- constraints ------------------------------------------------------------------------------------------


def test_require_rejects_tasks_and_keeps_task_i_a_function_of_seed_and_i():
    s = _scenario(require=["abs(other.time_gap_s) > 1.0"], medium_task=MEDIUM)
    tasks = s.sample_tasks(30, seed=4)
    assert all(abs(t.time_gap_s) > 1.0 for t in tasks)
    # prefix-stable and reproducible: task i depends on (seed, i) only
    assert s.sample_tasks(10, seed=4) == tasks[:10]
    assert s.sample_tasks(30, seed=4) == tasks
    assert s.sample_tasks(30, seed=5) != tasks
    # a task that already satisfies the constraint is the unconstrained scenario's task i
    plain = _scenario().sample_tasks(30, seed=4)
    for free, constrained in zip(plain, tasks, strict=True):
        if abs(free.time_gap_s) > 1.0:
            assert free == constrained


def test_acceptance_rate_matches_the_closed_form():
    # gap ~ U(-2.5, 2.5): P(|gap| > 1) = 3/5. Speed range wide enough that the lane constraint never binds.
    s = _scenario(require=["abs(other.time_gap_s) > 1.0"], medium_task=MEDIUM)
    est = s.acceptance(n_draws=4000, seed=1)
    assert est.acceptance_rate == pytest.approx(0.6, abs=0.03)
    assert set(est.rejected) == {"require[0]"}
    sample = s.sample_with_stats(200, seed=0)
    assert len(sample.tasks) == 200 and sample.accepted == 200
    assert 200 / sample.draws == pytest.approx(0.6, abs=0.07)
    assert sample.rejected["require[0]"] == sample.draws - 200
    assert "acceptance 200/" in sample.describe() and "require[0]" in sample.describe()


def test_unconstrained_shipped_scenario_accepts_every_draw():
    sample = load_scenario("yield_left").sample_with_stats(50, seed=0)
    assert sample.draws == 50 and sample.acceptance_rate == 1.0 and not sample.rejected


def test_lane_check_is_a_per_task_constraint_so_wide_ranges_work():
    # The old whole-file corner check refused this range (gap 9 s at 10 m/s starts the car 146 m out).
    s = _scenario(other__time_gap_s=[-2.0, 9.0])
    sample = s.sample_with_stats(100, seed=0)
    assert 0.2 < sample.acceptance_rate < 0.9
    assert set(sample.rejected) == {"built-in 'other starts inside its approach lane'"}
    for t in sample.tasks:
        assert 0.0 <= t.other_distance_to_stop_m <= APPROACH_LANE_LENGTH_M


def test_cap_error_names_the_constraint(tmp_path: Path):
    s = _scenario(require=["other.speed_mps > 3", "other.speed_mps > 11"], medium_task={"other": {"speed_mps": 12}},
                  other__speed_mps=[5.0, 12.0])
    # P(speed > 11) = 1/7 per draw: fine
    assert all(t.other_speed_mps > 11 for t in s.sample_tasks(5))
    # the medium task satisfies it, a continuous draw almost never does
    impossible = _scenario(require=["other.speed_mps > 3", "other.time_gap_s == 1.0"],
                           medium_task={"other": {"time_gap_s": 1.0}})
    with pytest.raises(ScenarioError) as info:
        impossible.sample_tasks(3, seed=2)
    msg = str(info.value)
    assert msg.startswith("test.yaml: require[1]: no task satisfied the constraints in ")
    assert f"{MAX_DRAWS_PER_TASK} draws (task 0, seed 2)" in msg and "'other.time_gap_s == 1.0'" in msg
    assert "\n" not in msg


def test_medium_task_must_satisfy_the_constraints():
    with pytest.raises(ScenarioError, match=r"test.yaml: medium_task: .*breaks require\[0\]"):
        _scenario(require=["abs(other.time_gap_s) > 1.0"])  # the midpoint gap is 0
    s = _scenario(require=["abs(other.time_gap_s) > 1.0"], medium_task={"other": {"time_gap_s": 1.5}})
    assert s.medium_task().time_gap_s == 1.5


def test_require_round_trips_and_takes_set_overrides():
    s = load_scenario("yield_left", ['require=["other.speed_mps * other.time_gap_s < 15"]'])
    assert s.constraints[0].key == "require[0]"
    again = Scenario.from_dict(yaml.safe_load(s.to_yaml()), source="again")
    assert again.sample_tasks(20, seed=1) == s.sample_tasks(20, seed=1)
    assert all(t.other_speed_mps * t.time_gap_s < 15 for t in s.sample_tasks(50))


def test_require_over_categorical_keys():
    s = load_scenario("random_crossing", ["require=[\"other.driver == 'idm' or other.speed_mps < 7\"]"])
    for t in s.sample_tasks(60, seed=3):
        assert t.other_driver == "idm" or t.other_speed_mps < 7


def test_cli_sample_reports_acceptance_and_cap_error_is_one_line(tmp_path: Path):
    child = tmp_path / "gaps.yaml"
    child.write_text("extends: yield_left\nname: gaps\nrequire: ['abs(other.time_gap_s) > 1.0']\n"
                     "medium_task: {other: {time_gap_s: 1.5}}\n")
    run = [sys.executable, "-m", "intersection_meta.scenarios"]
    out = subprocess.run([*run, "sample", str(child), "-n", "40"], capture_output=True, text=True, check=True)
    assert "# acceptance 40/" in out.stdout and "require[0]" in out.stdout
    bad = subprocess.run([*run, "sample", str(child), "-n", "3", "--set", "require=['other.speed_mps > 99']"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "require[0]" in bad.stderr


# ---- inheritance ------------------------------------------------------------------------------------------


def test_extends_deep_merges_and_replaces_lists_and_sampled_values_whole(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({
        "extends": "yield_left", "name": "child",
        "other": {"speed_mps": {"choice": [6.0, 8.0]}},  # replaces the base's range whole
        "reward": {"collision_reward": -3.0},  # merges into the base's reward section
        "action": {"target_speeds_mps": [0.0, 6.0]},  # a list replaces the base's list whole
    }))
    s, base = load_scenario(child), load_scenario("yield_left")
    assert s.name == "child"
    assert s.spec["other"]["speed_mps"].options == (6.0, 8.0)
    assert s.spec["other"]["time_gap_s"] == base.spec["other"]["time_gap_s"]
    assert s.spec["reward"]["collision_reward"] == -3.0
    # the other reward keys come from yield_left's own base, two levels up
    assert s.spec["reward"]["high_speed_reward"] == base.spec["reward"]["high_speed_reward"] == 1.0
    assert s.spec["reward"]["arrived_reward"] == 1.0
    assert s.spec["action"]["target_speeds_mps"] == [0.0, 6.0]


def test_extends_by_relative_path_and_chains(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("extends: yield_left\nother: {time_gap_s: [0.5, 1.5]}\n")
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\nname: c\n")
    s = load_scenario(tmp_path / "sub" / "child.yaml")
    assert all(0.5 <= t.time_gap_s <= 1.5 for t in s.sample_tasks(20))


def test_unknown_key_in_a_child_names_the_child_file_and_key_path(tmp_path: Path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: yield_left\nname: c\nreward: {colision_reward: -3}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(child)
    assert str(info.value).startswith(f"{child}: reward.colision_reward: unknown key (did you mean 'collision_reward'")


def test_bad_value_in_a_base_names_the_base_file(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("extends: yield_left\nepisode: {duration_s: -1}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: c\nother: {speed_mps: 7.0}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(child)
    assert str(info.value).startswith(f"{tmp_path / 'base.yaml'} (extended by {child}): episode.duration_s: got -1")
    child.write_text("extends: base.yaml\nname: c\nother: {speed_mps: -7.0}\n")
    with pytest.raises(ScenarioError, match=rf"^{child}: other.speed_mps: got -7.0"):
        load_scenario(child)


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"a.yaml": "extends: b.yaml\nname: a\n", "b.yaml": "extends: ./a.yaml\n"},
         r"b\.yaml: extends: cycle of extends: a\.yaml -> b\.yaml -> a\.yaml"),
        ({"a.yaml": "extends: a.yaml\n"}, r"a\.yaml: extends: cycle of extends: a\.yaml -> a\.yaml"),
        ({"a.yaml": "extends: yeild_left\nname: a\n"},
         r"a\.yaml: extends: 'yeild_left': no such scenario file .*did you mean 'yield_left'"),
        ({"a.yaml": "extends: [yield_left]\nname: a\n"}, r"a\.yaml: extends: got \['yield_left'\]"),
    ],
    ids=["cycle", "self", "missing", "not-a-name"],
)
def test_extends_cycles_and_missing_bases_are_errors(tmp_path: Path, files: dict, pattern: str):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(tmp_path / "a.yaml")


def test_set_overrides_apply_after_the_merge():
    s = load_scenario("yield_left", ["reward.collision_reward=-4", "other.speed_mps=7"])
    assert s.spec["reward"]["collision_reward"] == -4.0 and s.spec["reward"]["arrived_reward"] == 1.0
    with pytest.raises(ScenarioError, match=r"\(with --set episode.duration_s=0\): episode.duration_s: got 0"):
        load_scenario("yield_left", ["episode.duration_s=0"])


def test_base_file_is_commented_not_listed_and_not_a_scenario():
    from intersection_meta.scenario import available_scenarios

    path = SCENARIO_DIR / "_base_intersection.yaml"
    assert "_base_intersection" not in available_scenarios()
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() and not line.strip().startswith("#") and ":" in line:
            assert lines[i - 1].strip().startswith("#"), f"{path.name}:{i + 1} has no comment above"
    with pytest.raises(ScenarioError, match="name: missing required key"):
        load_scenario(path)
    intersection = [n for n in available_scenarios() if load_scenario(n).kind == "intersection"]
    for name in intersection:  # the repeated blocks are gone from every shipped intersection scenario
        raw = yaml.safe_load((SCENARIO_DIR / f"{name}.yaml").read_text())
        assert raw["extends"] == "_base_intersection"
        assert not {"episode", "action", "observation"} & set(raw)


# ---- normal distributions -----------------------------------------------------------------------------------


def test_normal_distribution_is_clipped_and_has_the_right_moments():
    s = _scenario(other__time_gap_s={"normal": [0.5, 0.8], "clip": [-1.0, 2.0]})
    p = s.spec["other"]["time_gap_s"]
    assert p == Normal(0.5, 0.8, -1.0, 2.0) and s.medium_task().time_gap_s == 0.5
    gaps = np.array([t.time_gap_s for t in s.sample_tasks(2000, seed=0)])
    assert gaps.min() >= -1.0 and gaps.max() <= 2.0
    inside = gaps[(gaps > -0.3) & (gaps < 1.3)]  # +-1 std: 68.3% of a normal, untouched by the clip
    assert len(inside) / len(gaps) == pytest.approx(0.683, abs=0.03)
    again = Scenario.from_dict(yaml.safe_load(s.to_yaml()), source="again")
    assert again.spec == s.spec


def test_readme_example_loads_with_the_closed_form_acceptance_rate():
    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "yield_left_close_gaps.yaml"
    s = load_scenario(path)
    assert s.name == "yield_left_close_gaps" and s.spec["reward"]["collision_reward"] == -50.0  # the shared base
    # gap ~ U(-6, 6) and |gap| < 1: 1/6; the lane constraint never binds here (12 * (45 / 8 + 1) < 100 m)
    assert s.acceptance(n_draws=6000, seed=0).acceptance_rate == pytest.approx(1 / 6, abs=0.02)
    for t in s.sample_tasks(40, seed=2):
        assert abs(t.time_gap_s) < 1.0 and 4.0 <= t.other_speed_mps <= 12.0
