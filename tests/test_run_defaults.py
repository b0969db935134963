"""Scenario ``run_defaults:``: validated against the run config, layered under --config / flags / --set by the
train command, the bench command and the scenario matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from intersection_meta.config import RunConfig, make_config, scenario_defaults
from intersection_meta.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]


def _scenario_file(tmp_path: Path, run_defaults: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"version: 1\nname: mine\nkind: intersection\nextends: {ROOT / 'scenarios' / '_base_intersection.yaml'}\n"
        + run_defaults
    )
    return path


def test_the_intersection_family_inherits_the_base_files_run_defaults():
    for name in ("yield_left", "cross_straight", "yield_or_not", "assertive_driver"):
        config = scenario_defaults(load_scenario(name))
        hidden = name in ("yield_or_not", "assertive_driver")  # they add the latent policy, keep the rest
        assert config.policy.warm_start == ("rule_or_go" if hidden else "gap_acceptance")
        assert config.policy.latent_dim == (2 if hidden else 0)
        assert config.pg.normalize_advantages is False
        assert (config.meta.inner_lr, config.meta.directed_lr) == (0.005, 0.005)
        assert config.train == RunConfig().train  # nothing else changes
    assert scenario_defaults(load_scenario("cartpole_physics")) == RunConfig()


def test_a_scenario_overrides_one_key_of_the_base_and_keeps_the_others(tmp_path: Path):
    sc = load_scenario(_scenario_file(tmp_path, "run_defaults:\n  meta: {inner_lr: 0.02}\n"))
    config = scenario_defaults(sc)
    assert config.meta.inner_lr == 0.02 and config.meta.directed_lr == 0.005
    assert config.policy.warm_start == "gap_acceptance"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("run_defaults:\n  meta: {inner_lr: -1}\n", "run_defaults.meta.inner_lr"),
        ("run_defaults:\n  pg: {gae_lamda: 0.9}\n", "run_defaults.pg.gae_lamda"),
        ("run_defaults:\n  train: {scenario: cross_straight}\n", "cannot choose the scenario"),
        ("run_defaults: [1, 2]\n", "expected run-config sections"),
    ],
)
def test_bad_run_defaults_name_the_file_and_the_key(tmp_path: Path, text: str, fragment: str):
    with pytest.raises(ScenarioError) as err:
        load_scenario(_scenario_file(tmp_path, text))
    assert fragment in str(err.value) and "mine.yaml" in str(err.value)


def test_the_scenario_round_trips_with_its_run_defaults():
    from intersection_meta.scenario import Scenario

    sc = load_scenario("yield_left")
    again = Scenario.from_dict(sc.to_dict())
    assert again.run_defaults == sc.run_defaults and again.to_dict() == sc.to_dict()


def test_train_command_layers_set_over_the_scenario_defaults(tmp_path: Path):
    """A tiny real run: the scenario's defaults reach the stored run config, and --set still wins over them."""
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "intersection_meta.train", "--scenario", "cross_straight", "--quiet",
         "--no-tensorboard", "--iterations", "1", "--set", "meta_batch_size=2", "--set", "episodes_per_task=2",
         "--set", "directed_episodes=2", "--set", "eval_tasks=0", "--set", "meta.inner_lr=0.03",
         "--set", "policy.warm_start=none", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    stored = yaml.safe_load((out / "config.yaml").read_text())["run"]
    assert stored["meta"]["inner_lr"] == 0.03 and stored["policy"]["warm_start"] == "none"  # --set wins
    assert stored["meta"]["directed_lr"] == 0.005 and stored["pg"]["normalize_advantages"] is False  # scenario's
    assert make_config(stored).meta.directed_lr == 0.005
