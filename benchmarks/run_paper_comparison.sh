#!/usr/bin/env bash
# The exact commands that produced docs/results/*/ (Directed-MAML paper comparison).
# Run directories go under runs/bench/ (gitignored); reports, plots and results.csv under docs/results/SUITE/.
# Every command is resumable: rerunning it skips completed runs and resumes partial ones.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/work/venv/bin/python}

# 1. CartPole family: all six algorithms, same settings for each.
$PY -m intersection_meta.bench --suite cartpole_physics --seeds 5 --iterations 35 --jobs 2 \
    --out runs/bench/cartpole_physics --report-dir docs/results/cartpole_physics \
    --set meta_batch_size=10 --set episodes_per_task=10 --set directed_episodes=10 --set eval_tasks=0
