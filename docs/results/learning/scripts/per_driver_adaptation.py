"""Before and after adaptation, split by the hidden driver type: does adaptation tell the drivers apart?

For a checkpoint trained on a hidden-parameter scenario (yield_or_not: the other driver is ``idm``, who yields,
or ``constant_speed``, who does not), this adapts on the run's held-out tasks exactly as the final evaluation
does and prints, per driver type and adaptation step: the mean sampled return, the collision share, and the mix
of the first two actions (SLOWER / IDLE / FASTER), and for a latent policy (policy.latent_dim > 0) the mean of its
latent distribution. docs/results/learning/README.md, "Exploration for adaptation",
has the numbers:

    python docs/results/learning/scripts/per_driver_adaptation.py RUN/checkpoints/final.pt [--tasks 40] [--episodes 20]
"""

import argparse

import numpy as np

from intersection_meta.adaptation import adapt_and_rollout
from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.evaluate import HELD_OUT_SEED_KEY
from intersection_meta.seeding import derive_seed

ACTIONS = {0: "SLOWER", 1: "IDLE", 2: "FASTER"}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoint")
parser.add_argument("--tasks", type=int, default=40)
parser.add_argument("--episodes", type=int, default=20)
parser.add_argument("--adapt-steps", type=int, default=1)
args = parser.parse_args()

ck = load_checkpoint(args.checkpoint)
seed = derive_seed(ck.config.train.seed, HELD_OUT_SEED_KEY)
tasks = ck.scenario.sample_tasks(args.tasks, seed=seed)
drivers = np.array([t.other_driver for t in tasks])
result = adapt_and_rollout(
    ck.learner,
    tasks,
    adapt_steps=args.adapt_steps,
    episodes_per_task=args.episodes,
    seed=derive_seed(ck.config.train.seed, HELD_OUT_SEED_KEY, 1),  # as evaluate_checkpoint
    backend="fast",
)
print(f"{args.checkpoint}: {ck.config.meta.algo}, {args.tasks} held-out tasks x {args.episodes} episodes")
for step, per_task in enumerate(result.episodes):
    label = "before adaptation" if step == 0 else f"after {step} step(s)"
    for driver in sorted(set(drivers)):
        eps = [e for e, d in zip(per_task, drivers, strict=True) if d == driver]
        returns = np.concatenate([e.returns.numpy() for e in eps])
        crashed = np.concatenate([e.crashed.numpy() for e in eps])
        mix = []
        for t in (0, 1):
            acts = np.concatenate([e.actions[t][e.mask[t] > 0].numpy() for e in eps])
            mix.append(" ".join(f"{ACTIONS[a][0]} {np.mean(acts == a):4.0%}" for a in ACTIONS))
        latent = ""
        if ck.policy.latent_dim:
            mus = np.stack(
                [p["latent_mu"].numpy() for p, d in zip(result.params[step], drivers, strict=True) if d == driver]
            )
            latent = "  latent mean " + " ".join(f"{m:+.2f}" for m in mus.mean(0))
        print(
            f"  {label:18s} {driver:15s} return {returns.mean():6.2f}  collisions {crashed.mean():5.1%}  "
            f"action 1: {mix[0]}  action 2: {mix[1]}{latent}"
        )
