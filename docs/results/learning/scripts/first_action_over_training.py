"""Greedy return and P(SLOWER at the first decision) of every numbered checkpoint of a run, on the tasks where
"always go" is the per-task best plan and on the others (docs/results/learning/README.md, "Going first"):

    python docs/results/learning/scripts/first_action_over_training.py RUN
"""
import sys, glob, numpy as np, torch
from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.evaluate import HELD_OUT_SEED_KEY
from intersection_meta.seeding import derive_seed
from intersection_meta.envs.fast.vector_env import FastIntersectionVectorEnv
from intersection_meta.scripted import references_for_tasks
paths = sorted(glob.glob(sys.argv[1] + '/checkpoints/iter_*.pt'))
ck = load_checkpoint(paths[0])
tasks = ck.scenario.sample_tasks(100, seed=derive_seed(0, HELD_OUT_SEED_KEY))
refs = references_for_tasks(tasks)
go_best = refs.always_go.returns >= np.max(np.stack([r.returns for r in refs.plans]), 0) - 1e-6
print('tasks where always-go is per-task best:', go_best.mean(), ' always-go crashes:', refs.always_go.crashed.mean())
for p in paths:
    ck = load_checkpoint(p)
    env = FastIntersectionVectorEnv(tasks, seed=0)
    obs, _ = env.reset(); n = len(tasks)
    with torch.no_grad():
        p0 = ck.policy.distribution(torch.as_tensor(obs)).probs.numpy()
    done = np.zeros(n, bool); ret = np.zeros(n); cr = np.zeros(n, bool)
    for t in range(20):
        with torch.no_grad():
            a = ck.policy.distribution(torch.as_tensor(obs)).probs.numpy().argmax(1)
        obs, r, te, tr, info = env.step(a)
        ret += np.where(done, 0, r); cr |= ~done & info['crashed']; done |= te | tr
    print(f"{p.split('/')[-1]} greedy {ret.mean():6.2f} col {cr.mean():.2f} | P(SLOWER,t0) go-best tasks {p0[go_best,0].mean():.2f}  others {p0[~go_best,0].mean():.2f}")
