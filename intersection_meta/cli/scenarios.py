"""Command line for scenario files: ``python -m intersection_meta.scenarios list | show | validate | sample | preview``.

Errors in scenario files print one line naming the file, the key path and what is allowed, and exit with 2.
``show NAME`` prints the file as written; with ``--resolved`` or ``--set`` it prints the validated scenario with
defaults filled in and the overrides applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from intersection_meta.cli.errors import run_reporting_errors
from intersection_meta.cli.options import MAX_COUNT, SEED, add_set_argument, bounded_int
from intersection_meta.schema import parse_yaml
from intersection_meta.scenario import (
    SCENARIO_DIR,
    ScenarioError,
    available_scenarios,
    load_scenario,
    scenario_path,
)
from intersection_meta.tasks import sampled_parameters

#: Draws used by ``validate`` to estimate a scenario's acceptance rate.
ACCEPTANCE_DRAWS = 2000


def _cmd_list(args: argparse.Namespace) -> int:
    names = available_scenarios()
    if not names:
        print(f"error: no scenarios found in {SCENARIO_DIR} (is the package installed with its data?)", file=sys.stderr)
        return 2
    width = max(map(len, names), default=0)
    for name in names:
        try:
            s = load_scenario(name)
            print(f"{name:<{width}}  {s.kind:<12}  {s.description}")
        except ScenarioError as exc:
            print(f"{name:<{width}}  INVALID       {exc}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    s = load_scenario(args.name, args.set)
    if args.resolved or args.set:
        if args.set:
            print(f"# {s.source}, resolved")
        print(s.to_yaml(), end="")
    else:
        text = scenario_path(args.name).read_text(encoding="utf-8")
        print(text, end="")
        if "extends" in (parse_yaml(text) or {}):
            print("# (this file extends another; `show --resolved` prints the merged scenario)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.paths:
        try:
            s = load_scenario(path, args.set)
            estimate = s.acceptance(ACCEPTANCE_DRAWS)
            if estimate.accepted == 0:
                worst = max(estimate.rejected, key=estimate.rejected.__getitem__)
                raise ScenarioError(s.source, worst, f"no draw out of {ACCEPTANCE_DRAWS} satisfied the constraints")
            print(
                f"ok: {path} ({s.kind}, {len([1 for p in s.sampled_keys().values() if len(p.values()) > 1])} "
                f"sampled keys, {len(s.constraints)} constraints; estimated {estimate.describe()})"
            )
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def _cmd_sample(args: argparse.Namespace) -> int:
    s = load_scenario(args.name, args.set)
    sample = s.sample_with_stats(args.n, seed=args.seed)
    if args.json:
        print(json.dumps([{"task_id": t.task_id, **sampled_parameters(t)} for t in sample.tasks], indent=2))
        print(f"# {s.name}: {sample.describe()}", file=sys.stderr)
    else:
        print(f"# {s.name}: {args.n} tasks, seed {args.seed}")
        for t in sample.tasks:
            print(t.describe())
        print(f"# medium task: {s.medium_task().describe()}")
        print(f"# {sample.describe()}")
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    s = load_scenario(args.name, args.set)
    if s.kind != "intersection":
        raise ScenarioError(s.source, "kind", f"preview draws intersection scenarios; this one is {s.kind}")
    if args.n < 1:
        raise ScenarioError(f"-n {args.n}", "", "expected at least 1 task")
    from intersection_meta.preview import render_preview, save_png

    sample = s.sample_with_stats(args.n, seed=args.seed)
    out = save_png(render_preview(sample.tasks, columns=args.columns), args.out)
    print(f"wrote {out}: {args.n} tasks of {s.name} (seed {args.seed}); {sample.describe()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m intersection_meta.scenarios", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped scenarios").set_defaults(fn=_cmd_list)

    def with_set(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_set_argument(sp, "override a scenario key, e.g. --set other.speed_mps=[6,9]")
        return sp

    sp = with_set(sub.add_parser("show", help="print a scenario file"))
    sp.add_argument("name", help="scenario name or path")
    sp.add_argument(
        "--resolved",
        action="store_true",
        help="print the validated scenario with defaults filled in (implied by --set)",
    )
    sp.set_defaults(fn=_cmd_show)
    sp = with_set(sub.add_parser("validate", help="validate scenario files"))
    sp.add_argument("paths", nargs="+", help="scenario names or paths")
    sp.set_defaults(fn=_cmd_validate)
    sp = with_set(sub.add_parser("sample", help="print concrete tasks drawn from a scenario"))
    sp.add_argument("name", help="scenario name or path")
    sp.add_argument("-n", type=bounded_int(1, MAX_COUNT), default=5, help="number of tasks (default 5)")
    sp.add_argument("--seed", type=SEED, default=0, help="sampling seed (default 0)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of text")
    sp.set_defaults(fn=_cmd_sample)
    sp = with_set(sub.add_parser("preview", help="draw sampled tasks (start, routes, conflict-zone arrival) as a PNG"))
    sp.add_argument("name", help="scenario name or path (intersection)")
    sp.add_argument("-n", type=bounded_int(1, 256), default=16, help="number of tasks (default 16)")
    sp.add_argument("--seed", type=SEED, default=0, help="sampling seed (default 0)")
    sp.add_argument("--columns", type=bounded_int(1, 64), default=4, help="panels per row (default 4)")
    sp.add_argument("--out", default="preview.png", help="PNG file to write (default preview.png)")
    sp.set_defaults(fn=_cmd_preview)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
