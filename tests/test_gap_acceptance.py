"""The closed-loop gap-acceptance rule (decisions against hand-worked cases, its result against the open-loop
references) and the warm start that imitates it."""

from __future__ import annotations

import numpy as np
import pytest

from intersection_meta.config import make_config
from intersection_meta.gap_acceptance import (
    CLEAR_DISTANCE_M,
    MARGIN_S,
    gap_acceptance_actions,
    imitation_data,
    run_gap_acceptance,
)
from intersection_meta.scenario import load_scenario
from intersection_meta.scripted import FASTER, SLOWER, references_for_tasks
from intersection_meta.trainer import Trainer, TrainError


@pytest.fixture(scope="module")
def settings():
    return load_scenario("cross_straight").medium_task().settings


def _obs(settings, ego_m: float, other_m: float, other_s: float) -> np.ndarray:
    """One observation row: every feature 0 except both cars' conflict features, given in metres and seconds."""
    features = list(settings.observation_features)
    n = len(features)
    row = np.zeros(2 * n, dtype=np.float32)
    cd, ct = features.index("conflict_distance"), features.index("conflict_time")
    row[cd], row[ct] = np.clip(ego_m / 100, -1, 1), 0.5
    row[n + cd], row[n + ct] = np.clip(other_m / 100, -1, 1), min(other_s, 10.0) / 10
    return row[None, :]


def test_rule_decisions_follow_the_worked_cases(settings):
    top = max(settings.target_speeds_mps)  # 9 m/s
    # The ego needs (20 + 10) / 9 = 3.33 s to be through; + 0.5 s margin = 3.83 s.
    through_s = (20 + CLEAR_DISTANCE_M) / top + MARGIN_S
    assert gap_acceptance_actions(_obs(settings, 20, 40, through_s + 0.1), settings)[0] == FASTER
    assert gap_acceptance_actions(_obs(settings, 20, 40, through_s - 0.1), settings)[0] == SLOWER
    # The other car inside the area, or just past its entry: wait; more than CLEAR_DISTANCE_M past it: go.
    assert gap_acceptance_actions(_obs(settings, 20, -1, 0), settings)[0] == SLOWER
    assert gap_acceptance_actions(_obs(settings, 20, -CLEAR_DISTANCE_M + 1, 0), settings)[0] == SLOWER
    assert gap_acceptance_actions(_obs(settings, 20, -CLEAR_DISTANCE_M - 1, 10), settings)[0] == FASTER
    # A stopped other car (time at its cap) before the area is not coming; a car that has left the road (-1, 1),
    # no conflict area (1, 1), and an ego already in the area: go.
    assert gap_acceptance_actions(_obs(settings, 20, 5, 10), settings)[0] == FASTER
    assert gap_acceptance_actions(_obs(settings, 20, -100, 10), settings)[0] == FASTER
    assert gap_acceptance_actions(_obs(settings, 20, 100, 10), settings)[0] == FASTER
    assert gap_acceptance_actions(_obs(settings, -2, 5, 0.3), settings)[0] == FASTER


def test_rule_needs_the_conflict_features(settings):
    import dataclasses

    kinematic = dataclasses.replace(settings, observation_features=("presence", "x", "y", "vx", "vy"))
    with pytest.raises(ValueError, match="conflict_distance and conflict_time"):
        gap_acceptance_actions(np.zeros((1, 10)), kinematic)


def test_rule_beats_the_best_fixed_plan_without_collisions():
    """On cross_straight the rule reads the gap: no collision, and more than the best open-loop plan (which
    cannot know the task) - an independent check that the observation carries what a good policy needs."""
    tasks = load_scenario("cross_straight").sample_tasks(60, seed=3)
    rule = run_gap_acceptance(tasks)
    refs = references_for_tasks(tasks)
    assert rule.collision_rate == 0.0
    assert rule.return_mean > refs.best_fixed.return_mean + 0.2
    assert rule.return_mean <= refs.per_task_best_return + 1e-9 or rule.arrival_rate == 1.0


def test_warm_start_imitates_the_rule_on_fresh_states():
    """After the warm start the policy's most likely action is the rule's on >= 95% of states from rollouts on
    tasks it was not fitted on; without the warm start the fresh policy agrees far less often."""
    import torch

    config = make_config({"train.scenario": "cross_straight", "policy.warm_start": "gap_acceptance"})
    trainer = Trainer(config)
    assert trainer.warm_start_accuracy is not None and trainer.warm_start_accuracy > 0.95
    obs, actions = imitation_data(trainer.scenario, seed=12345, n_tasks=100)
    with torch.no_grad():
        agree = (trainer.policy.distribution(obs).probs.argmax(-1) == actions).float().mean().item()
        fresh = Trainer(make_config({"train.scenario": "cross_straight"}))
        agree_fresh = (fresh.policy.distribution(obs).probs.argmax(-1) == actions).float().mean().item()
    assert agree > 0.95
    assert agree_fresh < 0.8


def test_warm_start_rejects_scenarios_the_rule_cannot_drive():
    with pytest.raises(TrainError, match=r"policy\.warm_start=gap_acceptance on scenario 'cartpole_physics'"):
        Trainer(make_config({"train.scenario": "cartpole_physics", "policy.warm_start": "gap_acceptance"}))
    kinematic = load_scenario("cross_straight", overrides=[("observation.features", ["presence", "x", "y"])])
    with pytest.raises(TrainError, match="conflict_distance and conflict_time"):
        Trainer(
            make_config({"train.scenario": "cross_straight", "policy.warm_start": "gap_acceptance"}),
            scenario=kinematic,
        )


def test_evaluation_reports_the_rule():
    from intersection_meta.evaluate import format_scripted, scripted_section

    tasks = load_scenario("cross_straight").sample_tasks(10, seed=1)
    section = scripted_section(tasks)
    assert section["gap_acceptance"] == pytest.approx(run_gap_acceptance(tasks).return_mean)
    report = {"scripted": section, "steps": [{"adapt_step": 1, "return_mean": 0.0}]}
    assert any("gap-acceptance rule" in line for line in format_scripted(report))


def test_a_warm_started_run_resumes_to_the_same_metrics(tmp_path):
    """The warm start runs again when a run is resumed (like the input statistics) and the checkpoint then
    replaces its weights: a run cut after 1 of 2 iterations and resumed logs what an uninterrupted one does."""
    from intersection_meta.trainer import read_metrics, train
    from tests.test_runlog import comparable

    config = make_config(
        {
            "train.scenario": "cross_straight",
            "policy.warm_start": "gap_acceptance",
            "pg.normalize_advantages": False,
            "train.iterations": 2,
            "train.meta_batch_size": 2,
            "train.episodes_per_task": 2,
            "train.directed_episodes": 2,
            "train.eval_tasks": 0,
        }
    )
    full, cut = tmp_path / "full", tmp_path / "cut"
    train(config, full, progress=False, tensorboard=False)
    train(config, cut, progress=False, tensorboard=False, stop_after=1)
    train(config, cut, resume=True, progress=False, tensorboard=False)
    assert comparable(read_metrics(cut / "metrics.csv")) == comparable(read_metrics(full / "metrics.csv"))
