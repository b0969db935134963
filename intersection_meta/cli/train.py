"""Meta-train a policy: ``python -m intersection_meta.train --scenario yield_left``.

Run-config keys and scenario keys are both set with ``--set KEY=VALUE``: run-config keys by section
(``--set pg.gae_lambda=0.95``, ``--set train.meta_batch_size=10``; the bare key name works too,
``--set meta_batch_size=10``), scenario keys by their dotted path (``--set other.speed_mps=[6,9]``).
``--config run.yaml`` loads run-config sections from a file first. ``--help-config`` lists every run-config key
with its default and meaning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from intersection_meta.cli.errors import run_reporting_errors
from intersection_meta.cli.options import (
    SEED,
    add_ray_argument,
    add_set_argument,
    add_threads_argument,
    integer,
    set_torch_threads,
)
from intersection_meta.config import (
    RunConfig,
    config_help,
    load_config_file,
    make_config,
    scenario_defaults,
    split_overrides,
)
from intersection_meta.registry import ALGORITHMS, BACKENDS

if TYPE_CHECKING:
    from intersection_meta.scenario import Scenario

#: Shortcut flags and the run-config key each sets.
SHORTCUTS: dict[str, str] = {
    "scenario": "train.scenario",
    "algo": "meta.algo",
    "backend": "env.backend",
    "iterations": "train.iterations",
    "seed": "train.seed",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m intersection_meta.train",
        description=__doc__.splitlines()[0],
        epilog="Example: python -m intersection_meta.train --scenario yield_left "
        "--algo directed_maml --set train.iterations=20 --set pg.gae_lambda=0.95",
    )
    p.add_argument("--scenario", help="scenario name (scenarios/NAME.yaml) or path (train.scenario)")
    p.add_argument("--algo", help=f"meta-learner (meta.algo): {', '.join(ALGORITHMS)}")
    p.add_argument("--backend", help=f"simulator (env.backend): {', '.join(BACKENDS)}")
    p.add_argument("--iterations", type=integer, help="number of meta-iterations (train.iterations)")
    p.add_argument("--seed", type=SEED, help="run seed (train.seed)")
    p.add_argument("--config", help="run-config YAML file (sections and keys as in --help-config)")
    add_set_argument(p, "override a run-config key (pg.gae_lambda=0.95) or a scenario key (other.speed_mps=[6,9])")
    p.add_argument("--out", help="run directory (default: runs/SCENARIO__ALGO__sSEED__TIME)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--no-eval", action="store_true", help="skip the final held-out evaluation")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(p)
    add_ray_argument(
        p,
        "sample each iteration's rollouts on Ray actors (--set ray_workers=N, default: the cluster's CPUs; "
        "highway-env, CartPole and LunarLander; identical metrics)",
    )
    p.add_argument("--help-config", action="store_true", help="list the run-config keys by section and exit")
    return p


#: The ``--set`` key of the number of Ray rollout actors: how the run executes, not what it computes (the metrics do
#: not depend on it), so it is not a run-config key and is not stored with the run.
RAY_WORKERS_KEY = "ray_workers"


def pop_ray_workers(items: Sequence[str]) -> tuple[int | None, list[str]]:
    """``--set ray_workers=N`` taken out of the ``--set`` items: ``(N or None, the other items)``.

    Raises:
        ConfigError: N is not a positive integer.
    """
    from intersection_meta.config import ConfigError

    workers, rest = None, []
    for item in items:
        key, sep, value = item.partition("=")
        if key.strip() != RAY_WORKERS_KEY:
            rest.append(item)
            continue
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(f"--set {item}", RAY_WORKERS_KEY, f"got {value.strip()!r}; expected a positive integer")
        workers = int(value)
    return workers, rest


def _ray_sampler(address: str | None, workers: int | None) -> Any:
    """The Ray sampler of ``--ray ADDRESS`` with ``workers`` actors (default: the cluster's CPUs), or None."""
    from intersection_meta.distributed import RayError, RaySampler, connect

    if address is None:
        if workers is not None:
            raise RayError(f"--set {RAY_WORKERS_KEY}=... needs --ray")
        return None
    ray = connect(address)
    return RaySampler(workers or max(1, int(ray.cluster_resources().get("CPU", 1))))


def resolve_config(args: argparse.Namespace, base: RunConfig | None = None) -> tuple[RunConfig, list[tuple[str, Any]]]:
    """The run config (``base`` (default: the defaults; the train command passes the scenario's
    :func:`~intersection_meta.config.scenario_defaults`) < ``--config`` file < shortcut flags < ``--set``) and the
    scenario overrides."""
    config = base or RunConfig()
    if args.config:
        config = make_config(load_config_file(args.config), source=args.config, base=config)
    flags = {key: getattr(args, flag) for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None}
    config = make_config(flags, source="command line", base=config)
    run_sets, scenario_sets = split_overrides(args.set)
    return make_config(run_sets, source="--set", base=config), scenario_sets


def resolve_resume(args: argparse.Namespace) -> tuple[RunConfig, Scenario]:
    """The stored config and scenario of ``--resume DIR``, with ``--iterations`` raising its length; any other
    option that would change the run is refused.

    Raises:
        TrainError: naming the option or key that differs.
    """
    from intersection_meta.trainer import TrainError, read_run, resumed_config, resumed_scenario

    if args.out and Path(args.out) != Path(args.resume):
        raise TrainError("give either --out or --resume, not both")
    _, stored, scenario = read_run(Path(args.resume))
    if args.iterations is not None and args.iterations < stored.train.iterations:
        raise TrainError(
            f"--iterations {args.iterations}: the run in {args.resume} has train.iterations="
            f"{stored.train.iterations}; a resume can only raise it"
        )
    requested, scenario_sets = resolve_config(args, base=stored)
    return resumed_config(stored, requested), resumed_scenario(scenario, scenario_sets)


def _evaluate(config: RunConfig, ckpt_path: Path, out_dir: Path) -> int | None:
    """Final held-out evaluation; prints and saves the report. Returns the best measured adaptation steps."""
    from intersection_meta.evaluate import best_adapt_steps, final_evaluation, format_report

    print(f"evaluating on {config.train.eval_tasks} held-out tasks ...", file=sys.stderr)
    report = final_evaluation(config, ckpt_path, out_dir)
    print(format_report(report))
    crashed = [t["task_id"] for t in report["per_task"] if t.get("collision_rate", 0.0) > 0.5]
    if crashed:
        print(
            f"held-out crossings that still end in a collision after adaptation ({len(crashed)}): "
            f"{' '.join(crashed[:8])}{' ...' if len(crashed) > 8 else ''}\n"
            f"  replay one:  python -m viz.replay --checkpoint {ckpt_path} --task-id {crashed[0]}"
        )
    return best_adapt_steps(report)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        print(
            "Run-config keys by section (set with --set SECTION.KEY=VALUE, or in a --config YAML file as\n"
            "SECTION: {KEY: VALUE}):\n" + config_help()
        )
        return 0
    set_torch_threads(args.threads)
    state: dict[str, Any] = {"phase": "setup"}

    def interrupted() -> str:
        if state["phase"] == "evaluation":
            return (
                f"interrupted during the final evaluation; training is complete and saved in {state['out_dir']}. "
                f"Evaluate with: python -m intersection_meta.evaluate --checkpoint {state['checkpoint']}"
            )
        target = args.resume or args.out or state.get("out_dir") or "the run directory under runs/"
        return (
            "interrupted; the last completed iteration is saved. Continue with: "
            f"python -m intersection_meta.train --resume {target}"
        )

    return run_reporting_errors(lambda: _train(args, state), interrupted)


def _train(args: argparse.Namespace, state: dict[str, Any]) -> int:
    from intersection_meta.scenario import load_scenario
    from intersection_meta.trainer import default_out_dir, train

    ray_workers, args.set = pop_ray_workers(args.set)
    if args.resume:
        config, scenario = resolve_resume(args)
        out_dir = Path(args.resume)
    else:
        config, scenario_sets = resolve_config(args)
        scenario = load_scenario(config.train.scenario, scenario_sets)
        if scenario.run_defaults:  # the scenario's run_defaults sit under --config, the flags and --set
            config, _ = resolve_config(args, base=scenario_defaults(scenario))
        out_dir = Path(args.out) if args.out else default_out_dir(config, scenario.name)
    state["out_dir"] = out_dir
    t = config.train
    print(
        f"intersection_meta: {config.meta.algo} on {scenario.name} "
        f"({t.iterations} iterations x {t.meta_batch_size} tasks x {t.episodes_per_task} episodes)"
        + (f", resuming {out_dir}" if args.resume else ""),
        file=sys.stderr,
    )
    if scenario.constraints:  # issue 14: rejection sampling's cost, up front
        print(f"task sampling: {len(scenario.constraints)} constraints, estimated "
              f"{scenario.acceptance().describe()}", file=sys.stderr)
    sampler = _ray_sampler(args.ray, ray_workers)
    state["phase"] = "training"
    try:
        result = train(
            config,
            out_dir,
            resume=bool(args.resume),
            progress=not args.quiet,
            tensorboard=not args.no_tensorboard,
            scenario=scenario,
            sampler=sampler,
        )
    finally:
        if sampler is not None:
            sampler.close()
    ckpt_path = result.checkpoint
    state.update(phase="evaluation", checkpoint=ckpt_path)
    print(f"\nrun directory: {result.out_dir}\ncheckpoint:    {ckpt_path}")
    best = None
    if not args.no_eval and config.train.eval_tasks > 0:
        best = _evaluate(config, ckpt_path, result.out_dir)
    steps = f"--adapt-steps {best}" if best is not None else f"--adapt-steps {config.meta.inner_steps}"
    why = "the best measured above" if best is not None else "the run's meta.inner_steps"
    print(
        "\nnext steps:\n"
        f"  evaluate:  python -m intersection_meta.evaluate --checkpoint {ckpt_path} {steps}   ({why})\n"
        f"  watch it:  python -m viz.replay --checkpoint {ckpt_path}\n"
        f"  curves:    tensorboard --logdir {result.out_dir / 'tb'}"
    )
    return 0
