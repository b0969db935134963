"""Issue 9's run-config options: fitted input standardisation in the policy state, the linear meta-lr schedule,
and the scripted references of every intersection evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intersection_meta.checkpoint import load_checkpoint, save_checkpoint
from intersection_meta.config import ConfigError, TrainConfig, make_config
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import Trainer, meta_lr_at, read_metrics
from tests.test_trainer import TINY, run, tiny_scenario


def test_fitted_input_norm_is_fitted_at_start_and_travels_with_the_checkpoint(tmp_path: Path) -> None:
    result = run(tmp_path, "norm", input_norm="fitted")
    ckpt = load_checkpoint(result.checkpoint)
    norm = ckpt.policy.input_norm
    assert norm is not None
    # CartPole's observations are centred near 0 with small spreads: the fitted statistics are not the identity
    assert not torch.equal(norm.std, torch.ones_like(norm.std))
    trainer = Trainer(make_config({**TINY, "input_norm": "fitted"}), tiny_scenario())
    obs = torch.randn(6, 4)
    fresh_std = trainer.policy.input_norm.std
    torch.testing.assert_close(norm.std, fresh_std)  # training never changes the statistics
    # the stored policy applies them: same logits as its MLP on the standardised observations
    expected = ckpt.policy.logits_net((obs - norm.mean) / norm.std)
    torch.testing.assert_close(ckpt.policy.distribution(obs).logits, torch.log_softmax(expected, -1))


def test_checkpoints_without_input_norm_load_as_none(tmp_path: Path) -> None:
    """A checkpoint whose config predates the key (no policy.input_norm) loads with no standardisation."""
    result = run(tmp_path, "old", input_norm="none")
    raw = torch.load(result.checkpoint, weights_only=True)
    del raw["config"]["policy"]["input_norm"]
    old = tmp_path / "old.pt"
    save_checkpoint(old, {k: v for k, v in raw.items() if k != "format_version"})
    ckpt = load_checkpoint(old)
    assert ckpt.config.policy.input_norm == "none" and ckpt.policy.input_norm is None
    assert not any(k.startswith("input_norm.") for k in ckpt.policy.state_dict())


def test_linear_meta_lr_schedule_anneals_adam_to_zero(tmp_path: Path) -> None:
    result = run(tmp_path, "lin", meta_lr=0.004, meta_lr_schedule="linear", iterations=4)
    rows = read_metrics(result.out_dir / "metrics.csv")
    assert [r["meta_lr"] for r in rows] == pytest.approx([0.004, 0.003, 0.002, 0.001])
    const = read_metrics(run(tmp_path, "const", meta_lr=0.004, meta_lr_schedule="constant").out_dir / "metrics.csv")
    assert [r["meta_lr"] for r in const] == pytest.approx([0.004, 0.004])
    assert meta_lr_at(TrainConfig(meta_lr=1.0, meta_lr_schedule="linear", iterations=10), 10) == 0.0


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("train.outer_optimizer", "sgd", "train.outer_optimizer"),
        ("train.meta_lr_schedule", "cosine", "train.meta_lr_schedule"),
        ("policy.input_norm", "batch", "policy.input_norm"),
        ("train.trpo_max_kl", 0.0, "train.trpo_max_kl"),
    ],
)
def test_bad_option_values_name_the_key(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_config({key: value}, source="run.yaml")


def test_scripted_plan_returns_equal_a_constant_policy_rollout() -> None:
    """run_plan's bookkeeping against rollout.collect_episodes (an independent masking path) with a policy that
    always picks FASTER, on the same tasks."""
    from intersection_meta.envs.factory import make_vector_env
    from intersection_meta.rollout import collect_episodes
    from intersection_meta.scripted import FASTER, references_for_tasks

    tasks = load_scenario("cross_straight").sample_tasks(12, seed=3)

    class AlwaysGo:
        def distribution(self, obs: torch.Tensor, params: object = None) -> torch.distributions.Categorical:
            logits = torch.full((obs.shape[0], 3), -1e9)
            logits[:, FASTER] = 0.0
            return torch.distributions.Categorical(logits=logits)

    env = make_vector_env(tasks, backend="fast")
    try:
        episodes = collect_episodes(env, AlwaysGo(), None, seed=0)
    finally:
        env.close()
    refs = references_for_tasks(tasks)
    np.testing.assert_allclose(refs.always_go.returns, episodes.returns.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(refs.always_go.crashed, episodes.crashed.numpy())
    returns = np.stack([p.returns for p in refs.plans])
    assert refs.best_fixed.return_mean == pytest.approx(returns.mean(1).max())
    assert refs.per_task_best_return == pytest.approx(returns.max(0).mean())
    assert refs.per_task_best_return >= refs.best_fixed.return_mean >= refs.always_go.return_mean - 1e-9


def test_intersection_evaluation_reports_the_scripted_references_on_its_own_tasks() -> None:
    from intersection_meta.evaluate import evaluate_checkpoint, format_report
    from intersection_meta.scripted import references_for_tasks
    from intersection_meta.tasks import task_from_dict

    ckpt = load_checkpoint("yield_left")
    report = evaluate_checkpoint(ckpt, n_tasks=6, episodes_per_task=2)
    tasks = [task_from_dict(t["task"]) for t in report["per_task"]]
    expected = references_for_tasks(tasks)
    ref = report["scripted"]
    assert ref["tasks"] == 6 and ref["time_s"] >= 0
    assert ref["best_fixed"] == pytest.approx(expected.best_fixed.return_mean)
    assert ref["per_task_best"] == pytest.approx(expected.per_task_best_return)
    text = format_report(report)
    assert "best fixed plan" in text and "per-task best plan" in text
    assert "scripted" not in evaluate_checkpoint(ckpt, n_tasks=2, episodes_per_task=1, scripted=False)


def test_greedy_evaluation_is_the_policys_most_likely_action() -> None:
    """With the output layer set so FASTER is the most likely action everywhere (but far from certain), the
    greedy row equals the scripted "always go" plan on the same tasks, while the sampled row does not."""
    from intersection_meta.evaluate import evaluate_checkpoint, format_report
    from intersection_meta.scripted import FASTER, references_for_tasks
    from intersection_meta.tasks import task_from_dict

    ckpt = load_checkpoint("yield_left")
    last = [m for m in ckpt.learner.policy.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        last.bias[FASTER] = 0.5  # P(FASTER) = 0.45: sampled episodes brake often, greedy ones never
    report = evaluate_checkpoint(ckpt, n_tasks=6, episodes_per_task=3, adapt_steps=0)
    tasks = [task_from_dict(t["task"]) for t in report["per_task"]]
    always_go = references_for_tasks(tasks).always_go
    greedy = report["greedy"]
    assert greedy["adapt_step"] == 0
    assert greedy["return_mean"] == pytest.approx(float(np.mean(always_go.returns)), abs=1e-4)
    assert greedy["collision_rate"] == pytest.approx(float(np.mean(always_go.crashed)))
    assert report["steps"][0]["return_mean"] != pytest.approx(greedy["return_mean"], abs=1e-3)
    assert "0g" in format_report(report) and "acting greedily" in format_report(report)
    assert "greedy" not in evaluate_checkpoint(ckpt, n_tasks=2, episodes_per_task=1, greedy=False)


def test_report_names_the_share_of_episodes_that_ran_out_of_time():
    from intersection_meta.evaluate import format_report, timeout_rate

    def row(step: int, success: float, collision: float) -> dict:
        return {"adapt_step": step, "return_mean": 1.0, "return_ci": [0.5, 1.5], "success_rate": success,
                "success_ci": [0.0, 1.0], "collision_rate": collision, "collision_ci": [0.0, 1.0]}

    report = {"algo": "maml", "scenario": "s", "iteration": 1, "tasks": 2, "episodes_per_task": 4,
              "simulator": "fast", "steps": [row(0, 0.5, 0.5), row(1, 0.875, 0.0)], "greedy": row(1, 0.75, 0.125)}
    assert timeout_rate(report["steps"][0]) == 0.0 and timeout_rate(report["steps"][1]) == pytest.approx(0.125)
    text = format_report(report)
    assert "  1: 12.5% of episodes neither arrived nor collided (ran out of time)" in text
    assert "  1g: 12.5% of episodes neither arrived nor collided (ran out of time)" in text
    assert "  0: " not in text  # only the last step and the greedy row are explained
