"""Provenance of flat_config_checkpoint.pt: written at commit 2888602 (flat RunConfig, before config sections).

Run then as ``python tests/data/make_flat_config_checkpoint.py OUT_DIR`` and copied from OUT_DIR/checkpoints/last.pt.
It no longer runs against the current code (``make_config`` takes sections now); it is kept as the record.
"""
import torch, json, sys
from pathlib import Path
from intersection_meta.config import make_config
from intersection_meta.scenario import load_scenario
from intersection_meta.trainer import train
from intersection_meta.checkpoint import load_checkpoint
torch.set_num_threads(1)
out = Path(sys.argv[1])
cfg = make_config({"scenario": "cartpole_physics", "algo": "directed_meta_sgd", "iterations": 2, "meta_batch_size": 2,
    "episodes_per_task": 3, "directed_episodes": 3, "eval_tasks": 0, "hidden_sizes": [8], "gae_lambda": 0.95,
    "inner_lr": 0.07, "directed_mode": "fomaml", "directed_lr_decay": 0.9})
res = train(cfg, out, progress=False, tensorboard=False, scenario=load_scenario("cartpole_physics", ["episode.max_steps=20"]))
ck = load_checkpoint(res.checkpoint)
obs = torch.linspace(-1, 1, 5 * 4).reshape(5, 4)
print(json.dumps({"obs": obs.tolist(), "logits": ck.policy.distribution(obs).logits.tolist()}))

# The expected values in flat_config_checkpoint.json were then written by this (same commit, 2888602):
#
#     from intersection_meta.adaptation import adapt_and_rollout
#     ck = load_checkpoint("tests/data/flat_config_checkpoint.pt")
#     tasks = ck.scenario.sample_tasks(2, seed=5)
#     res = adapt_and_rollout(ck.learner, tasks, adapt_steps=1, episodes_per_task=3, seed=7, backend="highway")
#     obs = torch.linspace(-1, 1, 5 * 4).reshape(5, 4)
#     {"logits": ck.policy.distribution(obs).logits, "adapted_logits": [ck.policy.distribution(obs, p).logits
#      for p in res.params[1]], "returns_pre": [e.returns.mean() for e in res.episodes[0]]}
