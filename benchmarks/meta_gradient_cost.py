"""Peak memory and time of one second-order (MAML) vs first-order (FOMAML) meta-gradient.

Batch: 20 tasks x 20 episodes x 200 steps of CartPole-sized data (obs_dim 4, 2 actions, 64x64 tanh policy),
synthetic (random observations/actions, reward 1), so only the meta-gradient is measured. Each algorithm
runs in
its own subprocess; peak memory is the growth of the process's max RSS during the meta-gradient.

    python benchmarks/meta_gradient_cost.py [--tasks 20 --episodes 20 --steps 200 --inner-steps 1 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from intersection_meta.config import MetaConfig
from intersection_meta.meta import MetaLearner
from intersection_meta.networks import CategoricalMLP
from intersection_meta.rollout import Episodes


def synthetic_episodes(n_episodes: int, steps: int, seed: int) -> Episodes:
    gen = torch.Generator().manual_seed(seed)
    shape = (steps, n_episodes)
    return Episodes(
        obs=torch.randn(*shape, 4, generator=gen),
        actions=torch.randint(0, 2, shape, generator=gen),
        rewards=torch.ones(shape),
        mask=torch.ones(shape),
        terminated=torch.zeros(shape, dtype=torch.bool),
        lengths=torch.full((n_episodes,), steps),
        last_obs=torch.randn(n_episodes, 4, generator=gen),
        truncated=torch.ones(n_episodes, dtype=torch.bool),
        returns=torch.full((n_episodes,), float(steps)),
    )


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_one(algo: str, tasks: int, episodes: int, steps: int, inner_steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    policy = CategoricalMLP(4, 2, hidden=(64, 64))
    learner = MetaLearner(policy, MetaConfig(algo=algo, inner_lr=0.1, inner_steps=inner_steps))
    batches = [
        (synthetic_episodes(episodes, steps, 2 * k), synthetic_episodes(episodes, steps, 2 * k + 1))
        for k in range(tasks)
    ]
    base = max_rss_mib()
    times = []
    for _ in range(repeats):
        for p in learner.meta_parameters():
            p.grad = None
        start = time.perf_counter()
        loss, _ = learner.outer_loss(learner.params(), batches)
        loss.backward()
        times.append(time.perf_counter() - start)
    return {
        "algo": algo,
        "seconds_median": sorted(times)[len(times) // 2],
        "peak_extra_mib": max_rss_mib() - base,
        "baseline_rss_mib": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--algos", default="maml,fomaml,meta_sgd")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.tasks, args.episodes, args.steps, args.inner_steps, args.repeats)
    if args.child:
        print(json.dumps(run_one(args.child, *sizes)))
        return
    print(
        f"{args.tasks} tasks x {args.episodes} episodes x {args.steps} steps, {args.inner_steps} inner "
        f"step(s), "
        f"1 thread, median of {args.repeats}"
    )
    for algo in args.algos.split(","):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                algo,
                "--tasks",
                str(args.tasks),
                "--episodes",
                str(args.episodes),
                "--steps",
                str(args.steps),
                "--inner-steps",
                str(args.inner_steps),
                "--repeats",
                str(args.repeats),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['algo']:>10}: {r['seconds_median']:.2f} s per meta-gradient, "
            f"peak memory +{r['peak_extra_mib']:.0f} MiB (over {r['baseline_rss_mib']:.0f} MiB baseline)"
        )


if __name__ == "__main__":
    main()
