"""Stable-Baselines3 PPO (a standard non-meta learner) on a scenario's tasks through the fast backend, evaluated
greedily on the train command's held-out tasks against the scripted references (docs/results/learning/README.md,
"Going first"). Needs stable-baselines3, not a dependency of the package:

    pip install stable-baselines3 --no-deps   # it uses the torch, gymnasium, pandas and matplotlib already installed
    python docs/results/learning/scripts/sb3_ppo.py yield_left 3e6 [ENT_COEF]
"""
import sys, time, numpy as np, torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv
from intersection_meta.scenario import load_scenario
from intersection_meta.envs.fast.vector_env import FastIntersectionVectorEnv
from intersection_meta.evaluate import HELD_OUT_SEED_KEY
from intersection_meta.seeding import derive_seed
from intersection_meta.scripted import references_for_tasks

class Wrap(VecEnv):
    def __init__(self, tasks):
        self.env = FastIntersectionVectorEnv(tasks, seed=0)
        super().__init__(len(tasks), self.env.single_observation_space, self.env.single_action_space)
    def reset(self):
        o, _ = self.env.reset(); return o
    def step_async(self, actions): self._a = actions
    def step_wait(self):
        o, r, te, tr, info = self.env.step(self._a)
        done = te | tr
        infos = [{} for _ in range(self.num_envs)]
        if done.any():
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = o[i].copy()
                infos[i]["TimeLimit.truncated"] = bool(tr[i] and not te[i])
            o2, _ = self.env.reset(options={"reset_mask": done}); o = np.where(done[:, None], o2, o)
        return o, r.astype(np.float32), done, infos
    def close(self): pass
    def get_attr(self, n, i=None): return [None]*self.num_envs
    def set_attr(self, *a, **k): pass
    def env_method(self, *a, **k): return [None]*self.num_envs
    def env_is_wrapped(self, *a, **k): return [False]*self.num_envs
    def seed(self, s=None): pass

name, steps = sys.argv[1], int(float(sys.argv[2])); ent = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
torch.set_num_threads(1)
sc = load_scenario(name)
train = sc.sample_tasks(256, seed=11)
held = sc.sample_tasks(40, seed=derive_seed(0, HELD_OUT_SEED_KEY))
refs = references_for_tasks(held)
model = PPO("MlpPolicy", Wrap(train), n_steps=32, batch_size=1024, n_epochs=10, gamma=0.99, gae_lambda=0.95,
            ent_coef=ent, learning_rate=3e-4, verbose=0, seed=0)
t0 = time.time()
def evaluate():
    env = FastIntersectionVectorEnv(held, seed=0); o, _ = env.reset(); n = len(held)
    done = np.zeros(n, bool); ret = np.zeros(n); cr = np.zeros(n, bool); arr = np.zeros(n, bool)
    for t in range(25):
        a, _ = model.predict(o, deterministic=True)
        o, r, te, tr, info = env.step(a)
        ret += np.where(done, 0, r); cr |= ~done & info['crashed']; arr |= ~done & info['arrived']; done |= te | tr
    return ret.mean(), cr.mean(), arr.mean()
chunk = steps // 8
for k in range(8):
    model.learn(chunk, reset_num_timesteps=(k == 0))
    r, c, a = evaluate()
    print(f"{(k+1)*chunk:>9d} steps {time.time()-t0:6.0f}s greedy {r:6.2f} col {c:.3f} arr {a:.3f} | best fixed {refs.best_fixed.return_mean:.2f} per-task best {refs.per_task_best_return:.2f} always go {refs.always_go.return_mean:.2f}", flush=True)
