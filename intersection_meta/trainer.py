"""The meta-training loop: one readable outer loop for all six algorithms, with logging and checkpoints.

Per meta-iteration ``k`` (seeds derive from ``(run seed, k, phase)``, so results do not depend on workers):

1. *Directed step* (Directed-* only): sample episodes on the scenario's medium task with ``theta`` (and, for a
   mode that adapts first, again with the adapted parameters) and move ``theta`` by a first-order step on them
   (``MetaLearner.directed_update``).
2. *Sampling*: draw ``meta_batch_size`` tasks; collect ``episodes_per_task`` episodes of each with ``theta``.
3. *Inner adaptation*: adapt ``theta`` to each task by ``inner_steps`` policy-gradient steps, each on fresh
   episodes collected with the task's current parameters (the first batch is step 2's; as the evaluation adapts),
   then collect post-adaptation episodes with each task's adapted parameters (one batched rollout per phase).
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

import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
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
from intersection_meta.config import RunConfig, TrainConfig, make_config, stored_config
from intersection_meta.criticality import CRITICALITY_KEYS, finite_mean
from intersection_meta.envs.factory import (
    observation_and_action_spaces,
    resolve_backend,
    simulator_name,
)
from intersection_meta.gap_acceptance import imitate_gap_acceptance, require_rule_inputs
from intersection_meta.input_norm import fit_input_norm
from intersection_meta.meta import MetaLearner
from intersection_meta.health import (
    CollapseMonitor,
    TrainingDiverged,
    first_non_finite,
    invalid_policy_output,
    is_invalid_distribution,
)
from intersection_meta.meta.trpo import TRPOConfig, meta_trpo_step
from intersection_meta.networks import build_policy
from intersection_meta.registry import ALGORITHMS
from intersection_meta.rollout import Episodes, split_by_task
from intersection_meta.runlog import (
    JsonLinesLog,
    MetricsLog,
    RunLock,
    read_csv_rows,
    read_json_lines,
    remove_stale_temporaries,
)
from intersection_meta.sampler import LocalSampler, Sampler, SlotBatch
from intersection_meta.scenario import Scenario, apply_overrides, load_scenario
from intersection_meta.schema import abbreviate, shorten
from intersection_meta.seeding import derive_seed
from intersection_meta.tasks import task_from_dict, task_to_dict

#: Columns of ``metrics.csv``; the criticality columns are means over the batch's episodes with a finite value
#: (:func:`intersection_meta.criticality.finite_mean`; NaN on the auxiliary suites or when none is finite).
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
    *(f"{key}_{phase}" for key in CRITICALITY_KEYS for phase in ("pre", "post")),
    "inner_loss",
    "outer_loss",
    "meta_lr",
    "outer_kl",
    "outer_step_fraction",
    "outer_grad_norm",
    "policy_entropy",
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
# Seed key of the warm start's imitation data and initialisation (policy.warm_start).
_WARM_START_SEED_KEY = 0x1A0C


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


def criticality_means(episodes: Episodes, phase: str) -> dict[str, float]:
    """``{KEY_phase: mean}`` of the episodes' criticality metrics over the finite values (NaN without them)."""
    crit = episodes.criticality or {}
    return {f"{key}_{phase}": finite_mean(crit[key].numpy()) if key in crit else float("nan")
            for key in CRITICALITY_KEYS}


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
    """``metrics.csv`` (crash-safe, :class:`~intersection_meta.runlog.MetricsLog`) + TensorBoard, ``write(row)``
    once per iteration; starting at ``start_iteration`` keeps the earlier rows and drops later ones."""

    def __init__(self, out_dir: Path, start_iteration: int, tensorboard: bool = True) -> None:
        self.csv_path = out_dir / "metrics.csv"
        self.log = MetricsLog(self.csv_path, METRIC_COLUMNS)
        self.log.start(keep_through=start_iteration)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(
                log_dir=str(out_dir / "tb"), purge_step=(start_iteration + 1) if start_iteration else None
            )

    def write(self, row: dict[str, float]) -> None:
        self.log.append(row)
        if self.tb is not None:
            step = int(row["iteration"])
            for key, value in row.items():
                if key != "iteration" and isinstance(value, int | float) and math.isfinite(value):
                    env_key = "rate" in key or key.rsplit("_", 1)[0] in CRITICALITY_KEYS
                    group = "time" if key.startswith("time_") else ("env" if env_key else "meta")
                    self.tb.add_scalar(f"{group}/{key}", value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TaskLog:
    """``tasks.jsonl``: one line per sampled task (iteration, index, task_id, full task), so any crossing seen in
    training can be named by its ID and replayed (``python -m viz.replay --checkpoint RUN --task-id ID``)."""

    def __init__(self, out_dir: Path, start_iteration: int) -> None:
        self.log = JsonLinesLog(out_dir / "tasks.jsonl")
        self.path = self.log.path
        self.log.start(keep_through=start_iteration)

    def write(self, iteration: int, tasks: list) -> None:
        self.log.append(
            {"iteration": iteration, "index": index, "task_id": task.task_id, "task": task_to_dict(task)}
            for index, task in enumerate(tasks)
        )


def find_logged_task(run_dir: Path, task_id: str):
    """The task with ``task_id`` from a run's ``tasks.jsonl`` (training) or ``evaluation.json`` (held-out), or
    None."""
    run_dir = Path(run_dir)
    if (run_dir / "tasks.jsonl").exists():
        for record in read_json_lines(run_dir / "tasks.jsonl"):
            if record.get("task_id") == task_id:
                return task_from_dict(record["task"])
    if (run_dir / "evaluation.json").exists():
        for record in json.loads((run_dir / "evaluation.json").read_text()).get("per_task", []):
            if record["task_id"] == task_id:
                return task_from_dict(record["task"])
    return None


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats (empty cells are NaN; a partial last line is skipped)."""
    return [
        {k: float(v) if v not in ("", None) else float("nan") for k, v in r.items()} for r in read_csv_rows(path)
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
                latent_dim=config.policy.latent_dim,
            )
        if config.policy.input_norm == "fitted":  # statistics of the fresh (near-uniform) policy's rollouts
            seed = derive_seed(config.train.seed, _INPUT_NORM_SEED_KEY)
            self.policy.set_input_norm(fit_input_norm(self.scenario, self.policy, config.env, seed=seed))
        self.warm_start_accuracy: float | None = None  # share of imitation states where the policy acts as the rule
        if config.policy.warm_start != "none":  # after the input statistics: they stay those of exploration
            where = f"policy.warm_start={config.policy.warm_start} on scenario {self.scenario.name!r}"
            if self.scenario.kind != "intersection":
                raise TrainError(f"{where}: the rule drives intersection scenarios only, not {self.scenario.kind}")
            try:
                require_rule_inputs(probe_task.settings, where)
            except ValueError as exc:
                raise TrainError(str(exc)) from None
            seed = derive_seed(config.train.seed, _WARM_START_SEED_KEY)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.warm_start_accuracy = imitate_gap_acceptance(
                    self.policy, self.scenario, seed, go_first_latent=config.policy.warm_start == "rule_or_go"
                )
        self.learner = MetaLearner(self.policy, config.meta, config.pg)
        self.optimizer = torch.optim.Adam(self.learner.meta_parameters(), lr=config.train.meta_lr)
        self.git_sha = git_sha()  # once per run: a subprocess per checkpoint would cost every iteration
        self.iteration = 0
        self.env_steps = 0
        self.wall_time_s = 0.0
        self.last_tasks: list = []  # the meta-batch of the latest step, logged to tasks.jsonl
        self.probe_obs: torch.Tensor | None = None  # observations to check the updated policy on (health)

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
                med_out, med_inner = None, med_in  # med_inner: one batch, or one per inner step
                if learner.directed.adapt_first:
                    inner, adapted_list, extra = self._adapt_tasks(
                        medium_env, [med_in], clock, group_size=len(medium), phase=_PHASE_DIRECTED_IN, timer="directed"
                    )
                    (med_inner,), (adapted,) = inner, adapted_list
                    steps += sum(_env_steps(e) for e in extra)
                    with clock("sampling"):
                        grouped = GroupedPolicy(self.policy, [adapted], len(medium))
                        seed_out = derive_seed(cfg.seed, k, _PHASE_DIRECTED_OUT)
                        med_out = medium_env.collect(grouped, seed=seed_out)
                    steps += _env_steps(med_out)
            finally:
                medium_env.close()
            steps += _env_steps(med_in)
            with clock("directed"):
                directed_info = learner.directed_update(med_inner, med_out, iteration=k)

        tasks = self.scenario.sample_tasks(cfg.meta_batch_size, seed=derive_seed(cfg.seed, k, _PHASE_TASKS))
        self.last_tasks = tasks
        slots = repeat_tasks(tasks, cfg.episodes_per_task)
        with clock("sampling"):
            vec_env = self._vector_env(slots)
        try:
            with clock("sampling"):
                pre = vec_env.collect(self.policy, seed=derive_seed(cfg.seed, k, _PHASE_PRE))
            pre_by_task = split_by_task(pre, len(tasks))
            entropy = mean_entropy(self.policy, pre)
            self.probe_obs = pre.obs[0]  # first observation of every episode: checked after the outer step
            inner_by_task, adapted, extra = self._adapt_tasks(vec_env, pre_by_task, clock)
            steps += sum(_env_steps(e) for e in extra)
            with clock("sampling"):
                grouped = GroupedPolicy(self.policy, adapted, cfg.episodes_per_task)
                post = vec_env.collect(grouped, seed=derive_seed(cfg.seed, k, _PHASE_POST))
        finally:
            vec_env.close()
        post_by_task = split_by_task(post, len(tasks))
        steps += _env_steps(pre, post)

        with clock("outer"):
            outer_info = self._outer_step(list(zip(inner_by_task, post_by_task, strict=True)))

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
            **criticality_means(pre, "pre"),
            **criticality_means(post, "post"),
            **outer_info,
            "policy_entropy": entropy,
            **{key: float(v) for key, v in directed_info.items()},
            "time_sampling_s": clock.totals.get("sampling", 0.0),
            "time_inner_s": clock.totals.get("inner", 0.0),
            "time_directed_s": clock.totals.get("directed", 0.0),
            "time_outer_s": clock.totals.get("outer", 0.0),
            "time_iteration_s": elapsed,
            "peak_rss_mb": peak_rss_mb(),
        }

    def _adapt_tasks(
        self,
        vec_env: SlotBatch,
        pre_by_task: list[Episodes],
        clock: _Clock,
        *,
        group_size: int | None = None,
        phase: int = _PHASE_PRE,
        timer: str = "inner",
    ) -> tuple[list[Any], list[dict[str, torch.Tensor]], list[Episodes]]:
        """The inner loop of every task: ``(inner data per task, adapted parameters per task, extra batches)``.

        One inner step adapts on the pre-adaptation episodes. With ``meta.inner_steps = K > 1``, step ``j`` adapts
        on fresh episodes collected with the parameters after step ``j - 1`` (one batched rollout per step, seed
        ``(run seed, k, phase, j)``), and a task's inner data is the list of its ``K`` batches, which
        :meth:`MetaLearner.adapt` replays in order. The multitask baseline has no inner loop in training: its
        second batch is collected with ``theta`` itself. ``group_size`` (episodes per task; default
        ``train.episodes_per_task``), ``phase`` and ``timer`` (the clock the adaptation is timed on) serve the
        directed step's medium task too.
        """
        learner, cfg = self.learner, self.config.train
        group_size = cfg.episodes_per_task if group_size is None else group_size
        theta = learner.params()
        if learner.spec.multitask:
            return pre_by_task, [{n: v.detach() for n, v in theta.items()} for _ in pre_by_task], []
        inner_steps = self.config.meta.inner_steps
        with clock(timer):
            current = [learner.adapt(theta, eps, steps=1, differentiable=False) for eps in pre_by_task]
        if inner_steps == 1:
            return pre_by_task, current, []
        inner_by_task: list[Any] = [[eps] for eps in pre_by_task]
        extra = []
        for j in range(1, inner_steps):
            with clock("sampling"):
                grouped = GroupedPolicy(self.policy, current, group_size)
                batch = vec_env.collect(grouped, seed=derive_seed(cfg.seed, self.iteration, phase, j))
            extra.append(batch)
            by_task = split_by_task(batch, len(pre_by_task))
            with clock(timer):
                current = [learner.adapt(p, e, steps=1, differentiable=False) for p, e in zip(current, by_task,
                                                                                           strict=True)]
            for data, eps in zip(inner_by_task, by_task, strict=True):
                data.append(eps)
        return inner_by_task, current, extra

    def _outer_step(self, batches: list[tuple[Episodes, Episodes]]) -> dict[str, float]:
        """One outer update of the meta-parameters on ``[(pre_i, post_i)]``: Adam (``meta_lr`` at this
        iteration's schedule, gradient clipping) or TRPO (``trpo_max_kl``).

        Returns:
            ``outer_loss`` (before the step), ``meta_lr`` (NaN for TRPO), ``outer_kl`` and ``outer_step_fraction``
            (the accepted KL and fraction of the full TRPO step; NaN for Adam); for Adam also ``inner_loss`` and
            ``outer_grad_norm`` (before clipping), which TRPO does not have (the health checks skip absent keys).
        """
        cfg, learner = self.config.train, self.learner
        if cfg.outer_optimizer == "trpo":
            info = meta_trpo_step(learner, batches, TRPOConfig(max_kl=cfg.trpo_max_kl))
            return {  # no inner_loss and outer_grad_norm: TRPO has neither (left empty in metrics.csv)
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
        grad_norm = outer_gradient_norm(learner.meta_parameters(), cfg.outer_grad_clip)
        self.optimizer.step()
        return {
            "outer_grad_norm": grad_norm,
            "inner_loss": info["inner_loss"],
            "outer_loss": info["outer_loss"],
            "meta_lr": lr,
            "outer_kl": float("nan"),
            "outer_step_fraction": float("nan"),
        }


def outer_gradient_norm(parameters: Any, max_norm: float) -> float:
    """The global norm of the parameters' gradients before clipping; clips them to ``max_norm`` when > 0."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params]))


def mean_entropy(policy: Any, episodes: Episodes) -> float:
    """Mean entropy [nats] of ``policy``'s action distribution over the valid steps of ``episodes``."""
    with torch.no_grad():
        entropy = policy.distribution(episodes.obs).entropy()
        mask = episodes.mask
        return float((entropy * mask).sum() / mask.sum().clamp_min(1.0))


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


def resumed_config(stored: RunConfig, requested: RunConfig) -> RunConfig:
    """The config a resumed run continues with: ``stored``, with ``train.iterations`` raised when ``requested``
    asks for more (never lowered).

    Raises:
        TrainError: ``requested`` differs from ``stored`` in any other key (named, with both values).
    """
    have, want = stored.flat(), requested.flat()
    differ = [key for key, value in want.items() if key != "train.iterations" and value != have[key]]
    if differ:
        asked = ", ".join(f"{key}={abbreviate(want[key])} (the run has {abbreviate(have[key])})" for key in differ)
        raise TrainError(
            f"cannot resume with {asked}: a resume continues the stored run (only --iterations can raise its "
            "length); start a new run with --out to change it"
        )
    return make_config({"train.iterations": max(have["train.iterations"], want["train.iterations"])}, base=stored)


def resumed_scenario(stored: Scenario, overrides: Sequence[Any]) -> Scenario:
    """``stored``; scenario ``--set`` overrides on a resume are accepted only when they change nothing.

    Raises:
        TrainError: an override changes the stored scenario (naming the key).
    """
    if not overrides:
        return stored
    wanted = Scenario.from_dict(apply_overrides(stored.to_dict(), overrides, stored.source), source="--set")
    have, want = stored.to_dict(), wanted.to_dict()
    changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if changed:
        raise TrainError(
            f"cannot resume with a different scenario ({', '.join(changed)} changed by --set): a resume continues "
            "the stored run; start a new run with --out to change it"
        )
    return stored


def read_run(run_dir: Path) -> tuple[dict[str, Any], RunConfig, Scenario]:
    """The checkpoint ``RUN/checkpoints/last.pt`` of a run to resume: ``(raw checkpoint, config, scenario)``.

    Raises:
        TrainError: no checkpoint, or an unreadable one.
    """
    ckpt_path = Path(run_dir) / "checkpoints" / "last.pt"
    if not ckpt_path.is_file():
        raise TrainError(f"cannot resume: {ckpt_path}: no such checkpoint file")
    try:
        raw = load_raw(ckpt_path)
    except CheckpointError as exc:
        raise TrainError(f"cannot resume: {exc}") from None
    config = stored_config(raw["config"], source=f"{ckpt_path} (config)")
    return raw, config, Scenario.from_dict(raw["scenario"], source=f"{ckpt_path} (scenario)")


def _max_episode_steps(task: Any) -> int:
    if getattr(task, "kind", "") == "intersection":
        s = task.settings
        return max(1, math.ceil(s.duration_s * s.policy_frequency_hz))
    return int(getattr(task, "max_episode_steps", 1000))


def iteration_memory_estimate_bytes(config: RunConfig, obs_dim: int, max_episode_steps: int) -> int:
    """A lower bound of one meta-iteration's memory: the padded batches (one per inner step, plus the
    post-adaptation one; two for the multitask baseline) with their observations, actions, rewards and masks, and
    the policy's activations kept for the outer gradient, at 4 bytes a number."""
    t = config.train
    batches = 2 if ALGORITHMS[config.meta.algo].multitask else config.meta.inner_steps + 1
    per_step = 4 * (obs_dim + 6 + 2 * sum(config.policy.hidden_sizes))
    return batches * t.meta_batch_size * t.episodes_per_task * max_episode_steps * per_step


def physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: RunConfig, trainer: Trainer) -> None:
    """Refuse up front a meta-batch that cannot fit in this machine's memory.

    Raises:
        TrainError: naming the sizes and the estimate.
    """
    steps = _max_episode_steps(trainer.scenario.medium_task())
    need = iteration_memory_estimate_bytes(config, int(trainer.obs_space.shape[0]), steps)
    have = physical_memory_bytes()
    if have is not None and need > have:
        t = config.train
        raise TrainError(
            f"train.meta_batch_size={t.meta_batch_size} x train.episodes_per_task={t.episodes_per_task} x up to "
            f"{steps} steps needs at least {need / 2**30:.3g} GiB per iteration (estimate), more than this "
            f"machine's {have / 2**30:.3g} GiB of memory; lower train.meta_batch_size or train.episodes_per_task"
        )


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
    on_warning: Callable[[str], None] | None = None,
) -> TrainResult:
    """Meta-train according to ``config`` into ``out_dir`` (created; must be new unless ``resume``).

    The process holds the run directory's lock (:class:`~intersection_meta.runlog.RunLock`) throughout, removes
    temporaries a killed process left, and writes the logs crash-safely (:mod:`intersection_meta.runlog`).

    Args:
        scenario: the (possibly overridden) scenario; default ``load_scenario(config.train.scenario)``.
        resume: continue the run in ``out_dir`` from ``checkpoints/last.pt``; its stored config is used
            and must equal ``config`` except ``train.iterations``, which can only raise the run's length
            (:func:`resumed_config`).
        stop_after: stop after this many iterations in this call (for tests of interruption); the run stays
            resumable.
        sampler: where episodes are collected (default: :class:`~intersection_meta.sampler.LocalSampler`, in
            this process; ``distributed.RaySampler`` for Ray actors, with identical metrics). Not closed here.
        on_warning: called with each one-line health warning (default: printed to stderr).

    Raises:
        TrainError: the output directory is unusable or busy, the resume does not match, or the meta-batch
            cannot fit in memory.
        TrainingDiverged: a loss, gradient or parameter became non-finite (the last good checkpoint is kept).
        OSError: writing the run directory failed (e.g. a full disk); the last good checkpoint is kept.
    """
    if resume:
        if out_dir is None:
            raise TrainError("--resume needs the run directory")
        out_dir = Path(out_dir)
        read_run(out_dir)  # a clear error before the lock creates anything
    else:
        scenario = scenario or load_scenario(config.train.scenario)
        out_dir = Path(out_dir) if out_dir is not None else default_out_dir(config, scenario.name)
        out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir, busy_error=TrainError):
        remove_stale_temporaries(out_dir)
        ckpt_path = out_dir / "checkpoints" / "last.pt"
        if resume:
            raw, stored, stored_scenario = read_run(out_dir)  # again, under the lock
            config = resumed_config(stored, config)
            if scenario is not None and scenario.to_dict() != stored_scenario.to_dict():
                raise TrainError(f"cannot resume {out_dir} with another scenario than its own ({stored_scenario.name})")
            trainer = Trainer(config, stored_scenario, sampler)
            try:
                trainer.load_state(raw)
            except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # crafted or mismatched tensors
                raise TrainError(
                    f"cannot resume: {ckpt_path}: its state does not fit the stored config "
                    f"({type(exc).__name__}: {shorten(str(exc).splitlines()[0] if str(exc) else '', 200)})"
                ) from None
        else:
            if ckpt_path.exists():
                raise TrainError(
                    f"{out_dir} already holds a run; use --resume {out_dir} to continue it or choose another --out"
                )
            trainer = Trainer(config, scenario, sampler)
            if progress and trainer.warm_start_accuracy is not None:
                what = (
                    "the gap-acceptance rule when its latent z_1 < 0 and 'always go' when z_1 > 0"
                    if config.policy.warm_start == "rule_or_go"
                    else "the gap-acceptance rule"
                )
                print(
                    f"warm start: the policy imitates {what} (its most likely action is the demonstrator's "
                    f"in {trainer.warm_start_accuracy:.1%} of the imitation states)",
                    flush=True,
                )
        check_memory(config, trainer)
        return _train_loop(trainer, out_dir, progress, tensorboard, on_iteration, stop_after, on_warning)


def _print_warning(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _train_loop(
    trainer: Trainer,
    out_dir: Path,
    progress: bool,
    tensorboard: bool,
    on_iteration: Callable[[dict[str, float]], None] | None,
    stop_after: int | None,
    on_warning: Callable[[str], None] | None,
) -> TrainResult:
    """Iterate until ``train.iterations`` (or ``stop_after`` iterations): step, check health, log, checkpoint."""
    config = trainer.config
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    _write_run_config(out_dir, trainer)
    writer = MetricsWriter(out_dir, trainer.iteration, tensorboard=tensorboard)
    task_log = TaskLog(out_dir, trainer.iteration)
    monitor = CollapseMonitor(min_entropy_nats=1e-3 if trainer.act_space.shape == () else None)
    warn = on_warning or _print_warning
    rows: list[dict[str, float]] = []
    bar = ProgressBar(config.train.iterations, trainer.iteration) if progress else None
    last = out_dir / "checkpoints" / "last.pt"
    try:
        done_here = 0
        while trainer.iteration < config.train.iterations and (stop_after is None or done_here < stop_after):
            row = _guarded_step(trainer, last)
            done_here += 1
            check_health(trainer, row, last)
            # logs first (appended and fsynced), then the checkpoint: a kill never loses a checkpointed row
            writer.write(row)
            task_log.write(trainer.iteration, trainer.last_tasks)
            rows.append(row)
            save_checkpoint(last, trainer.state())
            if trainer.iteration % config.train.checkpoint_every == 0 or trainer.iteration == config.train.iterations:
                save_checkpoint(out_dir / "checkpoints" / f"iter_{trainer.iteration:05d}.pt", trainer.state())
            warning = monitor.update(row)
            if warning is not None:
                warn(warning)
            if on_iteration is not None:
                on_iteration(row)
            if bar is not None:
                bar.update(row)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
    return TrainResult(out_dir=out_dir, checkpoint=last, metrics=rows)


def _guarded_step(trainer: Trainer, last: Path) -> dict[str, float]:
    """``trainer.step()``; torch refusing a non-finite action distribution inside it (e.g. adapted parameters that
    overflow) is a divergence, not a crash."""
    try:
        return trainer.step()
    except ValueError as exc:
        if not is_invalid_distribution(exc):
            raise
        raise _diverged(trainer.iteration + 1, "policy output during sampling or adaptation", last) from None


def check_health(trainer: Trainer, row: dict[str, float], last: Path) -> None:
    """Stop the run when the iteration just computed holds a non-finite number (before anything is saved): a
    checked metric, a parameter, or the updated policy's output on this iteration's observations.

    Raises:
        TrainingDiverged: naming the iteration, the quantity and the last good checkpoint.
    """
    params = [*trainer.policy.named_parameters(), *_learner_tensors(trainer.learner)]
    problem = first_non_finite(row, params)
    if problem is None and trainer.probe_obs is not None:
        problem = invalid_policy_output(trainer.policy, trainer.probe_obs)
    if problem is not None:
        raise _diverged(int(row["iteration"]), problem, last)


def _diverged(iteration: int, problem: str, last: Path) -> TrainingDiverged:
    kept = (
        f"the last good checkpoint (iteration {iteration - 1}) is kept: {last}"
        if last.exists()
        else "no checkpoint was written"
    )
    return TrainingDiverged(f"iteration {iteration}: non-finite {problem}; training stopped, {kept}")


def _learner_tensors(learner: MetaLearner) -> list[tuple[str, torch.Tensor]]:
    sizes = getattr(learner, "step_sizes", None) or {}
    return [(f"step_sizes.{k}", v) for k, v in sizes.items()]
