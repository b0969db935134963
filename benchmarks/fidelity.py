"""Fidelity of the fast intersection backend against the highway-env reference env.

Runs ``TwoVehicleIntersectionEnv`` (one episode at a time) and ``FastIntersectionVectorEnv`` (all episodes
at once) on the same tasks and the same action sequences, and compares, per episode, the outcome
(arrived / collided / timed out) and, per step, the observation (max abs difference, normalised units),
reward, termination and truncation.

Tasks: ``--per-scenario`` tasks from every shipped ``kind: intersection`` scenario plus ``--broad`` tasks
drawn uniformly over every entry/intent/driver combination, speeds 3-12 m/s, distances 20-80 m, gaps
-3..3 s. Policies (``--policy``): ``random`` (open loop: per-episode action probabilities drawn from a
Dirichlet(1, 1, 1), so some episodes mostly accelerate, others mostly brake), ``heuristic`` (closed loop:
FASTER unless the other vehicle is within 25 m, then SLOWER) or ``checkpoint:PATH`` (closed loop: a trained
policy's greedy actions). ``--action continuous`` runs every task with continuous longitudinal actions
(``random`` only: per-episode accelerations ``clip(mu + sigma * N(0, 1), -1, 1)`` with ``mu`` uniform in
[-1, 1] and ``sigma`` in [0, 1], float32 like the action space).

    python benchmarks/fidelity.py --per-scenario 150 --broad 500 [--action continuous]

Exit status 1 if the bar (100 % outcome agreement and >= 99 % of steps within 1e-3) is missed.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from dataclasses import dataclass

import numpy as np

from intersection_meta.envs.fast import FastIntersectionVectorEnv
from intersection_meta.envs.intersection import TwoVehicleIntersectionEnv, with_settings
from intersection_meta.scenario import available_scenarios, load_scenario
from intersection_meta.tasks import DRIVERS, ENTRIES, INTENTS, IntersectionTask

OBS_TOL = 1e-3
BAR = 0.99
OUTCOME_BAR = 1.0


@dataclass(frozen=True)
class EpisodeTrace:
    """One episode: per-step observations (incl. the reset one), rewards, flags and the outcome."""

    obs: np.ndarray  # (T + 1, obs_dim)
    rewards: np.ndarray  # (T,)
    terminated: np.ndarray  # (T,)
    truncated: np.ndarray  # (T,)
    outcome: str  # "collided" | "arrived" | "timeout"


def outcome_of(crashed: bool, arrived: bool) -> str:
    return "collided" if crashed else "arrived" if arrived else "timeout"


def broad_tasks(n: int, seed: int) -> list[IntersectionTask]:
    """Uniform over all entry/intent/driver combos, speeds 3-12 m/s, distances 20-80 m, gaps -3..3 s."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(n):
        ego_entry = str(rng.choice(ENTRIES))
        other_entry = str(rng.choice([e for e in ENTRIES if e != ego_entry]))
        tasks.append(
            IntersectionTask(
                scenario="broad",
                ego_entry=ego_entry,
                ego_intent=str(rng.choice(INTENTS)),
                ego_speed_mps=float(rng.uniform(3, 12)),
                ego_distance_to_stop_m=float(rng.uniform(20, 80)),
                other_entry=other_entry,
                other_intent=str(rng.choice(INTENTS)),
                other_driver=str(rng.choice(DRIVERS)),
                other_speed_mps=float(rng.uniform(3, 12)),
                time_gap_s=float(rng.uniform(-3, 3)),
            )
        )
    return tasks


def shipped_intersection_tasks(per_scenario: int, seed: int) -> list[IntersectionTask]:
    tasks: list[IntersectionTask] = []
    for name in available_scenarios():
        scenario = load_scenario(name)
        if scenario.kind != "intersection":
            continue
        tasks += list(scenario.sample_tasks(per_scenario, seed=seed))
    return tasks


def random_actions(n_episodes: int, horizon: int, seed: int) -> np.ndarray:
    """(n_episodes, horizon) actions; each episode has its own Dirichlet-drawn action probabilities."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=n_episodes)
    u = rng.random((n_episodes, horizon))
    return (u[..., None] > np.cumsum(probs, axis=1)[:, None, :]).sum(axis=2).clip(0, 2)


def random_continuous_actions(n_episodes: int, horizon: int, seed: int) -> np.ndarray:
    """(n_episodes, horizon, 1) float32 accelerations in [-1, 1], each episode with its own mean and spread."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-1, 1, size=(n_episodes, 1))
    sigma = rng.uniform(0, 1, size=(n_episodes, 1))
    a = np.clip(mu + sigma * rng.standard_normal((n_episodes, horizon)), -1, 1)
    return a.astype(np.float32)[..., None]


def make_policy(spec: str, n_episodes: int, horizon: int, seed: int, action: str = "discrete"):
    """``policy(obs (B, F), t, episode_ids (B,)) -> actions (B,)`` for a ``--policy`` spec."""
    if action == "continuous":
        if spec != "random":
            raise ValueError("--action continuous supports --policy random only")
        cont = random_continuous_actions(n_episodes, horizon, seed)
        return lambda obs, t, ids: cont[ids, t]
    if spec == "random":
        actions = random_actions(n_episodes, horizon, seed)
        return lambda obs, t, ids: actions[ids, t]
    if spec == "heuristic":

        def heuristic(obs, t, ids):
            rows = obs.reshape(len(obs), 2, -1)
            gap = (
                np.hypot(rows[:, 1, 1] - rows[:, 0, 1], rows[:, 1, 2] - rows[:, 0, 2]) * 100
            )  # x, y in 1/100 m
            return np.where((rows[:, 1, 0] > 0) & (gap < 25), 0, 2)

        return heuristic
    if spec.startswith("checkpoint:"):
        import torch

        from intersection_meta.checkpoint import load_checkpoint

        policy = load_checkpoint(spec.split(":", 1)[1]).policy

        def greedy(obs, t, ids):
            with torch.no_grad():
                return policy(torch.as_tensor(obs, dtype=torch.float32)).probs.argmax(-1).numpy()

        return greedy
    raise ValueError(f"unknown --policy {spec!r}; use random, heuristic or checkpoint:PATH")


def run_reference(task: IntersectionTask, policy, episode: int, horizon: int) -> EpisodeTrace:
    env = TwoVehicleIntersectionEnv(task)
    obs, _ = env.reset(seed=0)
    obs_list, rewards, terms, truncs = [obs], [], [], []
    info = {"crashed": False, "arrived": False}
    for t in range(horizon):
        a = policy(obs[None], t, np.array([episode]))[0]
        obs, r, term, trunc, info = env.step(a if task.settings.action == "continuous" else int(a))
        obs_list.append(obs)
        rewards.append(r)
        terms.append(term)
        truncs.append(trunc)
        if term or trunc:
            break
    env.close()
    return EpisodeTrace(
        np.array(obs_list),
        np.array(rewards),
        np.array(terms),
        np.array(truncs),
        outcome_of(info["crashed"], info["arrived"]),
    )


def run_fast(tasks: list[IntersectionTask], policy, horizon: int) -> list[EpisodeTrace]:
    env = FastIntersectionVectorEnv(tasks, seed=0)
    obs, _ = env.reset(seed=0)
    n = len(tasks)
    obs_hist, rew, term, trunc = [obs], [], [], []
    crashed = np.zeros((horizon, n), dtype=bool)
    arrived = np.zeros((horizon, n), dtype=bool)
    for t in range(horizon):
        obs, r, te, tr, info = env.step(policy(obs, t, np.arange(n)))
        obs_hist.append(obs)
        rew.append(r)
        term.append(te)
        trunc.append(tr)
        crashed[t], arrived[t] = info["crashed"], info["arrived"]
    obs_hist, rew, term, trunc = map(np.array, (obs_hist, rew, term, trunc))
    traces = []
    for i in range(n):
        done = np.nonzero(term[:, i] | trunc[:, i])[0]
        end = int(done[0]) + 1 if done.size else horizon
        traces.append(
            EpisodeTrace(
                obs_hist[: end + 1, i],
                rew[:end, i],
                term[:end, i],
                trunc[:end, i],
                outcome_of(bool(crashed[end - 1, i]), bool(arrived[end - 1, i])),
            )
        )
    return traces


def compare(ref: EpisodeTrace, fast: EpisodeTrace) -> dict:
    """Per-episode agreement: steps compared, steps within tolerance, max obs error, first bad step."""
    n_ref, n_fast = len(ref.rewards), len(fast.rewards)
    common = min(n_ref, n_fast)
    err = np.abs(ref.obs[1 : common + 1] - fast.obs[1 : common + 1]).max(axis=1) if common else np.zeros(0)
    ok = err <= OBS_TOL
    bad = np.nonzero(~ok)[0]
    return {
        "steps": max(n_ref, n_fast),
        "steps_ok": int(ok.sum()),
        "reset_err": float(np.abs(ref.obs[0] - fast.obs[0]).max()),
        "max_err": float(err.max()) if common else 0.0,
        "first_bad_step": int(bad[0]) + 1 if bad.size else None,
        "reward_err": float(np.abs(ref.rewards[:common] - fast.rewards[:common]).max()) if common else 0.0,
        "outcome_ref": ref.outcome,
        "outcome_fast": fast.outcome,
        "length_ref": n_ref,
        "length_fast": n_fast,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--per-scenario", type=int, default=150, help="tasks per shipped intersection scenario"
    )
    parser.add_argument("--broad", type=int, default=500, help="tasks from the broad uniform sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=10, help="mismatching episodes to print")
    parser.add_argument("--policy", default="random", help="random | heuristic | checkpoint:PATH")
    parser.add_argument("--action", default="discrete", choices=("discrete", "continuous"), help="action type")
    args = parser.parse_args(argv)

    tasks = shipped_intersection_tasks(args.per_scenario, args.seed) + broad_tasks(args.broad, args.seed + 1)
    tasks = [with_settings(t, action=args.action) for t in tasks]
    horizon = round(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    policy = make_policy(args.policy, len(tasks), horizon, args.seed + 2, args.action)
    print(f"policy {args.policy}, {args.action} actions, reference env TwoVehicleIntersectionEnv")

    t0 = time.perf_counter()
    fast = run_fast(tasks, policy, horizon)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [run_reference(task, policy, i, horizon) for i, task in enumerate(tasks)]
    t_ref = time.perf_counter() - t0
    rows = [compare(r, f) for r, f in zip(ref, fast, strict=True)]

    n = len(rows)
    outcome_ok = sum(r["outcome_ref"] == r["outcome_fast"] for r in rows)
    steps = sum(r["steps"] for r in rows)
    steps_ok = sum(r["steps_ok"] for r in rows)
    print(f"episodes: {n} ({len({t.scenario for t in tasks})} task sources), steps: {steps}")
    print(f"reference {t_ref:.1f} s, fast {t_fast:.2f} s")
    print(f"outcome agreement: {outcome_ok}/{n} = {outcome_ok / n:.4%}")
    print(f"steps with obs within {OBS_TOL:g}: {steps_ok}/{steps} = {steps_ok / steps:.4%}")
    print(f"max reset-obs error: {max(r['reset_err'] for r in rows):.2e}")
    print(f"episodes with bit-identical observations: {sum(r['max_err'] == 0 for r in rows)}/{n}")
    errs = np.array([r["max_err"] for r in rows])
    print("per-episode max obs error distribution:")
    for lo, hi in [(0, 1e-12), (1e-12, 1e-9), (1e-9, 1e-6), (1e-6, 1e-3), (1e-3, 1e-1), (1e-1, np.inf)]:
        print(f"  [{lo:.0e}, {hi:.0e}): {int(((errs >= lo) & (errs < hi)).sum())}")
    print(f"max reward error on common steps: {max(r['reward_err'] for r in rows):.2e}")
    confusion = collections.Counter((r["outcome_ref"], r["outcome_fast"]) for r in rows)
    print("outcomes (reference -> fast):")
    for (a, b), c in sorted(confusion.items()):
        print(f"  {a:>8} -> {b:<8} {c}")
    per_source = collections.defaultdict(lambda: [0, 0, 0, 0])
    for t, r in zip(tasks, rows, strict=True):
        p = per_source[t.scenario]
        p[0] += 1
        p[1] += r["outcome_ref"] == r["outcome_fast"]
        p[2] += r["steps"]
        p[3] += r["steps_ok"]
    print("per task source: episodes, outcome agreement, step agreement")
    for name, (e, o, s, so) in sorted(per_source.items()):
        print(f"  {name:<24} {e:>5} {o / e:8.2%} {so / s:8.2%}")
    bad = [
        i for i, r in enumerate(rows) if r["outcome_ref"] != r["outcome_fast"] or r["steps_ok"] < r["steps"]
    ]
    print(f"mismatching episodes: {len(bad)}")
    for i in bad[: args.show]:
        r = rows[i]
        print(f"  #{i} {tasks[i].describe()}")
        print(
            f"     outcome ref {r['outcome_ref']} ({r['length_ref']} steps)"
            f" fast {r['outcome_fast']} ({r['length_fast']} steps), first bad step {r['first_bad_step']},"
            f" max err {r['max_err']:.3g}"
        )
    print(f"largest observation error: {errs.max():.3g}")
    passed = outcome_ok / n >= OUTCOME_BAR and steps_ok / steps >= BAR
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
