"""Scenario files: every shipped file validates; malformed files fail with the right key path; sampling."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from intersection_meta.scenario import (
    SCENARIO_DIR,
    Choice,
    Range,
    Scenario,
    ScenarioError,
    available_scenarios,
    load_scenario,
    read_scenario_file,
)
from intersection_meta.tasks import IntersectionTask, task_from_dict, task_to_dict

SHIPPED = [SCENARIO_DIR / f"{name}.yaml" for name in available_scenarios()]
#: yield_left with its base file merged in: a complete scenario mapping to mutate.
BASE = read_scenario_file(SCENARIO_DIR / "yield_left.yaml")[0]


def test_library_has_required_scenarios():
    names = set(available_scenarios())
    assert len(names) >= 8
    assert {"yield_left", "cross_straight", "merge_right", "left_nonreactive", "mixed_intent"} <= names
    kinds = {load_scenario(n).kind for n in names}
    assert kinds == {"intersection", "cartpole", "lunarlander"}
    # mixed-intent: the other vehicle's intent itself is sampled
    assert isinstance(load_scenario("mixed_intent").spec["other"]["intent"], Choice)
    # unprotected left against a non-reactive driver
    left = load_scenario("left_nonreactive").spec
    assert left["ego"]["intent"].value == "left" and left["other"]["driver"].value == "constant_speed"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_validates_and_is_commented(path: Path):
    s = load_scenario(path)
    assert s.name == path.stem
    lines = path.read_text().splitlines()
    # every key line is preceded by a comment line (the house style for scenario files)
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert lines[i - 1].strip().startswith("#"), f"{path.name}:{i + 1} has no comment above: {line!r}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_round_trip_through_yaml(path: Path):
    s = load_scenario(path)
    again = Scenario.from_dict(yaml.safe_load(s.to_yaml()), source="roundtrip")
    assert again.spec == s.spec and again.medium_values == s.medium_values
    assert again.sample_tasks(4, seed=3) == s.sample_tasks(4, seed=3)


def _mutate(path: str, value):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()
MALFORMED = [
    # (id, data, key path in the error, fragment of the message)
    ("unknown-top-key", {**BASE, "rewrd": {}}, "rewrd", "did you mean 'reward'"),
    ("unknown-nested-key", _mutate("other.sped_mps", 3.0), "other.sped_mps", "did you mean 'speed_mps'"),
    ("wrong-type", _mutate("ego.speed_mps", "fast"), "ego.speed_mps", "expected a number"),
    ("bool-is-not-number", _mutate("ego.speed_mps", True), "ego.speed_mps", "expected a number"),
    ("negative-speed", _mutate("other.speed_mps", [-1.0, 5.0]), "other.speed_mps[0]", "out of range"),
    ("zero-speed", _mutate("ego.speed_mps", 0.0), "ego.speed_mps", "out of range"),
    ("empty-range", _mutate("other.speed_mps", [7.0, 7.0]), "other.speed_mps", "empty range"),
    ("reversed-range", _mutate("other.time_gap_s", [2.0, -2.0]), "other.time_gap_s", "low < high"),
    ("three-element-range", _mutate("other.speed_mps", [1.0, 2.0, 3.0]), "other.speed_mps", "two numbers"),
    ("nan", _mutate("other.speed_mps", float("nan")), "other.speed_mps", "not finite"),
    ("inf", _mutate("ego.distance_to_stop_m", float("inf")), "ego.distance_to_stop_m", "not finite"),
    ("bad-enum", _mutate("ego.intent", "leftt"), "ego.intent", "did you mean 'left'"),
    ("bad-driver", _mutate("other.driver", "human"), "other.driver", "idm, constant_speed"),
    ("empty-choice", _mutate("other.intent", {"choice": []}), "other.intent.choice", "non-empty list"),
    (
        "bad-choice-option",
        _mutate("other.intent", {"choice": ["left", "up"]}),
        "other.intent.choice[1]",
        "up",
    ),
    ("choice-typo", _mutate("other.intent", {"choise": ["left"]}), "other.intent", "choice"),
    ("same-approach", _mutate("other.entry", "south"), "other.entry", "one approach"),
    (
        "same-approach-in-choice",
        _mutate("other.entry", {"choice": ["north", "south"]}),
        "other.entry",
        "one approach",
    ),
    ("medium-outside-lane", _mutate("other.time_gap_s", [-9.0, -8.0]), "medium_task", "inside its approach lane"),
    ("require-not-list", {**BASE, "require": "x > 1"}, "require", "list of constraint strings"),
    ("require-bad-key", {**BASE, "require": ["other.sped_mps > 1"]}, "require[0]", "did you mean 'other.speed_mps'"),
    ("require-syntax", {**BASE, "require": ["other.speed_mps >"]}, "require[0]", "column"),
    ("normal-no-clip", _mutate("other.speed_mps", {"normal": [7.0, 1.0]}), "other.speed_mps", "clip"),
    ("normal-bad-std", _mutate("other.speed_mps", {"normal": [7.0, 0.0], "clip": [5, 9]}), "other.speed_mps.normal",
     "std > 0"),
    ("normal-clip-range", _mutate("other.speed_mps", {"normal": [7.0, 1.0], "clip": [-1, 9]}),
     "other.speed_mps.clip[0]", "out of range"),
    (
        "distance-beyond-lane",
        _mutate("ego.distance_to_stop_m", 150.0),
        "ego.distance_to_stop_m",
        "out of range",
    ),
    ("missing-kind", {k: v for k, v in BASE.items() if k != "kind"}, "kind", "missing"),
    ("bad-kind", {**BASE, "kind": "intersectoin"}, "kind", "did you mean 'intersection'"),
    ("missing-version", {k: v for k, v in BASE.items() if k != "version"}, "version", "missing"),
    ("future-version", {**BASE, "version": 99}, "version", "out of range"),
    ("section-not-mapping", {**BASE, "ego": [1, 2]}, "ego", "expected a mapping"),
    ("int-expected", _mutate("episode.policy_frequency_hz", 1.5), "episode.policy_frequency_hz", "integer"),
    ("features-unknown", _mutate("observation.features", ["x", "z"]), "observation.features[1]", "one of"),
    ("features-duplicate", _mutate("observation.features", ["x", "x"]), "observation.features", "distinct"),
    (
        "speeds-not-increasing",
        _mutate("action.target_speeds_mps", [0, 9, 4.5]),
        "action.target_speeds_mps",
        "increasing",
    ),
    (
        "speed-range-pair",
        _mutate("reward.reward_speed_range_mps", [9, 7]),
        "reward.reward_speed_range_mps",
        "low < high",
    ),
    (
        "medium-unknown-key",
        {**BASE, "medium_task": {"other": {"sped_mps": 3}}},
        "medium_task.other.sped_mps",
        "did you mean 'speed_mps'",
    ),
    (
        "medium-bad-value",
        {**BASE, "medium_task": {"other": {"speed_mps": -3}}},
        "medium_task.other.speed_mps",
        "out of range",
    ),
    ("medium-not-mapping", {**BASE, "medium_task": "middle"}, "medium_task", "midpoint"),
    (
        "cartpole-negative-mass",
        {"version": 1, "name": "c", "kind": "cartpole", "physics": {"pole_mass_kg": [-0.1, 0.2]}},
        "physics.pole_mass_kg[0]",
        "out of range",
    ),
    (
        "lunar-gravity-range",
        {"version": 1, "name": "l", "kind": "lunarlander", "physics": {"gravity_mps2": [-13.0, -5.0]}},
        "physics.gravity_mps2[0]",
        "out of range",
    ),
    (
        "lunar-intersection-key",
        {"version": 1, "name": "l", "kind": "lunarlander", "ego": {}},
        "ego",
        "unknown key",
    ),
]


@pytest.mark.parametrize(
    ("data", "key", "fragment"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_scenario_is_rejected_with_key_path(tmp_path: Path, data, key, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    err = info.value
    assert err.key == key, str(err)
    assert fragment in str(err)
    assert str(path) in str(err)
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("ego: [1, 2\n", "YAML syntax error at line"),
        ("- a\n- b\n", "expected a mapping"),
        ("version: 1\nname: x\nkind: intersection\nego:\n  speed_mps: 8\n  speed_mps: 9\n", "speed_mps"),
    ],
)
def test_unparseable_or_empty_files(tmp_path: Path, text: str, fragment: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    if "speed_mps: 9" in text:
        # PyYAML keeps the last duplicate; it is not an error, and the resulting value is validated
        assert load_scenario(path).spec["ego"]["speed_mps"].value == 9.0
        return
    with pytest.raises(ScenarioError, match=fragment):
        load_scenario(path)


def test_unknown_scenario_name_suggests():
    with pytest.raises(ScenarioError, match="did you mean 'yield_left'"):
        load_scenario("yeild_left")


def test_cli_errors_are_one_line_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_mutate("other.sped_mps", 3.0)))
    r = subprocess.run(
        [sys.executable, "-m", "intersection_meta.scenarios", "validate", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "other.sped_mps" in r.stderr and str(bad) in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "intersection_meta.scenarios",
            "sample",
            "yield_left",
            "--set",
            "other.speed_mps=[-1,3]",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "other.speed_mps[0]" in r.stderr and "Traceback" not in r.stderr


def test_cli_sample_is_reproducible():
    cmd = [
        sys.executable,
        "-m",
        "intersection_meta.scenarios",
        "sample",
        "yield_left",
        "-n",
        "4",
        "--seed",
        "7",
    ]
    a = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    b = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert a == b and a.count("[") >= 4
    c = subprocess.run([*cmd[:-1], "8"], capture_output=True, text=True, check=True).stdout
    assert c != a


def test_sampling_respects_ranges_and_is_prefix_stable():
    s = load_scenario("yield_left")
    tasks = s.sample_tasks(200, seed=5)
    assert s.sample_tasks(10, seed=5) == tasks[:10]
    speeds = [t.other_speed_mps for t in tasks]
    gaps = [t.time_gap_s for t in tasks]
    assert 5.0 <= min(speeds) < 5.5 and 9.5 < max(speeds) <= 10.0
    assert -2.5 <= min(gaps) < -2.0 and 2.0 < max(gaps) <= 2.5
    assert all(0.0 <= t.other_distance_to_stop_m <= 100.0 for t in tasks)
    # go-first and yield situations both occur
    assert any(g > 1 for g in gaps) and any(g < -1 for g in gaps)
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_choice_sampling_covers_options():
    s = load_scenario("random_crossing")
    tasks = s.sample_tasks(100, seed=0)
    assert {t.other_entry for t in tasks} == {"west", "north", "east"}
    assert {t.other_intent for t in tasks} == {"straight", "left", "right"}
    assert {t.other_driver for t in tasks} == {"idm", "constant_speed"}
    assert all(t.ego_entry != t.other_entry for t in tasks)


def test_medium_task_midpoint_and_explicit():
    s = load_scenario("yield_left")
    m = s.medium_task()
    assert isinstance(s.spec["other"]["speed_mps"], Range)
    assert m.other_speed_mps == pytest.approx(7.5) and m.time_gap_s == pytest.approx(0.0)
    assert m.ego_distance_to_stop_m == pytest.approx(40.0)
    r = load_scenario("random_crossing").medium_task()
    assert (r.other_entry, r.other_intent, r.other_driver, r.ego_intent) == (
        "north",
        "straight",
        "idm",
        "left",
    )


def test_overrides_apply_and_fix_a_task():
    s = load_scenario(
        "yield_left", ["other.speed_mps=8", "other.time_gap_s=0.5", "ego.distance_to_stop_m=40"]
    )
    a, b = s.sample_tasks(2, seed=0)
    assert a == b
    assert (a.other_speed_mps, a.time_gap_s) == (8.0, 0.5)
    assert a.other_distance_to_stop_m == pytest.approx(8.0 * (40.0 / 8.0 + 0.5))
    with pytest.raises(ScenarioError, match="is a section"):
        load_scenario("yield_left", ["other=3"])
    with pytest.raises(ScenarioError, match=r"expected KEY=VALUE"):
        load_scenario("yield_left", ["other.speed_mps"])


def test_task_ids_stable_and_task_dict_round_trip():
    t = load_scenario("yield_left").medium_task()
    assert isinstance(t, IntersectionTask)
    assert t.task_id == IntersectionTask(**{**t.__dict__}).task_id
    assert len(t.task_id) == 8 and t.task_id in t.describe()
    for name in available_scenarios():
        for task in load_scenario(name).sample_tasks(3, seed=1):
            assert task_from_dict(task_to_dict(task)) == task
