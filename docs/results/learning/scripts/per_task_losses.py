"""Where a checkpoint loses against the per-task best plan: its greedy return per held-out task next to the best
plan on that task, the difference of the cars' times to the conflict area at the start, and its actions
(S slower, I idle, F faster):

    python docs/results/learning/scripts/per_task_losses.py RUN [N_TASKS] [N_SHOWN]
"""
import sys, numpy as np, torch
from intersection_meta.checkpoint import load_checkpoint
from intersection_meta.evaluate import HELD_OUT_SEED_KEY
from intersection_meta.seeding import derive_seed
from intersection_meta.envs.fast.vector_env import FastIntersectionVectorEnv
from intersection_meta.scripted import references_for_tasks
ck = load_checkpoint(sys.argv[1])
ntask = int(sys.argv[2]) if len(sys.argv) > 2 else 40
tasks = ck.scenario.sample_tasks(ntask, seed=derive_seed(0, HELD_OUT_SEED_KEY))
refs = references_for_tasks(tasks)
R = np.stack([r.returns for r in refs.plans]); names = [r.name for r in refs.plans]
env = FastIntersectionVectorEnv(tasks, seed=0)
obs, _ = env.reset(); o0 = obs.copy()
n = len(tasks); done = np.zeros(n, bool); ret = np.zeros(n); arr = np.zeros(n, bool); cr = np.zeros(n, bool)
acts = [[] for _ in range(n)]
for t in range(20):
    with torch.no_grad():
        a = ck.policy.distribution(torch.as_tensor(obs)).probs.numpy().argmax(1)
    for i in range(n):
        if not done[i]: acts[i].append(int(a[i]))
    obs, r, te, tr, info = env.step(a)
    ret += np.where(done, 0, r); arr |= ~done & info['arrived']; cr |= ~done & info['crashed']; done |= te | tr
nf = o0.shape[1] // 2
print(f"policy greedy {ret.mean():.3f}  best fixed {refs.best_fixed.name} {refs.best_fixed.return_mean:.3f}  per-task best {R.max(0).mean():.3f}")
loss = R.max(0) - ret
for i in np.argsort(-loss)[: int(sys.argv[3]) if len(sys.argv) > 3 else 15]:
    b = R[:, i].argmax()
    dct = (o0[i, 2*nf-1] - o0[i, nf-1]) * 10
    tk = tasks[i]
    print(f"{tk.task_id} {tk.ego_intent:8s} vs {tk.other_entry:5s} {tk.other_intent:8s} {tk.other_driver:5s} dct0={dct:+5.1f}s  policy {ret[i]:6.2f} {'A' if arr[i] else ('C' if cr[i] else 'T')} | best {names[b]:18s} {R[b,i]:6.2f} | fixed {refs.best_fixed.returns[i]:6.2f} | acts {''.join('SIF'[x] for x in acts[i])}")
