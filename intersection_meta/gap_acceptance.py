"""A closed-loop gap-acceptance rule on the conflict features, and a warm start that imitates it.

The rule reads only the policy's own observation (the ``conflict_distance`` and ``conflict_time`` features of both
cars, README "Scenarios") and decides at every decision between SLOWER and FASTER:

* go if the ego is already in or past the conflict area, if the other car has no conflict area with it, has left
  the road or is more than :data:`CLEAR_DISTANCE_M` past the entry of the area;
* go first if the other car has not reached the area and the ego, at its top speed, would enter the area and
  drive :data:`CLEAR_DISTANCE_M` into it at least :data:`MARGIN_S` before the other car enters it at its present
  speed (a stopped other car, ``conflict_time`` at its cap, counts as not coming);
* otherwise brake (and, once stopped, wait).

Its two constants are the same for every scenario. They were chosen once (``python
benchmarks/gap_acceptance_grid.py``), on 200 tasks of each of the eleven scenarios of
``docs/results/scenario_matrix/`` sampled with seed 99 (not the evaluation's tasks), as the pair of a 5 x 5 grid
(clear 10-30 m, margin 0-2 s) with no collision on any of them and the best mean return.

Why it exists (docs/results/learning/README.md): this rule beats the best fixed open-loop plan on 9 of those 11
scenarios with no collision, while policy gradient from a random initial policy (ours, and Stable-Baselines3's
PPO) ends at "brake, wait until the other car is through, go" and never discovers going first. So the
observation carries what a good policy needs; the learner's exploration does not find it. ``policy.warm_start:
gap_acceptance`` therefore starts training from a policy that imitates the rule (behaviour cloning, as DAPG,
Rajeswaran et al. 2018, starts from demonstrations), and policy gradient improves on it from there.

    from intersection_meta.gap_acceptance import gap_acceptance_actions, run_gap_acceptance
    actions = gap_acceptance_actions(obs, task.settings)      # [N] SLOWER / FASTER
    result = run_gap_acceptance(tasks)                         # scripted.PlanResult, one episode per task
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from intersection_meta.criticality import CONFLICT_DISTANCE_SCALE_M, CONFLICT_TIME_CAP_S
from intersection_meta.scripted import FASTER, SLOWER, PlanResult, run_controller

__all__ = [
    "CLEAR_DISTANCE_M",
    "MARGIN_S",
    "gap_acceptance_actions",
    "imitate_gap_acceptance",
    "require_rule_inputs",
    "run_gap_acceptance",
]

#: How far past the entry of the conflict area a car must be (ego: must be able to get) to count as through [m].
CLEAR_DISTANCE_M = 10.0
#: Safety margin between the ego being through and the other car entering the area [s].
MARGIN_S = 0.5
#: Name of the rule in reports.
RULE_NAME = "gap acceptance (closed loop)"


def require_rule_inputs(settings: Any, where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) unless the rule can run on ``settings``: discrete actions and both
    conflict features in the observation."""
    missing = [f for f in ("conflict_distance", "conflict_time") if f not in settings.observation_features]
    if missing or settings.action != "discrete":
        raise ValueError(
            f"{where}: the gap-acceptance rule needs discrete actions and the observation features "
            f"conflict_distance and conflict_time (scenarios extending _base_intersection have them); this "
            f"scenario has action {settings.action!r} and features {list(settings.observation_features)}"
        )


def gap_acceptance_actions(
    obs: np.ndarray, settings: Any, *, clear_distance_m: float = CLEAR_DISTANCE_M, margin_s: float = MARGIN_S
) -> np.ndarray:
    """The rule's action (SLOWER or FASTER) for each row of ``obs`` (``[N, 2 * n_features]``, the env's
    observation under ``settings``: ego features, then the other car's); the two constants default to the
    module's (``benchmarks/gap_acceptance_grid.py`` chose them)."""
    require_rule_inputs(settings, "gap_acceptance_actions")
    features = list(settings.observation_features)
    n = len(features)
    obs = np.asarray(obs, dtype=np.float64)
    cd, ct = features.index("conflict_distance"), features.index("conflict_time")
    ego_distance_m = obs[:, cd] * CONFLICT_DISTANCE_SCALE_M
    other_distance_m = obs[:, n + cd] * CONFLICT_DISTANCE_SCALE_M
    other_time_s = obs[:, n + ct] * CONFLICT_TIME_CAP_S
    other_capped = other_time_s >= CONFLICT_TIME_CAP_S
    no_conflict = other_capped & (other_distance_m >= CONFLICT_DISTANCE_SCALE_M)
    gone = other_distance_m <= -CONFLICT_DISTANCE_SCALE_M
    other_through = other_distance_m < -clear_distance_m
    ego_committed = ego_distance_m <= 0.0
    top_speed_mps = float(max(settings.target_speeds_mps))
    ego_through_s = (np.maximum(ego_distance_m, 0.0) + clear_distance_m) / top_speed_mps
    other_arrives_s = np.where(other_capped, np.inf, other_time_s)
    go_first = (other_distance_m > 0.0) & (ego_through_s + margin_s < other_arrives_s)
    go = no_conflict | gone | other_through | ego_committed | go_first
    return np.where(go, FASTER, SLOWER).astype(np.int64)


def run_gap_acceptance(tasks: Sequence[Any], seed: int = 0, **rule: float) -> PlanResult:
    """One episode per task under the rule (``rule``: :func:`gap_acceptance_actions`'s keyword constants), on the
    fast backend (deterministic, so one episode is exact)."""
    tasks = list(tasks)
    settings = tasks[0].settings
    require_rule_inputs(settings, "run_gap_acceptance")
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    return run_controller(tasks, lambda obs, _: gap_acceptance_actions(obs, settings, **rule), horizon, RULE_NAME, seed)


#: Warm-start data: tasks (one rollout each), share of random actions in those rollouts (so the data covers states
#: the rule itself would not visit), full-batch Adam epochs and step size of the cross-entropy fit.
IMITATION_TASKS = 400
IMITATION_EXPLORE = 0.2
IMITATION_EPOCHS = 400
IMITATION_LR = 1e-3


def imitation_data(
    scenario: Any, seed: int, n_tasks: int = IMITATION_TASKS, latent_dim: int = 0, go_first_latent: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(obs [N, obs_dim], rule actions [N])`` from one rollout per task (``n_tasks`` tasks sampled with ``seed``)
    that follows the rule but takes a uniformly random action with probability :data:`IMITATION_EXPLORE`. The
    rollouts run on the fast backend whatever the run's ``env.backend``: the two backends' observations agree
    (``benchmarks/fidelity.py``), so the data serves a run on either.

    With ``latent_dim > 0`` (a latent policy) each rollout draws one ``z ~ N(0, I)`` for the whole episode, appended
    to every observation (``[N, obs_dim + latent_dim]``). With ``go_first_latent`` (the ``rule_or_go`` warm start)
    the demonstrator is the rule when ``z_1 < 0`` and "always go" (FASTER) when ``z_1 > 0``, each mode recorded on
    the states its own rollouts visit; without it, the rule whatever ``z``."""
    if go_first_latent and latent_dim < 1:
        raise ValueError("go_first_latent needs latent_dim >= 1")
    from intersection_meta.envs.factory import make_vector_env

    tasks = scenario.sample_tasks(n_tasks, seed=seed)
    settings = tasks[0].settings
    what = "rule_or_go" if go_first_latent else "gap_acceptance"
    require_rule_inputs(settings, f"policy.warm_start={what} on scenario {scenario.name!r}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(tasks), int(latent_dim))).astype(np.float32) if latent_dim else None
    go_first = z[:, 0] > 0 if go_first_latent and z is not None else np.zeros(len(tasks), bool)
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    env = make_vector_env(tasks, seed=seed, backend="fast")
    xs, ys = [], []
    try:
        obs, _ = env.reset(seed=seed)
        done = np.zeros(len(tasks), bool)
        for _ in range(horizon):
            target = np.where(go_first, FASTER, gap_acceptance_actions(obs, settings))
            inputs = obs if z is None else np.concatenate([obs, z], axis=1)
            xs.append(inputs[~done].copy())
            ys.append(target[~done])
            explore = rng.random(len(tasks)) < IMITATION_EXPLORE
            actions = np.where(explore, rng.integers(0, 3, len(tasks)), target)
            obs, _, terminated, truncated, _ = env.step(actions)
            done |= terminated | truncated
            if done.all():
                break
    finally:
        env.close()
    return torch.as_tensor(np.concatenate(xs), dtype=torch.float32), torch.as_tensor(np.concatenate(ys))


def imitate_gap_acceptance(policy: Any, scenario: Any, seed: int, go_first_latent: bool = False) -> float:
    """Fit ``policy`` (a categorical policy, trained in place) to the rule's actions on :func:`imitation_data` by
    full-batch cross-entropy; returns the share of those states where its most likely action is the target's.
    ``go_first_latent`` (the ``rule_or_go`` warm start, latent policies only): the targets are the rule when the
    episode's ``z_1 < 0`` and "always go" when ``z_1 > 0``."""
    latent_dim = int(getattr(policy, "latent_dim", 0))
    obs, actions = imitation_data(scenario, seed, latent_dim=latent_dim, go_first_latent=go_first_latent)
    optimizer = torch.optim.Adam(policy.parameters(), lr=IMITATION_LR)
    for _ in range(IMITATION_EPOCHS):
        loss = torch.nn.functional.cross_entropy(policy.distribution(obs).logits, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((policy.distribution(obs).logits.argmax(-1) == actions).float().mean())
