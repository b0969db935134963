#!/usr/bin/env bash
# The exact commands that produced docs/results/*/ (the Directed-MAML paper comparison).
# Run directories go under runs/bench/ (gitignored); reports, plots and results.csv under docs/results/SUITE/.
# Every command is resumable: rerunning it skips completed runs and resumes partial ones.
# Usage: benchmarks/run_paper_comparison.sh [all|cartpole|yield_left|lunarlander|cartpole_new]   (default all)
# Every command pins the run-config defaults of the time it was run (CartPole and LunarLander: inner_lr 0.5 /
# meta_lr 0.003; all: no input standardisation, a constant outer step and a constant directed step, the defaults
# before issue 9's learning design), so rerunning it reproduces the stored results; yield_left also pins the reward
# weights it had then (-10 / 0.2; the shared design is -50 / 1).
OLD_DEFAULTS=(--set input_norm=none --set meta_lr_schedule=constant --set directed_lr_decay=1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
PART=${1:-all}

# 1. CartPole family: all six algorithms, 10 seeds, identical settings for each (~45 min on 2 shared cores).
if [[ $PART == all || $PART == cartpole ]]; then
$PY -m intersection_meta.bench --suite cartpole_physics --seeds 10 --iterations 35 --jobs 2 \
    --out runs/bench/cartpole_physics --report-dir docs/results/cartpole_physics \
    --set meta_batch_size=10 --set episodes_per_task=10 --set directed_episodes=10 --set eval_tasks=0 \
    --set inner_lr=0.5 --set meta_lr=0.003 "${OLD_DEFAULTS[@]}"
fi

# 2. Intersection, yield_left (fast native simulator): MAML vs Directed-MAML, 3 seeds.
# The scenario's own target_return (3.0) is already met by the untrained policy (return_post ~5.4 at
# iteration 1), so the target is raised to 7.0 (chosen before this run).
if [[ $PART == all || $PART == yield_left ]]; then
$PY -m intersection_meta.bench --suite yield_left --algos maml,directed_maml --seeds 3 --iterations 120 --jobs 2 \
    --out runs/bench/yield_left_v2 --report-dir docs/results/yield_left \
    --set meta_batch_size=10 --set episodes_per_task=10 --set directed_episodes=10 --set eval_tasks=0 \
    "${OLD_DEFAULTS[@]}" --set reward.collision_reward=-10 --set reward.high_speed_reward=0.2
fi

# 3. LunarLander family: MAML vs Directed-MAML, 2 seeds, few iterations (an early-training snapshot only:
# ~25 s per iteration here, far from the target return of 0).
if [[ $PART == all || $PART == lunarlander ]]; then
$PY -m intersection_meta.bench --suite lunarlander_gravity_wind --algos maml,directed_maml --seeds 2 \
    --iterations 15 --jobs 2 --out runs/bench/lunarlander_gravity_wind \
    --report-dir docs/results/lunarlander_gravity_wind \
    --set meta_batch_size=10 --set episodes_per_task=10 --set directed_episodes=10 --set eval_tasks=0 \
    --set inner_lr=0.5 --set meta_lr=0.003 "${OLD_DEFAULTS[@]}"
fi

# 4. CartPole under today's defaults (issue 9's design: fitted input statistics, annealed outer step, decayed directed
# step), MAML vs Directed-MAML, 3 seeds, the settings of part 1 otherwise: does the default switch hurt CartPole?
if [[ $PART == all || $PART == cartpole_new ]]; then
$PY -m intersection_meta.bench --suite cartpole_physics --algos maml,directed_maml --seeds 3 --iterations 35 --jobs 2 \
    --out runs/bench/cartpole_physics_new_defaults --report-dir docs/results/cartpole_physics_new_defaults \
    --set meta_batch_size=10 --set episodes_per_task=10 --set directed_episodes=10 --set eval_tasks=0 \
    --set inner_lr=0.5 --set meta_lr=0.003
fi
