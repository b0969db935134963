"""Fuzzing the scenario and run-config loaders (issue 12): random YAML documents, random bytes and random
``--set`` strings must end in a value or in the loader's one-line error, never in another exception.

Deterministic and quick: ``derandomize=True`` (the examples are a fixed function of the test), a fixed budget,
no example database on disk, and the known hostile inputs pinned with ``@example``.
"""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from intersection_meta.config import ConfigError, load_config_file, make_config, split_overrides
from intersection_meta.scenario import Scenario, ScenarioError, load_scenario, scenario_path

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "120")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("bcdefg", "cdefgh", strict=True)
)
SCENARIO_KEYS = ["version", "name", "kind", "description", "target_return", "physics", "episode", "ego", "other",
                 "action", "reward", "medium_task", "choice", "speed_mps", "max_steps", "gravity_mps2"]
CONFIG_KEYS = ["train", "meta", "pg", "policy", "env", "seed", "iterations", "meta_lr", "hidden_sizes", "algo",
               "inner_lr", "gae_lambda", "backend", "meta_batch_size", "directed_lr_decay"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["intersection", "cartpole", "lunarlander", "maml", "auto", "midpoint", "1e-3", "[1, 2]"]),
)


def documents(keys: list[str]) -> st.SearchStrategy:
    leaves = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(keys) | st.text(max_size=8),
                                                                    inner, max_size=4),
        max_leaves=20,
    )
    return st.dictionaries(st.sampled_from(keys), leaves, max_size=6)


def _write(text: str | bytes) -> Path:
    handle = tempfile.NamedTemporaryFile("wb", suffix=".yaml", delete=False)
    with handle:
        handle.write(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return Path(handle.name)


def load_scenario_or_error(content: str | bytes) -> None:
    path = _write(content)
    try:
        load_scenario(path)
    except ScenarioError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 3000
    finally:
        path.unlink()


def load_config_or_error(content: str | bytes) -> None:
    path = _write(content)
    try:
        make_config(load_config_file(path), source=str(path))
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 3000
    finally:
        path.unlink()


@FUZZ
@given(documents(SCENARIO_KEYS))
def test_random_scenario_documents_load_or_fail_in_one_line(doc):
    load_scenario_or_error(yaml.safe_dump(doc))


@FUZZ
@given(st.sampled_from(["cartpole_physics", "yield_left", "lunarlander_gravity_wind"]), st.data())
def test_mutated_shipped_scenarios_load_or_fail_in_one_line(name, data):
    spec = Scenario.to_dict(load_scenario(name))
    section = data.draw(st.sampled_from(sorted(spec)))
    if isinstance(spec[section], dict) and spec[section]:
        key = data.draw(st.sampled_from(sorted(spec[section])))
        spec[section][key] = data.draw(documents(SCENARIO_KEYS) | scalars | st.lists(scalars, max_size=3))
    else:
        spec[section] = data.draw(documents(SCENARIO_KEYS) | scalars)
    load_scenario_or_error(yaml.safe_dump(spec))


@FUZZ
@given(st.binary(max_size=200) | st.text(alphabet=string.printable + "&*!|>{}[]:-", max_size=200))
@example(BOMB)
@example("name: " + "[" * 300 + "]" * 300)
@example(b"name: caf\xe9\n")
@example("version: " + "9" * 5000)
@example("!!python/object/apply:os.system ['true']")
@example("a: !!binary aGVsbG8=\nb: 2001-12-14\nc: .nan\nd: .inf\n")
def test_random_bytes_as_scenario_or_config_fail_in_one_line(content):
    load_scenario_or_error(content)
    load_config_or_error(content)


@FUZZ
@given(documents(CONFIG_KEYS))
def test_random_run_config_documents_load_or_fail_in_one_line(doc):
    load_config_or_error(yaml.safe_dump(doc))


set_items = st.builds(
    lambda key, sep, value: f"{key}{sep}{value}",
    st.sampled_from(CONFIG_KEYS + ["train.seed", "pg.gamma", "other.speed_mps", "episode.max_steps", "x.y.z", ""])
    | st.text(max_size=12),
    st.sampled_from(["=", "", "=="]),
    st.sampled_from(["1e-3", "1e30", "-1", "0", "[64, 64]", "{choice: [1, 2]}", ".nan", "true", "maml", "&a [*a]"])
    | st.text(max_size=30),
)


@FUZZ
@given(st.lists(set_items, max_size=4))
@example(["inner_lr=1e-3", "meta_lr=1e30", "meta_batch_size=1e1"])
@example(["directed_lr_decay=0", "seed=-1"])
@example(["hidden_sizes=[100000000]"])
@example(["other.speed_mps=" + "[" * 100 + "]" * 100])
def test_random_set_strings_load_or_fail_in_one_line(items):
    try:
        run_sets, scenario_sets = split_overrides(items)
        make_config(run_sets, source="--set")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    try:
        load_scenario(scenario_path("yield_left"), scenario_sets)
    except ScenarioError as exc:
        assert "\n" not in str(exc)
