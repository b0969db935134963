"""Run configuration: one frozen dataclass with documented defaults, loaded strictly from YAML and ``--set``.

Every field's help text is the ``help`` metadata below; ``python -m intersection_meta.train --help-config``
prints them. Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the source,
the key and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

ALGORITHMS: tuple[str, ...] = (
    "maml",
    "fomaml",
    "meta_sgd",
    "directed_maml",
    "directed_fomaml",
    "directed_meta_sgd",
)
BACKENDS: tuple[str, ...] = ("auto", "fast", "highway")
DIRECTED_MODES: tuple[str, ...] = ("pg", "fomaml")


class ConfigError(ValueError):
    """Invalid run configuration or command-line value; ``str(err)`` is one line naming source and key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def _f(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    low: float | None = None,
    high: float | None = None,
) -> Any:
    meta = {"help": help, "choices": choices, "low": low, "high": high}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a meta-training run (the scenario file defines the tasks)."""

    scenario: str = _f("yield_left", "scenario name (scenarios/NAME.yaml) or path to a scenario file")
    algo: str = _f("directed_maml", "meta-learner", choices=ALGORITHMS)
    backend: str = _f(
        "auto",
        "simulator for intersection scenarios: fast (native batched), highway (highway-env), auto (fast if available)",
        choices=BACKENDS,
    )
    seed: int = _f(0, "run seed; every random stream derives from (seed, iteration, task index)", low=0)
    iterations: int = _f(120, "number of meta-iterations", low=1)
    meta_batch_size: int = _f(20, "tasks per meta-iteration", low=1)
    episodes_per_task: int = _f(20, "episodes per task for each inner step and for the outer loss", low=1)
    inner_steps: int = _f(1, "policy-gradient adaptation steps per task (fresh episodes for each)", low=1)
    inner_lr: float = _f(0.05, "inner (adaptation) step size; Meta-SGD's initial per-parameter step size", low=0.0)
    meta_lr: float = _f(0.001, "outer Adam step size", low=0.0)
    outer_grad_clip: float = _f(1.0, "max global norm of the outer gradient (0 disables clipping)", low=0.0)
    directed_lr: float = _f(0.05, "step size of the Directed-* first-order step on the medium task", low=0.0)
    directed_lr_decay: float = _f(
        1.0, "multiplicative decay of directed_lr per iteration (1 = constant)", low=0.0, high=1.0
    )
    directed_mode: str = _f(
        "pg",
        "directed step: pg (plain policy-gradient step on the medium task) or fomaml "
        "(first-order adapt-then-step on it)",
        choices=DIRECTED_MODES,
    )
    directed_episodes: int = _f(20, "episodes sampled on the medium task for the directed step", low=1)
    gamma: float = _f(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = _f(1.0, "GAE lambda (1 = Monte-Carlo returns minus baseline)", low=0.0, high=1.0)
    normalize_advantages: bool = _f(
        True,
        "normalise advantages per task (mean 0, std 1); false keeps their scale, "
        "so tasks with larger return differences weigh more",
    )
    bootstrap_truncated: bool = _f(
        True,
        "bootstrap episodes cut by the time limit with the baseline value (gymnasium semantics); false treats the "
        "limit as the end of a finite-horizon task",
    )
    entropy_coef: float = _f(
        0.0, "policy-entropy bonus weight in the inner and outer losses (0 = plain REINFORCE)", low=0.0
    )
    baseline_reg: float = _f(1e-5, "ridge regularisation of the linear feature baseline", low=0.0)
    hidden_sizes: tuple[int, ...] = _f((64, 64), "hidden layer sizes of the policy MLP")
    eval_tasks: int = _f(40, "held-out tasks for the final evaluation", low=0)
    checkpoint_every: int = _f(10, "keep a numbered checkpoint every N iterations (last.pt is always updated)", low=1)

    @property
    def directed(self) -> bool:
        return self.algo.startswith("directed_")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d


def config_help() -> str:
    lines = []
    for f in fields(RunConfig):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        extra = f" (one of {', '.join(f.metadata['choices'])})" if f.metadata["choices"] else ""
        lines.append(f"  {f.name} = {default!r}\n      {f.metadata['help']}{extra}")
    return "\n".join(lines)


def _convert(source: str, key: str, f: Any, value: Any) -> Any:
    hint = typing.get_type_hints(RunConfig)[f.name]
    meta = f.metadata

    def bad(what: str) -> ConfigError:
        return ConfigError(source, key, f"got {value!r}; expected {what}")

    origin = typing.get_origin(hint)
    if origin is tuple:
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise bad("a non-empty list of positive integers, e.g. [64, 64]")
        return tuple(int(v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        if meta["choices"] and value not in meta["choices"]:
            close = difflib.get_close_matches(value, meta["choices"], n=1)
            raise ConfigError(
                source,
                key,
                f"got {value!r}"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + f"; expected one of {', '.join(meta['choices'])}",
            )
        return value
    if hint in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if hint is int and not isinstance(value, int):
            ok = False
        if not ok:
            raise bad("an integer" if hint is int else "a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise bad("a finite number")
        if (meta["low"] is not None and value < meta["low"]) or (meta["high"] is not None and value > meta["high"]):
            lo = "-inf" if meta["low"] is None else meta["low"]
            hi = "inf" if meta["high"] is None else meta["high"]
            raise bad(f"a value in [{lo}, {hi}]")
        return hint(value)
    raise AssertionError(f"unsupported config type {hint}")  # internal


def make_config(values: Mapping[str, Any], *, source: str = "<config>", base: RunConfig | None = None) -> RunConfig:
    """Validate ``values`` (a mapping of field names) on top of ``base`` (default: the defaults)."""
    by_name = {f.name: f for f in fields(RunConfig)}
    current = (base or RunConfig()).to_dict()
    for key, value in values.items():
        if key not in by_name:
            close = difflib.get_close_matches(str(key), list(by_name), n=1)
            raise ConfigError(
                source,
                str(key),
                "unknown key"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + "; see --help-config for the list",
            )
        current[key] = _convert(source, str(key), by_name[key], value)
    current["hidden_sizes"] = tuple(current["hidden_sizes"])
    return RunConfig(**current)


def parse_set(items: Sequence[str], source: str = "--set") -> dict[str, Any]:
    """``["meta_lr=0.01", "hidden_sizes=[32,32]"]`` -> dict; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{source} {item}", "", "expected KEY=VALUE, e.g. --set meta_batch_size=10")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"{source} {item}", key, f"cannot parse {raw!r}") from None
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(p), "", "no such file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(p), "", f"YAML syntax error{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "expected a mapping of config keys")
    return data


def add_threads_argument(parser: Any) -> None:
    """``--threads N`` for command-line tools (torch intra-op threads of the process)."""
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for these small networks)"
    )


def set_torch_threads(threads: int) -> None:
    """Process-wide torch thread count, set once by a command-line entry point (never by the library).

    One thread is fastest here: the networks are tiny, and on a small shared machine torch's intra-op threads
    make each small op several times slower.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))
