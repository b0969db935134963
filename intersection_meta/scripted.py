"""Scripted references on intersection scenarios: open-loop plans a learned policy should beat.

Every plan is a fixed action sequence, blind to the task: "always go" (FASTER at every decision), "hold" (IDLE)
and "brake for n decisions, then go" (n = 1..8). The *best fixed plan* is the plan with the highest mean return
over the tasks; the *per-task best plan* takes, on every task, the best of those plans (an oracle that knows the
task, so it bounds what one adaptation step can earn against the best fixed plan). A closed-loop policy that reads
the gap from its observation can match the per-task best plan or beat it.

    from intersection_meta.scripted import scripted_references
    refs = scripted_references(load_scenario("yield_left"), n_tasks=200, seed=0)
    refs.always_go.return_mean, refs.best_fixed.name, refs.per_task_best_return
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The discrete meta-actions of the intersection env.
SLOWER, IDLE, FASTER = 0, 1, 2
#: Largest n of the "brake n, then go" plans.
MAX_BRAKE_DECISIONS = 8


@dataclass(frozen=True)
class PlanResult:
    """One open-loop plan over a set of tasks (one episode per task).

    Attributes:
        name: The plan, e.g. ``"brake 6, then go"``.
        returns: ``[n_tasks]`` undiscounted episode returns.
        crashed: ``[n_tasks]`` the ego collided.
        arrived: ``[n_tasks]`` the ego reached its exit.
    """

    name: str
    returns: np.ndarray
    crashed: np.ndarray
    arrived: np.ndarray

    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def collision_rate(self) -> float:
        return float(self.crashed.mean())

    @property
    def arrival_rate(self) -> float:
        return float(self.arrived.mean())


@dataclass(frozen=True)
class ScriptedReferences:
    """Every plan's result, and the three references an evaluation reports.

    Attributes:
        plans: Every plan, in the order of :func:`open_loop_plans`.
        always_go: The "always go" plan.
        best_fixed: The plan with the highest mean return.
        per_task_best_return: Mean over tasks of the best plan's return on each task (the oracle).
    """

    plans: tuple[PlanResult, ...]
    always_go: PlanResult
    best_fixed: PlanResult
    per_task_best_return: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: the three references and every plan's return, collision and arrival rates."""
        return {
            "always_go": self.always_go.return_mean,
            "always_go_collision_rate": self.always_go.collision_rate,
            "best_fixed_plan": self.best_fixed.name,
            "best_fixed": self.best_fixed.return_mean,
            "best_fixed_collision_rate": self.best_fixed.collision_rate,
            "per_task_best": self.per_task_best_return,
            "plans": {
                p.name: {"return": p.return_mean, "collision_rate": p.collision_rate, "arrival_rate": p.arrival_rate}
                for p in self.plans
            },
        }


def open_loop_plans(horizon: int) -> dict[str, list[int]]:
    """The reference plans as action lists of length ``horizon`` (or longer; extra actions are never used).

    >>> plans = open_loop_plans(3)
    >>> plans["always go"], plans["brake 2, then go"][:3]
    ([2, 2, 2], [0, 0, 2])
    """
    plans = {"always go": [FASTER] * horizon, "hold (IDLE)": [IDLE] * horizon}
    for n in range(1, MAX_BRAKE_DECISIONS + 1):
        plans[f"brake {n}, then go"] = [SLOWER] * n + [FASTER] * horizon
    return plans


def run_plan(tasks: Sequence[Any], plan: Sequence[int], name: str = "plan", seed: int = 0) -> PlanResult:
    """One episode per task under an open-loop action plan, on the fast backend.

    The intersection tasks are deterministic given the actions, so one episode is exact.
    """
    return run_controller(tasks, lambda obs, step: np.full(len(obs), plan[step]), len(plan), name, seed)


def run_controller(tasks: Sequence[Any], act: Any, horizon: int, name: str, seed: int = 0) -> PlanResult:
    """One episode per task on the fast backend, for at most ``horizon`` decisions, with the actions
    ``act(obs, step)`` (``[N]`` for the ``[N, obs_dim]`` observations at decision ``step``): an open-loop plan
    ignores ``obs``, a closed-loop rule reads it."""
    from intersection_meta.envs.factory import make_vector_env

    env = make_vector_env(list(tasks), seed=seed, backend="fast")
    try:
        obs, _ = env.reset(seed=seed)
        n = len(tasks)
        returns, crashed, arrived = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        done = np.zeros(n, bool)
        for step in range(horizon):
            obs, reward, terminated, truncated, info = env.step(act(obs, step))
            returns += np.where(done, 0.0, reward)
            crashed |= ~done & info["crashed"]
            arrived |= ~done & info["arrived"]
            done |= terminated | truncated
            if done.all():
                break
    finally:
        env.close()
    return PlanResult(name, returns, crashed, arrived)


def references_for_tasks(tasks: Sequence[Any]) -> ScriptedReferences:
    """Run every plan of :func:`open_loop_plans` on ``tasks`` (intersection tasks of one scenario)."""
    if not tasks:
        raise ValueError("scripted references need at least one task")
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    results = tuple(run_plan(tasks, plan, name) for name, plan in open_loop_plans(horizon).items())
    best_fixed = max(results, key=lambda r: r.return_mean)
    per_task_best = float(np.max(np.stack([r.returns for r in results]), axis=0).mean())
    return ScriptedReferences(results, results[0], best_fixed, per_task_best)


def scripted_references(scenario: Any, n_tasks: int = 200, seed: int = 0) -> ScriptedReferences:
    """The scripted references of an intersection ``scenario`` on ``n_tasks`` tasks sampled with ``seed``.

    Raises:
        ValueError: for a scenario that is not an intersection scenario.
    """
    if scenario.kind != "intersection":
        raise ValueError(f"{scenario.name} is a {scenario.kind} scenario; scripted references need an intersection")
    return references_for_tasks(scenario.sample_tasks(n_tasks, seed=seed))
