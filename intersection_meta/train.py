"""Meta-train a policy: ``python -m intersection_meta.train --scenario yield_left``.

Run-config keys and scenario keys are both set with ``--set KEY=VALUE`` (e.g. ``--set meta_batch_size=10``,
``--set other.speed_mps=[6,9]``); ``--config run.yaml`` loads run-config keys from a file first.
``--help-config`` lists every run-config key with its default and meaning.
"""

from __future__ import annotations

import argparse
import json
import difflib
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from intersection_meta.config import (
    ALGORITHMS,
    BACKENDS,
    ConfigError,
    RunConfig,
    add_threads_argument,
    config_help,
    load_config_file,
    make_config,
    parse_set,
    set_torch_threads,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m intersection_meta.train",
        description=__doc__.splitlines()[0],
        epilog="Example: python -m intersection_meta.train --scenario yield_left "
        "--algo directed_maml --set iterations=20",
    )
    p.add_argument("--scenario", help="scenario name (scenarios/NAME.yaml) or path (default: yield_left)")
    p.add_argument("--algo", help=f"meta-learner, one of {', '.join(ALGORITHMS)} (default: directed_maml)")
    p.add_argument("--backend", help=f"intersection simulator, one of {', '.join(BACKENDS)} (default: auto)")
    p.add_argument("--iterations", type=int, help="number of meta-iterations")
    p.add_argument("--seed", type=int, help="run seed")
    p.add_argument("--config", help="run-config YAML file (keys as in --help-config)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run-config key or a scenario key (repeatable)",
    )
    p.add_argument("--out", help="run directory (default: runs/SCENARIO__ALGO__sSEED__TIME)")
    p.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    p.add_argument("--no-eval", action="store_true", help="skip the final held-out evaluation")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(p)
    p.add_argument("--help-config", action="store_true", help="list run-config keys and exit")
    return p


def split_overrides(items: Sequence[str]) -> tuple[dict, list[str]]:
    """Route each ``KEY=VALUE`` to the run config (known field) or the scenario (dotted scenario key)."""
    run_keys = {f.name for f in fields(RunConfig)}
    run, scenario = {}, []
    for item in items:  # one at a time, so a repeated key keeps its order (the last one wins)
        ((key, value),) = parse_set([item]).items()
        if key in run_keys:
            run[key] = value
        elif "." in key:
            scenario.append(item)
        else:
            close = difflib.get_close_matches(key, sorted(run_keys), n=1)
            raise ConfigError(
                f"--set {item}",
                key,
                "unknown key"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + "; run-config keys: see --help-config; scenario keys are dotted, e.g. "
                "other.speed_mps",
            )
    return run, scenario


def resolve_config(args: argparse.Namespace) -> tuple[RunConfig, list[str]]:
    values: dict = {}
    if args.config:
        values.update(load_config_file(args.config))
    config = make_config(values, source=args.config or "<defaults>")
    cli = {
        k: v
        for k, v in (
            ("scenario", args.scenario),
            ("algo", args.algo),
            ("backend", args.backend),
            ("iterations", args.iterations),
            ("seed", args.seed),
        )
        if v is not None
    }
    config = make_config(cli, source="command line", base=config)
    run_sets, scenario_sets = split_overrides(args.set)
    config = make_config(run_sets, source="--set", base=config)
    return config, scenario_sets


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_torch_threads(args.threads)
    if args.help_config:
        print("Run-config keys (set with --set KEY=VALUE or in a --config YAML file):\n" + config_help())
        return 0
    from intersection_meta.checkpoint import CheckpointError, load_checkpoint
    from intersection_meta.evaluate import evaluate_checkpoint, format_report
    from intersection_meta.scenario import ScenarioError, load_scenario
    from intersection_meta.trainer import TrainError, train

    try:
        config, scenario_sets = resolve_config(args)
        if args.resume:
            if args.out and Path(args.out) != Path(args.resume):
                raise TrainError("give either --out or --resume, not both")
            scenario = None
        else:
            scenario = load_scenario(config.scenario, scenario_sets)
        print(
            f"intersection_meta: {config.algo} on {scenario.name if scenario else args.resume} "
            f"({config.iterations} iterations x {config.meta_batch_size} tasks x {config.episodes_per_task} "
            f"episodes)",
            file=sys.stderr,
        )
        result = train(
            config,
            Path(args.resume or args.out) if (args.resume or args.out) else None,
            resume=bool(args.resume),
            progress=not args.quiet,
            tensorboard=not args.no_tensorboard,
            scenario=scenario,
        )
    except (ConfigError, ScenarioError, TrainError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        target = args.resume or args.out or "the run directory under runs/"
        print(
            f"\ninterrupted; the last completed iteration is saved. Continue with: "
            f"python -m intersection_meta.train --resume {target}",
            file=sys.stderr,
        )
        return 130
    ckpt_path = result.checkpoint
    print(f"\nrun directory: {result.out_dir}\ncheckpoint:    {ckpt_path}")
    if not args.no_eval and config.eval_tasks > 0:
        ckpt = load_checkpoint(ckpt_path)
        print(f"evaluating on {config.eval_tasks} held-out tasks ...", file=sys.stderr)
        report = evaluate_checkpoint(
            ckpt,
            n_tasks=config.eval_tasks,
            adapt_steps=config.inner_steps,
            seed=config.seed,
            backend=config.backend,
        )
        print(format_report(report))
        (result.out_dir / "evaluation.txt").write_text(format_report(report) + "\n")
        (result.out_dir / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
        crashed = [t["task_id"] for t in report["per_task"] if t.get("collision_rate", 0.0) > 0.5]
        if crashed:
            print(
                f"held-out crossings that still end in a collision after adaptation ({len(crashed)}): "
                f"{' '.join(crashed[:8])}{' ...' if len(crashed) > 8 else ''}\n"
                f"  replay one:  python -m viz.replay --checkpoint {ckpt_path} --task-id {crashed[0]}"
            )
    print(
        "\nnext steps:\n"
        f"  evaluate:  python -m intersection_meta.evaluate --checkpoint {ckpt_path} --adapt-steps 3\n"
        f"  watch it:  python -m viz.replay --checkpoint {ckpt_path}\n"
        f"  curves:    tensorboard --logdir {result.out_dir / 'tb'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
