"""The open-loop landscape of an intersection scenario: return and collisions of "brake with probability p".

    python benchmarks/learning_landscape.py --scenario cross_straight [--set reward.collision_reward=-20]

At every decision the policy brakes (SLOWER) with probability p and otherwise picks IDLE or FASTER uniformly,
blind to the observation. If the return falls monotonically with p, "always go" is the attractor of every
open-loop policy and a policy-gradient learner that has not yet learned to read the gap is pulled towards it
(docs/learning_investigation.md, table 1).
"""

from __future__ import annotations

import argparse

import numpy as np

from intersection_meta.envs.factory import make_vector_env
from intersection_meta.scenario import load_scenario
from intersection_meta.scripted import FASTER, IDLE, SLOWER


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="cross_straight")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override")
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    scenario = load_scenario(args.scenario, args.set)
    tasks = scenario.sample_tasks(args.tasks, seed=0)
    horizon = int(max(t.settings.duration_s * t.settings.policy_frequency_hz for t in tasks))
    rng = np.random.default_rng(0)
    print(f"{scenario.name} {' '.join(args.set)}: {args.tasks} tasks x {args.repeats} episodes")
    for p_slow in (0.0, 0.1, 0.2, 0.33, 0.5, 0.7, 0.9):
        probs = np.array([p_slow, (1 - p_slow) / 2, (1 - p_slow) / 2])
        returns, crashes = [], []
        for rep in range(args.repeats):
            env = make_vector_env(tasks, seed=rep, backend="fast")
            env.reset(seed=rep)
            n = len(tasks)
            ret, crashed, done = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
            for _ in range(horizon):
                actions = rng.choice([SLOWER, IDLE, FASTER], size=n, p=probs)
                _, reward, terminated, truncated, info = env.step(actions)
                ret += np.where(done, 0.0, reward)
                crashed |= ~done & info["crashed"]
                done |= terminated | truncated
            env.close()
            returns.append(ret.mean())
            crashes.append(crashed.mean())
        print(f"P(SLOWER)={p_slow:.2f}: return {np.mean(returns):6.2f}  collisions {np.mean(crashes):.0%}")


if __name__ == "__main__":
    main()
