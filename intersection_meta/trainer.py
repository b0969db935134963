"""The meta-training loop: one readable outer loop for all six algorithms, with logging and checkpoints.

Per meta-iteration ``k`` (seeds derive from ``(run seed, k, phase)``, so results do not depend on workers):

1. *Directed step* (Directed-* only): sample episodes on the scenario's medium task with ``theta`` (and, for a
   mode that adapts first, again with the adapted parameters) and move ``theta`` by a first-order step on them
   (``MetaLearner.directed_update``).
2. *Sampling*: draw ``meta_batch_size`` tasks; collect ``episodes_per_task`` episodes of each with ``theta``.
3. *Inner adaptation*: adapt ``theta`` to each task (``inner_steps`` steps on those episodes), then collect
   post-adaptation episodes with each task's adapted parameters (one batched rollout).
4. *Outer step*: the meta-loss over all tasks (second order for MAML/Meta-SGD, first order for FOMAML);
   one Adam step on the meta-parameters (``train.meta_lr`` under ``train.meta_lr_schedule``), or with
   ``train.outer_optimizer: trpo`` one KL-bounded TRPO step (:mod:`intersection_meta.meta.trpo`).

The multitask baseline (``meta.algo: multitask``) has no inner loop in training: its second batch of every task
is collected with ``theta`` too, and its outer loss is plain policy gradient on both batches.

A run directory holds ``config.yaml`` (resolved run config + scenario + git commit), ``metrics.csv`` (one row
per iteration), ``tasks.jsonl`` (every sampled task with its ID), TensorBoard event files under ``tb/`` and
``checkpoints/last.pt`` (+ numbered ones).
"""

from __future__ import annotations

import csv
import json
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from intersection_meta.adaptation import GroupedPolicy, repeat_tasks
from intersection_meta.checkpoint import (
    CheckpointError,
    git_sha,
    load_raw,
    save_checkpoint,
    spaces_to_dict,
)
from intersection_meta.config import RunConfig, TrainConfig, make_config
from intersection_meta.envs.factory import (
    observation_and_action_spaces,
    resolve_backend,
    simulator_name,
)
from intersection_meta.input_norm import fit_input_norm
from intersection_meta.meta import MetaLearner
from intersection_meta.meta.trpo import TRPOConfig, meta_trpo_step
from intersection_meta.networks import build_policy
from intersection_meta.rollout import Episodes, split_by_task
from intersection_meta.sampler import LocalSampler, Sampler, SlotBatch
from intersection_meta.scenario import Scenario, load_scenario
from intersection_meta.seeding import derive_seed
from intersection_meta.tasks import task_from_dict, task_to_dict

METRIC_COLUMNS: tuple[str, ...] = (
    "iteration",
    "wall_time_s",
    "env_steps",
    "return_pre",
    "return_post",
    "success_rate_pre",
    "success_rate_post",
    "collision_rate_pre",
    "collision_rate_post",
    "inner_loss",
    "outer_loss",
    "meta_lr",
    "outer_kl",
    "outer_step_fraction",
    "directed_lr",
    "directed_step_norm",
    "time_sampling_s",
    "time_inner_s",
    "time_directed_s",
    "time_outer_s",
    "time_iteration_s",
    "peak_rss_mb",
)
#: Columns that legitimately differ between two runs of the same seed (timings, memory).
TIMING_COLUMNS: frozenset[str] = frozenset(
    c for c in METRIC_COLUMNS if c.startswith("time_") or c in ("wall_time_s", "peak_rss_mb")
)

# Seed phases within an iteration.
_PHASE_TASKS, _PHASE_PRE, _PHASE_POST, _PHASE_DIRECTED_IN, _PHASE_DIRECTED_OUT = range(5)
# Seed key of the input-statistics rollouts (policy.input_norm: fitted), disjoint from iterations' keys.
_INPUT_NORM_SEED_KEY = 0x1A0B


def meta_lr_at(train: TrainConfig, iteration: int) -> float:
    """The outer Adam step size at (0-based) ``iteration``: ``meta_lr`` (constant) or
    ``meta_lr * (1 - iteration / iterations)`` (linear, annealed to 0 over the run).

    >>> meta_lr_at(TrainConfig(meta_lr=0.001, meta_lr_schedule="linear", iterations=4), 1)
    0.00075
    """
    if train.meta_lr_schedule == "linear":
        return train.meta_lr * max(0.0, 1.0 - iteration / train.iterations)
    return train.meta_lr


class TrainError(ValueError):
    """A run cannot start or resume (bad output directory, mismatched resume)."""


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    metrics: list[dict[str, float]]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far [MB] (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rate(flags: torch.Tensor | None) -> float:
    return float("nan") if flags is None else float(flags.float().mean())


def _env_steps(*batches: Episodes) -> int:
    return int(sum(int(b.lengths.sum()) for b in batches))


class _Clock:
    """Accumulates wall time per named phase."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def __call__(self, name: str) -> _Clock:
        self._name = name
        return self

    def __enter__(self) -> None:
        self._t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.totals[self._name] = self.totals.get(self._name, 0.0) + time.perf_counter() - self._t0


class MetricsWriter:
    """CSV + TensorBoard writer, ``write(row)`` once per iteration; resuming drops later rows."""

    def __init__(self, out_dir: Path, start_iteration: int, tensorboard: bool = True) -> None:
        self.csv_path = out_dir / "metrics.csv"
        rows = []
        if start_iteration > 0 and self.csv_path.exists():
            with self.csv_path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= start_iteration]
        with self.csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(
                log_dir=str(out_dir / "tb"), purge_step=(start_iteration + 1) if start_iteration else None
            )

    def write(self, row: dict[str, float]) -> None:
        with self.csv_path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRIC_COLUMNS).writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
        if self.tb is not None:
            step = int(row["iteration"])
            for key, value in row.items():
                if key != "iteration" and isinstance(value, int | float) and math.isfinite(value):
                    group = "time" if key.startswith("time_") else ("env" if "rate" in key else "meta")
                    self.tb.add_scalar(f"{group}/{key}", value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TaskLog:
    """``tasks.jsonl``: one line per sampled task (iteration, index, task_id, full task), so any crossing seen in
    training can be named by its ID and replayed (``python -m viz.replay --checkpoint RUN --task-id ID``)."""

    def __init__(self, out_dir: Path, start_iteration: int) -> None:
        self.path = out_dir / "tasks.jsonl"
        kept = []
        if start_iteration > 0 and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line and json.loads(line)["iteration"] <= start_iteration
            ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, iteration: int, tasks: list) -> None:
        with self.path.open("a") as fh:
            for index, task in enumerate(tasks):
                fh.write(
                    json.dumps(
                        {"iteration": iteration, "index": index, "task_id": task.task_id, "task": task_to_dict(task)}
                    )
                    + "\n"
                )


def find_logged_task(run_dir: Path, task_id: str):
    """The task with ``task_id`` from a run's ``tasks.jsonl`` (training) or ``evaluation.json`` (held-out), or
    None."""
    run_dir = Path(run_dir)
    if (run_dir / "tasks.jsonl").exists():
        with (run_dir / "tasks.jsonl").open() as fh:
            for line in fh:
                record = json.loads(line)
                if record["task_id"] == task_id:
                    return task_from_dict(record["task"])
    if (run_dir / "evaluation.json").exists():
        for record in json.loads((run_dir / "evaluation.json").read_text()).get("per_task", []):
            if record["task_id"] == task_id:
                return task_from_dict(record["task"])
    return None


def read_metrics(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as fh:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()} for r in csv.DictReader(fh)
        ]


#: The bar line: no description (the command prints what it trains first), so the bar keeps its width.
PROGRESS_BAR_FORMAT = "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it [{elapsed}<{remaining}]"


def format_progress_stats(row: dict[str, float]) -> str:
    """The statistics line under the bar, e.g. ``return -0.13 -> 0.74  success 70%  crash 10%  1.2 s/it``
    (under 80 columns for any realistic value)."""
    text = f"return {row['return_pre']:.2f} -> {row['return_post']:.2f}"
    if not math.isnan(row["success_rate_post"]):
        text += f"  success {row['success_rate_post']:.0%}  crash {row['collision_rate_post']:.0%}"
    return text + f"  {row['time_iteration_s']:.1f} s/it"


class ProgressBar:
    """Two lines on stderr: a tqdm bar, and under it the latest iteration's statistics (post-adaptation rates),
    so neither squeezes the other at 80 columns. The last statistics stay printed under the finished bar."""

    def __init__(self, total: int, initial: int, file: Any = None) -> None:
        from tqdm import tqdm

        self.file = sys.stderr if file is None else file
        self.bar = tqdm(
            total=total, initial=initial, unit="it", file=self.file, dynamic_ncols=True, bar_format=PROGRESS_BAR_FORMAT
        )
        self.stats = tqdm(total=0, bar_format="{desc}", file=self.file, position=1, leave=False, dynamic_ncols=True)
        self.last = ""

    def update(self, row: dict[str, float]) -> None:
        self.last = format_progress_stats(row)
        self.stats.set_description_str(self.last)
        self.bar.update(1)

    def close(self) -> None:
        self.stats.close()
        self.bar.close()
        if self.last:
            print(self.last, file=self.file)


class Trainer:
    """Holds the run's state (policy, learner, optimiser, scenario) and runs meta-iterations."""

    def __init__(self, config: RunConfig, scenario: Scenario | None = None, sampler: Sampler | None = None) -> None:
        self.config = config
        self.sampler = sampler or LocalSampler()  # where episodes are collected (see sampler.py)
        self.scenario = scenario or load_scenario(config.train.scenario)
        self.backend = resolve_backend(config.env.backend, self.scenario.medium_task())  # for the run's records
        probe_task = self.scenario.medium_task()
        self.obs_space, self.act_space = observation_and_action_spaces(probe_task)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            torch.manual_seed(derive_seed(config.train.seed, 0xC0FFEE))
            self.policy = build_policy(
                self.obs_space,
                self.act_space,
                hidden_sizes=config.policy.hidden_sizes,
                input_norm=config.policy.input_norm,
            )
        if config.policy.input_norm == "fitted":  # statistics of the fresh (near-uniform) policy's rollouts
            seed = derive_seed(config.train.seed, _INPUT_NORM_SEED_KEY)
            self.policy.set_input_norm(fit_input_norm(self.scenario, self.policy, config.env, seed=seed))
        self.learner = MetaLearner(self.policy, config.meta, config.pg)
        self.optimizer = torch.optim.Adam(self.learner.meta_parameters(), lr=config.train.meta_lr)
        self.git_sha = git_sha()  # once per run: a subprocess per checkpoint would cost every iteration
        self.iteration = 0
        self.env_steps = 0
        self.wall_time_s = 0.0
        self.last_tasks: list = []  # the meta-batch of the latest step, logged to tasks.jsonl

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "algo": self.config.meta.algo,
            "iteration": self.iteration,
            "policy_state": self.policy.state_dict(),
            "meta_state": self.learner.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "scenario": self.scenario.to_dict(),
            "spaces": spaces_to_dict(self.obs_space, self.act_space),
            "git_sha": self.git_sha,
            "extra": {"env_steps": self.env_steps, "wall_time_s": self.wall_time_s, "backend": self.backend},
        }

    def load_state(self, raw: dict[str, Any]) -> None:
        self.policy.load_state_dict(raw["policy_state"])
        if raw["meta_state"]:
            self.learner.load_state_dict(raw["meta_state"])
        self.optimizer.load_state_dict(raw["optimizer_state"])
        self.iteration = int(raw["iteration"])
        self.env_steps = int(raw.get("extra", {}).get("env_steps", 0))
        self.wall_time_s = float(raw.get("extra", {}).get("wall_time_s", 0.0))

    # -- one meta-iteration ----------------------------------------------------------------------
    def _vector_env(self, tasks: list) -> SlotBatch:
        return self.sampler.open(tasks, self.config.env)

    def step(self) -> dict[str, float]:
        """Run one meta-iteration and return its metrics row."""
        cfg, learner, k, clock = self.config.train, self.learner, self.iteration, _Clock()
        t_start = time.perf_counter()
        steps = 0
        directed_info = {"directed_lr": float("nan"), "directed_step_norm": float("nan")}

        if learner.directed is not None:
            medium = [self.scenario.medium_task()] * cfg.directed_episodes
            with clock("sampling"):
                medium_env = self._vector_env(medium)
            try:
                with clock("sampling"):
                    seed_in = derive_seed(cfg.seed, k, _PHASE_DIRECTED_IN)
                    med_in = medium_env.collect(self.policy, seed=seed_in)
                med_out = None
                if learner.directed.adapt_first:
                    with clock("directed"):
                        adapted = learner.adapt(learner.params(), med_in, differentiable=False)
                    with clock("sampling"):
                        grouped = GroupedPolicy(self.policy, [adapted], len(medium))
                        seed_out = derive_seed(cfg.seed, k, _PHASE_DIRECTED_OUT)
                        med_out = medium_env.collect(grouped, seed=seed_out)
                    steps += _env_steps(med_out)
            finally:
                medium_env.close()
            steps += _env_steps(med_in)
            with clock("directed"):
                directed_info = learner.directed_update(med_in, med_out, iteration=k)

        tasks = self.scenario.sample_tasks(cfg.meta_batch_size, seed=derive_seed(cfg.seed, k, _PHASE_TASKS))
        self.last_tasks = tasks
        slots = repeat_tasks(tasks, cfg.episodes_per_task)
        with clock("sampling"):
            vec_env = self._vector_env(slots)
        try:
            with clock("sampling"):
                pre = vec_env.collect(self.policy, seed=derive_seed(cfg.seed, k, _PHASE_PRE))
            pre_by_task = split_by_task(pre, len(tasks))
            with clock("inner"):
                adapted = self._second_batch_params(pre_by_task)
            with clock("sampling"):
                grouped = GroupedPolicy(self.policy, adapted, cfg.episodes_per_task)
                post = vec_env.collect(grouped, seed=derive_seed(cfg.seed, k, _PHASE_POST))
        finally:
            vec_env.close()
        post_by_task = split_by_task(post, len(tasks))
        steps += _env_steps(pre, post)

        with clock("outer"):
            outer_info = self._outer_step(list(zip(pre_by_task, post_by_task, strict=True)))

        self.iteration += 1
        self.env_steps += steps
        elapsed = time.perf_counter() - t_start
        self.wall_time_s += elapsed
        return {
            "iteration": self.iteration,
            "wall_time_s": self.wall_time_s,
            "env_steps": self.env_steps,
            "return_pre": float(pre.returns.mean()),
            "return_post": float(post.returns.mean()),
            "success_rate_pre": _rate(pre.arrived),
            "success_rate_post": _rate(post.arrived),
            "collision_rate_pre": _rate(pre.crashed),
            "collision_rate_post": _rate(post.crashed),
            **outer_info,
            **{key: float(v) for key, v in directed_info.items()},
            "time_sampling_s": clock.totals.get("sampling", 0.0),
            "time_inner_s": clock.totals.get("inner", 0.0),
            "time_directed_s": clock.totals.get("directed", 0.0),
            "time_outer_s": clock.totals.get("outer", 0.0),
            "time_iteration_s": elapsed,
            "peak_rss_mb": peak_rss_mb(),
        }


    def _second_batch_params(self, pre_by_task: list[Episodes]) -> list[dict[str, torch.Tensor]]:
        """The parameters each task's second batch is collected with: ``adapt(theta, pre_i)`` (detached), or
        ``theta`` itself for the multitask baseline (no inner loop in training)."""
        theta = self.learner.params()
        if self.learner.spec.multitask:
            return [{n: v.detach() for n, v in theta.items()} for _ in pre_by_task]
        return [self.learner.adapt(theta, eps, differentiable=False) for eps in pre_by_task]

    def _outer_step(self, batches: list[tuple[Episodes, Episodes]]) -> dict[str, float]:
        """One outer update of the meta-parameters on ``[(pre_i, post_i)]``: Adam (``meta_lr`` at this
        iteration's schedule, gradient clipping) or TRPO (``trpo_max_kl``).

        Returns:
            ``inner_loss``, ``outer_loss`` (before the step), ``meta_lr`` (NaN for TRPO), ``outer_kl`` and
            ``outer_step_fraction`` (the accepted KL and fraction of the full TRPO step; NaN for Adam).
        """
        cfg, learner = self.config.train, self.learner
        if cfg.outer_optimizer == "trpo":
            info = meta_trpo_step(learner, batches, TRPOConfig(max_kl=cfg.trpo_max_kl))
            return {
                "inner_loss": float("nan"),
                "outer_loss": info.loss_before,
                "meta_lr": float("nan"),
                "outer_kl": info.kl,
                "outer_step_fraction": info.step_fraction,
            }
        lr = meta_lr_at(cfg, self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss, info = learner.outer_loss(learner.params(), batches)
        loss.backward()
        if cfg.outer_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(learner.meta_parameters(), cfg.outer_grad_clip)
        self.optimizer.step()
        return {
            "inner_loss": info["inner_loss"],
            "outer_loss": info["outer_loss"],
            "meta_lr": lr,
            "outer_kl": float("nan"),
            "outer_step_fraction": float("nan"),
        }


def _write_run_config(out_dir: Path, trainer: Trainer) -> None:
    text = yaml.safe_dump(
        {
            "git_sha": trainer.git_sha,
            "backend": trainer.backend,
            "simulator": simulator_name(trainer.backend, trainer.scenario.medium_task()),
            "run": trainer.config.to_dict(),
            "scenario": trainer.scenario.to_dict(),
        },
        sort_keys=False,
    )
    tmp = out_dir / "config.yaml.tmp"
    tmp.write_text(text)
    tmp.replace(out_dir / "config.yaml")


def default_out_dir(config: RunConfig, scenario_name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{scenario_name}__{config.meta.algo}__s{config.train.seed}__{stamp}"


def train(
    config: RunConfig,
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = True,
    on_iteration: Callable[[dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    scenario: Scenario | None = None,
    sampler: Sampler | None = None,
) -> TrainResult:
    """Meta-train according to ``config`` into ``out_dir`` (created; must be new unless ``resume``).

    Args:
        scenario: the (possibly overridden) scenario; default ``load_scenario(config.train.scenario)``.
        resume: continue the run in ``out_dir`` from ``checkpoints/last.pt``; its stored config is used
            and must not conflict with ``config`` (only ``iterations`` may be raised).
        stop_after: stop after this many iterations in this call (for tests of interruption); the run stays
            resumable.
        sampler: where episodes are collected (default: :class:`~intersection_meta.sampler.LocalSampler`, in
            this process; ``distributed.RaySampler`` for Ray actors, with identical metrics). Not closed here.

    Raises:
        TrainError: the output directory is unusable or the resume does not match.
    """
    if resume:
        if out_dir is None:
            raise TrainError("--resume needs the run directory")
        ckpt_path = Path(out_dir) / "checkpoints" / "last.pt"
        try:
            raw = load_raw(ckpt_path)
        except CheckpointError as exc:
            raise TrainError(f"cannot resume: {exc}") from None
        stored = make_config(raw["config"], source=f"{ckpt_path} (config)")
        iterations = max(config.train.iterations, stored.train.iterations)
        config = make_config({"train.iterations": iterations}, base=stored)
        trainer = Trainer(config, Scenario.from_dict(raw["scenario"], source=f"{ckpt_path} (scenario)"), sampler)
        trainer.load_state(raw)
    else:
        scenario = scenario or load_scenario(config.train.scenario)
        out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config, scenario.name)
        if (out_dir / "checkpoints" / "last.pt").exists():
            raise TrainError(
                f"{out_dir} already holds a run; use --resume {out_dir} to continue it or choose another --out"
            )
        trainer = Trainer(config, scenario, sampler)
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_run_config(out_dir, trainer)
    writer = MetricsWriter(out_dir, trainer.iteration, tensorboard=tensorboard)
    task_log = TaskLog(out_dir, trainer.iteration)
    rows: list[dict[str, float]] = []
    bar = ProgressBar(config.train.iterations, trainer.iteration) if progress else None
    last = out_dir / "checkpoints" / "last.pt"
    try:
        done_here = 0
        while trainer.iteration < config.train.iterations and (stop_after is None or done_here < stop_after):
            row = trainer.step()
            done_here += 1
            writer.write(row)
            task_log.write(trainer.iteration, trainer.last_tasks)
            rows.append(row)
            save_checkpoint(last, trainer.state())
            if trainer.iteration % config.train.checkpoint_every == 0 or trainer.iteration == config.train.iterations:
                save_checkpoint(out_dir / "checkpoints" / f"iter_{trainer.iteration:05d}.pt", trainer.state())
            if on_iteration is not None:
                on_iteration(row)
            if bar is not None:
                bar.update(row)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
    return TrainResult(out_dir=out_dir, checkpoint=last, metrics=rows)
