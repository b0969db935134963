"""E[return | first action] under a checkpoint's sampled policy, on the tasks where "always go" is the per-task
best plan and on the others (100 episodes per task and first action; docs/results/learning/README.md, "Going first"):

    python docs/results/learning/scripts/first_action_value.py RUN/checkpoints/iter_00010.pt
"""
import sys, numpy as np, torch
from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.evaluate import HELD_OUT_SEED_KEY
from intersection_meta.seeding import derive_seed
from intersection_meta.envs.fast.vector_env import FastIntersectionVectorEnv
from intersection_meta.scripted import references_for_tasks
ck = load_checkpoint(sys.argv[1]); E = 100
tasks = ck.scenario.sample_tasks(40, seed=derive_seed(0, HELD_OUT_SEED_KEY))
refs = references_for_tasks(tasks)
go_best = refs.always_go.returns >= np.max(np.stack([r.returns for r in refs.plans]), 0) - 1e-6
torch.manual_seed(0)
res = {}
for a0 in (0, 1, 2):
    rep = [t for t in tasks for _ in range(E)]
    env = FastIntersectionVectorEnv(rep, seed=0)
    obs, _ = env.reset(); n = len(rep)
    done = np.zeros(n, bool); ret = np.zeros(n); cr = np.zeros(n, bool)
    for t in range(20):
        with torch.no_grad():
            a = ck.policy.distribution(torch.as_tensor(obs)).sample().numpy()
        if t == 0: a[:] = a0
        obs, r, te, tr, info = env.step(a)
        ret += np.where(done, 0, r); cr |= ~done & info['crashed']; done |= te | tr
    res[a0] = (ret.reshape(40, E).mean(1), cr.reshape(40, E).mean(1))
for a0, (r, c) in res.items():
    print(f"a0={'SIF'[a0]}: go-best tasks return {r[go_best].mean():6.2f} crash {c[go_best].mean():.2f} | others return {r[~go_best].mean():6.2f} crash {c[~go_best].mean():.2f}")
