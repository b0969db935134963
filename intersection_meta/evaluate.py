"""Evaluation of a meta-trained policy: adapt to held-out tasks and report returns, success and collisions.

Held-out tasks are sampled with a seed stream disjoint from training's. For every adaptation step ``k = 0..K``
(0 = before adaptation) the report gives the mean return with a 95% confidence interval over tasks (Student t),
and on intersection scenarios the success (arrival) and collision rates with 95% Wilson intervals over episodes
(:mod:`intersection_meta.stats`). On intersection scenarios it also gives the scripted references of
:mod:`intersection_meta.scripted` on the **same held-out tasks** (always go, best fixed plan, per-task best plan;
open-loop, one episode per task on the fast backend, which is exact because the tasks are deterministic given the
actions), so every evaluation says where the policy stands. The command line is
:mod:`intersection_meta.cli.evaluate` (``python -m intersection_meta.evaluate``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from intersection_meta.criticality import CRITICALITY_KEYS, finite_mean, json_value
from intersection_meta.stats import mean_ci, wilson_interval

#: Offset that keeps evaluation task seeds disjoint from training's (which use iteration numbers).
HELD_OUT_SEED_KEY = 1_000_003


def evaluate_checkpoint(
    checkpoint: Any,
    *,
    n_tasks: int = 40,
    adapt_steps: int = 1,
    episodes_per_task: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    scenario: Any = None,
    scripted: bool = True,
    greedy: bool = True,
) -> dict[str, Any]:
    """Adapt the checkpoint's policy to ``n_tasks`` held-out tasks and summarise every adaptation step.

    Args:
        scripted: On intersection scenarios, add the scripted references on the same held-out tasks.
        greedy: Add ``"greedy"``: the policies after the last adaptation step acting greedily (the mode of the
            action distribution; the adaptation itself samples, as policy gradient needs), on the same tasks.

    Returns:
        ``{"scenario", "algo", "iteration", "tasks", "episodes_per_task", "backend", "simulator", "task_ids",
        "steps": [{"adapt_step", "return_mean", "return_ci", "success_rate", "success_ci", "collision_rate",
        "collision_ci"}, ...], "per_task": [...]}``, plus on intersection scenarios ``"scripted"``
        (:func:`scripted_section`) and the criticality metrics (:data:`~intersection_meta.criticality.
        CRITICALITY_KEYS`: ``min_distance_m``, ``pet_s``, ``min_ttc_s``, ``ego_peak_decel_mps2``) in every
        ``steps`` row (over all episodes) and ``per_task`` entry (over the task's episodes after the last step):
        means of the finite values, ``null`` when none is finite (e.g. no conflict area, or never entered).
    """
    from intersection_meta.adaptation import adapt_and_rollout
    from intersection_meta.envs.factory import resolve_backend, simulator_name
    from intersection_meta.seeding import derive_seed
    from intersection_meta.tasks import task_to_dict

    sc = scenario or checkpoint.scenario
    episodes = checkpoint.config.train.episodes_per_task if episodes_per_task is None else episodes_per_task
    if episodes < 1 or n_tasks < 1 or adapt_steps < 0:
        raise ValueError(
            f"evaluation needs episodes_per_task >= 1, n_tasks >= 1 and adapt_steps >= 0; got {episodes}, "
            f"{n_tasks}, {adapt_steps}"
        )
    backend = resolve_backend(backend, sc.medium_task())
    tasks = sc.sample_tasks(n_tasks, seed=derive_seed(seed, HELD_OUT_SEED_KEY))
    result = adapt_and_rollout(
        checkpoint.learner,
        tasks,
        adapt_steps=adapt_steps,
        episodes_per_task=episodes,
        seed=derive_seed(seed, HELD_OUT_SEED_KEY, 1),
        backend=backend,
    )
    steps = [_summary_row(k, per_task) for k, per_task in enumerate(result.episodes)]
    per_task = []
    for task, final in zip(tasks, result.episodes[-1], strict=True):
        entry: dict[str, Any] = {
            "task_id": task.task_id,
            "task": task_to_dict(task),
            "return_mean": float(final.returns.mean()),
        }
        if final.arrived is not None:
            entry["success_rate"] = float(final.arrived.float().mean())
            entry["collision_rate"] = float(final.crashed.float().mean())
        entry.update(_criticality_means([final]))
        per_task.append(entry)
    report = {
        "scenario": sc.name,
        "algo": checkpoint.algo,
        "iteration": checkpoint.iteration,
        "tasks": n_tasks,
        "episodes_per_task": episodes,
        "backend": backend,
        "simulator": simulator_name(backend, sc.medium_task()),
        "task_ids": [t.task_id for t in tasks],
        "steps": steps,
        "per_task": per_task,
    }
    if greedy:
        report["greedy"] = _summary_row(
            adapt_steps, _greedy_episodes(checkpoint, tasks, result.params[-1], episodes, seed, backend)
        )
    if scripted and sc.kind == "intersection" and tasks:
        report["scripted"] = scripted_section(tasks)
    return report


def _summary_row(adapt_step: int, per_task: list) -> dict[str, Any]:
    """One row of the report: mean return (95% t-interval over tasks), success and collision rates (95% Wilson
    intervals over episodes) and criticality means of the per-task episode batches ``per_task``."""
    m, lo, hi = mean_ci([float(e.returns.mean()) for e in per_task])
    row: dict[str, Any] = {"adapt_step": adapt_step, "return_mean": m, "return_ci": [lo, hi]}
    if per_task[0].arrived is not None:
        n = sum(e.n_episodes for e in per_task)
        for name, attr in (("success", "arrived"), ("collision", "crashed")):
            count = int(sum(int(getattr(e, attr).sum()) for e in per_task))
            p, plo, phi = wilson_interval(count, n)
            row[f"{name}_rate"], row[f"{name}_ci"] = p, [plo, phi]
    row.update(_criticality_means(per_task))
    return row


def _greedy_episodes(checkpoint: Any, tasks: list, params: list, episodes: int, seed: int, backend: str) -> list:
    """Episodes of the adapted policies acting greedily (the most likely action at every decision, as a deployed
    policy would), ``episodes`` per task with the reset seeds of a fresh stream."""
    from intersection_meta.adaptation import GroupedPolicy, repeat_tasks
    from intersection_meta.envs.factory import make_vector_env
    from intersection_meta.rollout import collect_episodes, split_by_task
    from intersection_meta.seeding import derive_seed

    greedy_seed = derive_seed(seed, HELD_OUT_SEED_KEY, 2)
    vec_env = make_vector_env(repeat_tasks(tasks, episodes), seed=greedy_seed, backend=backend)
    try:
        grouped = GroupedPolicy(checkpoint.learner.policy, params, episodes)
        eps = collect_episodes(vec_env, grouped, None, seed=greedy_seed, deterministic=True)
    finally:
        vec_env.close()
    return split_by_task(eps, len(tasks))


def _criticality_means(batches: list) -> dict[str, float | None]:
    """``{key: mean over the finite values or None}`` of the batches' criticality metrics (empty without them)."""
    if any(b.criticality is None for b in batches):
        return {}
    return {key: json_value(finite_mean([v for b in batches for v in b.criticality[key].tolist()]))
            for key in CRITICALITY_KEYS}


def scripted_section(tasks: list) -> dict[str, Any]:
    """The scripted references (:func:`intersection_meta.scripted.references_for_tasks`) on ``tasks``, with what
    they cost: ``{"always_go", "always_go_collision_rate", "best_fixed_plan", "best_fixed",
    "best_fixed_collision_rate", "per_task_best", "plans": {...}, "tasks", "time_s"}``, plus ``"gap_acceptance"``
    and ``"gap_acceptance_collision_rate"`` (the closed-loop rule of :mod:`intersection_meta.gap_acceptance`) when the
    observation has the conflict features."""
    from intersection_meta.scripted import references_for_tasks

    from intersection_meta.gap_acceptance import require_rule_inputs, run_gap_acceptance

    t0 = time.perf_counter()
    section = references_for_tasks(tasks).to_dict()
    try:
        require_rule_inputs(tasks[0].settings, "scripted references")
    except ValueError:
        pass  # no conflict features in this scenario's observation: the rule cannot run, so it is not reported
    else:
        rule = run_gap_acceptance(tasks)
        section["gap_acceptance"] = rule.return_mean
        section["gap_acceptance_collision_rate"] = rule.collision_rate
    return {**section, "tasks": len(tasks), "time_s": time.perf_counter() - t0}


def format_scripted(report: dict[str, Any]) -> list[str]:
    """Report lines that place the policy against the scripted references (empty without them)."""
    ref = report.get("scripted")
    if ref is None:
        return []
    lines = [
        f"scripted references on the same {ref['tasks']} tasks (open-loop plans, one episode each, fast backend):",
        f"  always go {ref['always_go']:.2f} ({ref['always_go_collision_rate']:.0%} collisions)  |  best fixed plan "
        f"'{ref['best_fixed_plan']}' {ref['best_fixed']:.2f} ({ref['best_fixed_collision_rate']:.0%})  |  "
        f"per-task best plan {ref['per_task_best']:.2f}",
    ]
    if "gap_acceptance" in ref:
        lines.append(
            f"  closed-loop gap-acceptance rule on the same observation {ref['gap_acceptance']:.2f} "
            f"({ref['gap_acceptance_collision_rate']:.0%} collisions)"
        )
    gap = ref["per_task_best"] - ref["best_fixed"]
    rows = [(report["steps"][-1], "")] + ([(report["greedy"], ", acting greedily,")] if "greedy" in report else [])
    for row, how in rows:
        diff = row["return_mean"] - ref["best_fixed"]
        verdict = (
            "level with the best fixed plan (within 0.005)"
            if abs(diff) < 0.005
            else f"{'above' if diff > 0 else 'below'} the best fixed plan by {abs(diff):.2f}"
        )
        lines.append(
            f"  after {row['adapt_step']} step(s){how} the policy is {verdict}"
            + (f"; it closes {diff / gap:.0%} of the gap to the per-task best plan"
               if diff >= 0.005 and gap > 0 else "")
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['algo']} on {report['scenario']} (iteration {report['iteration']}): {report['tasks']} held-out "
        f"tasks x {report['episodes_per_task']} episodes, simulator {report['simulator']}"
    ]
    header = f"{'step':>4}  {'return (95% CI)':>26}"
    has_rates = "success_rate" in report["steps"][0]
    if has_rates:
        header += f"  {'success (95% CI)':>24}  {'collision (95% CI)':>24}"
    lines.append(header)
    greedy = [report["greedy"]] if "greedy" in report else []
    for s in report["steps"] + greedy:
        label = f"{s['adapt_step']}g" if s is report.get("greedy") else str(s["adapt_step"])
        line = f"{label:>4}  {s['return_mean']:>8.2f} [{s['return_ci'][0]:>7.2f}, {s['return_ci'][1]:>7.2f}]"
        if has_rates:
            for name in ("success", "collision"):
                lo, hi = s[f"{name}_ci"]
                line += f"  {s[f'{name}_rate']:>7.1%} [{lo:>6.1%}, {hi:>6.1%}]"
        lines.append(line)
    if greedy:
        k = greedy[0]["adapt_step"]
        lines.append(f"  {k}g = after {k} step(s), acting greedily (the most likely action at every decision; "
                     "the rows above sample their actions)")
    if has_rates:
        last = report["steps"][-1]
        lines += _timeout_lines([(str(last["adapt_step"]), last)] + [(f"{g['adapt_step']}g", g) for g in greedy])
    crit = [s for s in report["steps"] if "min_distance_m" in s]
    if crit:
        lines.append("criticality (means over episodes with a finite value; '-' none):")
        names = ("min distance m", "PET s", "min TTC s", "ego peak decel m/s2")
        lines.append(f"{'step':>4}  {names[0]:>14}  {names[1]:>7}  {names[2]:>9}  {names[3]:>19}")
        for s in crit:
            cells = [f"{s[k]:.2f}" if s[k] is not None else "-" for k in CRITICALITY_KEYS]
            lines.append(f"{s['adapt_step']:>4}  {cells[0]:>14}  {cells[1]:>7}  {cells[2]:>9}  {cells[3]:>19}")
    lines += format_scripted(report)
    return "\n".join(lines)


def timeout_rate(row: dict[str, Any]) -> float:
    """Share of a report row's episodes that neither arrived nor collided: they ran out of time (intersection
    episodes end on arrival, collision or the duration limit)."""
    return max(0.0, 1.0 - row["success_rate"] - row["collision_rate"])


def _timeout_lines(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """One line per ``(label, row)`` whose episodes time out (0.5% or more), so a success rate below 100% with no
    collisions is explained."""
    return [
        f"  {label}: {timeout_rate(row):.1%} of episodes neither arrived nor collided (ran out of time)"
        for label, row in rows
        if timeout_rate(row) >= 0.005
    ]


def best_adapt_steps(report: dict[str, Any]) -> int:
    """The number of adaptation steps with the highest mean held-out return in ``report`` (the fewest on ties)."""
    best = max(report["steps"], key=lambda row: (row["return_mean"], -row["adapt_step"]))
    return int(best["adapt_step"])


def final_evaluation(config: Any, checkpoint_path: Any, out_dir: Any) -> dict[str, Any]:
    """A training run's final held-out evaluation, as ``python -m intersection_meta.train`` and the benchmark
    harness run it: ``config.train.eval_tasks`` tasks, ``config.meta.inner_steps`` adaptation steps, the run's seed
    and backend. Writes ``evaluation.txt`` and ``evaluation.json`` into ``out_dir`` (each atomically) and returns
    the report."""
    from intersection_meta.checkpoint import load_checkpoint
    from intersection_meta.runlog import replace_atomically

    t0 = time.perf_counter()
    report = evaluate_checkpoint(
        load_checkpoint(checkpoint_path),
        n_tasks=config.train.eval_tasks,
        adapt_steps=config.meta.inner_steps,
        seed=config.train.seed,
        backend=config.env.backend,
    )
    report["wall_time_s"] = time.perf_counter() - t0
    out = Path(out_dir)
    replace_atomically(out / "evaluation.txt", (format_report(report) + "\n").encode())
    replace_atomically(out / "evaluation.json", (json.dumps(report, indent=1) + "\n").encode())
    return report


if __name__ == "__main__":  # ``python -m intersection_meta.evaluate``: the command line lives in cli/
    import sys

    from intersection_meta.cli.evaluate import main

    sys.exit(main())
