"""Scenarios: strictly validated YAML descriptions of task distributions.

A scenario file describes a *distribution* of tasks. Every sampled key takes one of four forms::

    speed_mps: 8.0                                   # fixed
    speed_mps: [6.0, 10.0]                           # uniform range [low, high]
    intent: {choice: [straight, left]}               # uniform choice among listed values
    time_gap_s: {normal: [0.0, 1.0], clip: [-2, 2]}  # normal(mean, std), clipped to [low, high]

``require:`` lists boolean constraints between sampled keys (:mod:`intersection_meta.expr`), e.g.
``"abs(other.time_gap_s) > 0.3"``; sampling rejects draws that break one (rejection sampling: task ``i`` still
depends only on ``(seed, i)``). Intersection scenarios also carry a built-in constraint of the same kind: the
other vehicle starts inside its approach lane. ``extends: NAME_OR_PATH`` builds a scenario on a base file by a
deep merge (the child's keys win; a list or a sampled value replaces the base's whole).

Three kinds exist: ``intersection`` (two-vehicle crossings on highway-env), ``cartpole`` (CartPole-v1 with varied
physics) and ``lunarlander`` (LunarLander-v3 with varied gravity and wind). See ``scenarios/*.yaml`` for
commented examples of each.

Validation is strict: unknown keys (with a "did you mean"), wrong types, out-of-range or impossible values and
YAML errors raise :class:`ScenarioError`, whose message names the file, the key path and what is allowed.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from intersection_meta.expr import NUM, STR, Expr, ExprError, compile_expr
from intersection_meta.resources import scenario_dir
from intersection_meta.schema import Leaf as _Leaf
from intersection_meta.schema import (
    LoadError,
    abbreviate,
    check_scalar,
    did_you_mean,
    is_number,
    parse_set,
    read_yaml_file,
)
from intersection_meta.seeding import derive_seed
from intersection_meta.tasks import (
    ALL_OBSERVATION_FEATURES,
    APPROACH_LANE_LENGTH_M,
    DRIVERS,
    ENTRIES,
    IDM_MAX_ACCEL_LIMIT_MPS2,
    IDM_PARAMETER_DEFAULTS,
    INTENTS,
    OBSERVATION_FEATURES,
    CartPoleTask,
    IntersectionSettings,
    IntersectionTask,
    LunarLanderTask,
    RewardWeights,
    Task,
)

SCENARIO_VERSION = 1
KINDS = ("intersection", "cartpole", "lunarlander")
#: Where named scenarios live (``NAME.yaml``): the checkout's ``scenarios/``, or the installed package's copy.
SCENARIO_DIR = scenario_dir()


class ScenarioError(LoadError):
    """A scenario file (or override) is invalid. ``str(err)`` is one line: ``FILE: KEY.PATH: what is wrong``."""


# ----------------------------------------------------------------------------------------------------
# Parameter distributions


@dataclass(frozen=True)
class Fixed:
    value: Any

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def midpoint(self) -> Any:
        return self.value

    def values(self) -> tuple[Any, ...]:
        return (self.value,)

    def to_yaml(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def midpoint(self) -> float:
        return 0.5 * (self.low + self.high)

    def values(self) -> tuple[float, ...]:
        """The extremes (enough for checks that are monotone in each parameter)."""
        return (self.low, self.high)

    def to_yaml(self) -> Any:
        return [self.low, self.high]


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.options[int(rng.integers(len(self.options)))]

    def midpoint(self) -> Any:
        """The medium value of a choice: for numbers the median of the options (the middle one of an odd count,
        the mean of the two middle ones of an even count, e.g. 7.5 for ``{choice: [5, 7, 8, 10]}``); for
        categories (entries, intents, drivers) the first listed option."""
        if all(isinstance(o, float) for o in self.options):
            return float(np.median(self.options))
        return self.options[0]

    def values(self) -> tuple[Any, ...]:
        return self.options

    def to_yaml(self) -> Any:
        return {"choice": list(self.options)}


@dataclass(frozen=True)
class Normal:
    """A normal distribution ``N(mean, std^2)`` clipped to ``[low, high]`` (``{normal: [m, s], clip: [lo, hi]}``)."""

    mean: float
    std: float
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.clip(rng.normal(self.mean, self.std), self.low, self.high))

    def midpoint(self) -> float:
        return float(np.clip(self.mean, self.low, self.high))

    def values(self) -> tuple[float, ...]:
        """The extremes (the clip bounds)."""
        return (self.low, self.high)

    def to_yaml(self) -> Any:
        return {"normal": [self.mean, self.std], "clip": [self.low, self.high]}


Param = Fixed | Range | Choice | Normal
PARAM_TYPES = (Fixed, Range, Choice, Normal)


# ----------------------------------------------------------------------------------------------------
# Schema: one declarative table per kind. A leaf is a _Leaf; a section is a dict of leaves.


_SPEED = dict(low=0.0, high=20.0, low_open=True)
_INTERSECTION_SCHEMA: dict[str, Any] = {
    "version": _Leaf("int", required=True, low=1, high=SCENARIO_VERSION),
    "name": _Leaf("str", required=True),
    "kind": _Leaf("enum", required=True, allowed=KINDS),
    "description": _Leaf("str", default=""),
    "target_return": _Leaf("float", default=None),
    "medium_task": _Leaf("medium", default="midpoint"),
    "require": _Leaf("require", default=[]),
    "run_defaults": _Leaf(
        "run_defaults",
        default={},
        help="run-config values this scenario trains best with, as in a --config file (SECTION: {KEY: VALUE}); "
        "they replace the package defaults, and --config, the shortcut flags and --set still override them",
    ),
    "ego": {
        "entry": _Leaf("enum", default="south", allowed=ENTRIES, sampled=True),
        "intent": _Leaf("enum", default="left", allowed=INTENTS, sampled=True),
        "speed_mps": _Leaf("float", default=8.0, sampled=True, **_SPEED),
        "distance_to_stop_m": _Leaf(
            "float", default=40.0, low=5.0, high=APPROACH_LANE_LENGTH_M, sampled=True
        ),
    },
    "other": {
        "entry": _Leaf("enum", default="north", allowed=ENTRIES, sampled=True),
        "intent": _Leaf("enum", default="straight", allowed=INTENTS, sampled=True),
        "driver": _Leaf("enum", default="idm", allowed=DRIVERS, sampled=True),
        "speed_mps": _Leaf("float", default=8.0, sampled=True, **_SPEED),
        "time_gap_s": _Leaf("float", default=0.0, low=-10.0, high=10.0, sampled=True),
        # The IDM driver's hidden behaviour (not in the observation); driver idm only. After time_gap_s, so a
        # scenario that samples them draws everything else as before.
        "idm_time_headway_s": _Leaf(
            "float", default=IDM_PARAMETER_DEFAULTS["other_idm_time_headway_s"], sampled=True,
            low=0.0, high=10.0, low_open=True,
        ),
        "idm_min_gap_m": _Leaf(
            "float", default=IDM_PARAMETER_DEFAULTS["other_idm_min_gap_m"], sampled=True, low=0.0, high=50.0
        ),
        "idm_max_accel_mps2": _Leaf(
            "float", default=IDM_PARAMETER_DEFAULTS["other_idm_max_accel_mps2"], sampled=True,
            low=0.0, high=IDM_MAX_ACCEL_LIMIT_MPS2, low_open=True,
        ),
    },
    "episode": {
        "duration_s": _Leaf("float", default=13.0, low=1.0, high=120.0),
        "policy_frequency_hz": _Leaf("int", default=1, low=1, high=15),
        "simulation_frequency_hz": _Leaf("int", default=15, low=1, high=100),
    },
    "action": {
        "type": _Leaf("enum", default="discrete", allowed=("discrete", "continuous")),
        "target_speeds_mps": _Leaf("float_list", default=[0.0, 4.5, 9.0], low=0.0, high=30.0),
    },
    "observation": {
        "features": _Leaf(
            "enum_list",
            default=list(OBSERVATION_FEATURES),
            allowed=ALL_OBSERVATION_FEATURES,
            help="per-vehicle observation features, in order: highway-env's Kinematics features (the default "
            "list), and the opt-in conflict_distance (distance along the car's route to the entry of the conflict "
            "area it shares with the other car, / 100 m, clipped to [-1, 1], negative once entered) and "
            "conflict_time (time until it enters that area at its current speed: 0 inside, capped at 10 s when "
            "stopped before it, past it or farther; / 10 s, in [0, 1]); both are 1 without a conflict area "
            "(intersection_meta.criticality)",
        ),
        "absolute": _Leaf("bool", default=True),
    },
    "reward": {
        "collision_reward": _Leaf("float", default=-50.0, low=-100.0, high=0.0),
        "high_speed_reward": _Leaf("float", default=1.0, low=-100.0, high=100.0),
        "arrived_reward": _Leaf("float", default=1.0, low=0.0, high=100.0),
        "reward_speed_range_mps": _Leaf("float_pair", default=[7.0, 9.0]),
        "normalize_reward": _Leaf("bool", default=False),
    },
}

_COMMON_TOP = {
    k: _INTERSECTION_SCHEMA[k]
    for k in ("version", "name", "kind", "description", "target_return", "medium_task", "require", "run_defaults")
}
_CARTPOLE_SCHEMA: dict[str, Any] = {
    **_COMMON_TOP,
    "physics": {
        "pole_half_length_m": _Leaf("float", default=0.5, low=0.05, high=5.0, sampled=True),
        "pole_mass_kg": _Leaf("float", default=0.1, low=0.0, high=10.0, low_open=True, sampled=True),
        "cart_mass_kg": _Leaf("float", default=1.0, low=0.0, high=100.0, low_open=True, sampled=True),
        "gravity_mps2": _Leaf("float", default=9.8, low=0.0, high=50.0, low_open=True, sampled=True),
        "force_n": _Leaf("float", default=10.0, low=0.0, high=100.0, low_open=True, sampled=True),
    },
    "episode": {"max_steps": _Leaf("int", default=500, low=1, high=100_000)},
}
_LUNARLANDER_SCHEMA: dict[str, Any] = {
    **_COMMON_TOP,
    "physics": {
        # gymnasium's LunarLander-v3 asserts -12 < gravity < 0, 0 <= wind_power <= 20, 0 <= turbulence <= 2.
        "gravity_mps2": _Leaf(
            "float", default=-10.0, low=-12.0, high=0.0, low_open=True, high_open=True, sampled=True
        ),
        "enable_wind": _Leaf("bool", default=False),
        "wind_power": _Leaf("float", default=15.0, low=0.0, high=20.0, sampled=True),
        "turbulence_power": _Leaf("float", default=1.5, low=0.0, high=2.0, sampled=True),
    },
    "action": {"continuous": _Leaf("bool", default=False)},
    "episode": {"max_steps": _Leaf("int", default=1000, low=1, high=100_000)},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "intersection": _INTERSECTION_SCHEMA,
    "cartpole": _CARTPOLE_SCHEMA,
    "lunarlander": _LUNARLANDER_SCHEMA,
}


class _Validator:
    """Validates one scenario mapping; ``origins`` maps dotted keys to the file that set them (``extends:``)."""

    def __init__(self, source: str, origins: Mapping[str, str] | None = None) -> None:
        self.source, self.origins = source, dict(origins or {})

    def source_of(self, key: str) -> str:
        """The file that set ``key`` (or its nearest enclosing section), as it should appear in an error."""
        path = key.split("[")[0]
        while path:
            if path in self.origins:
                origin = self.origins[path]
                return origin if origin == self.source else f"{origin} (extended by {self.source})"
            path = path.rpartition(".")[0]
        return self.source

    def fail(self, key: str, message: str) -> ScenarioError:
        return ScenarioError(self.source_of(key), key, message)

    def scalar(self, key: str, leaf: _Leaf, v: Any) -> Any:
        return check_scalar(self.source_of(key), key, leaf, v, ScenarioError)

    def leaf(self, key: str, leaf: _Leaf, v: Any) -> Any:
        if leaf.type == "float_pair":
            if not (
                isinstance(v, list)
                and len(v) == 2
                and all(is_number(x) and math.isfinite(x) for x in v)
                and v[0] < v[1]
            ):
                raise self.fail(key, f"got {abbreviate(v)}; expected {leaf.describe()}")
            return [float(x) for x in v]
        if leaf.type == "float_list":
            item = _Leaf("float", low=leaf.low, high=leaf.high)
            if not isinstance(v, list) or not v:
                raise self.fail(key, f"got {abbreviate(v)}; expected {leaf.describe()}")
            out = [self.scalar(f"{key}[{i}]", item, x) for i, x in enumerate(v)]
            if any(b <= a for a, b in itertools.pairwise(out)):
                raise self.fail(key, f"got {abbreviate(v)}; expected {leaf.describe()}")
            return out
        if leaf.type == "enum_list":
            item = _Leaf("enum", allowed=leaf.allowed)
            if not isinstance(v, list) or not v or len(set(map(str, v))) != len(v):
                raise self.fail(key, f"got {abbreviate(v)}; expected {leaf.describe()}")
            return [self.scalar(f"{key}[{i}]", item, x) for i, x in enumerate(v)]
        if leaf.type == "require":
            if v is None:  # `require:` with nothing under it
                return []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise self.fail(key, f"got {v!r}; expected a list of constraint strings, e.g. "
                                     "[\"abs(other.time_gap_s) > 0.3\"]")
            return list(v)
        if leaf.type == "run_defaults":
            return self.run_defaults(key, v)
        if leaf.sampled:
            return self.param(key, leaf, v)
        return self.scalar(key, leaf, v)

    def run_defaults(self, key: str, v: Any) -> dict[str, Any]:
        """A ``run_defaults:`` mapping, checked against the run config (nested sections, as in ``--config``
        files); returned as given (``None``, an empty ``run_defaults:``, is ``{}``)."""
        from intersection_meta.config import ConfigError, make_config

        if v is None:
            return {}
        if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
            raise self.fail(key, f"got {abbreviate(v)}; expected run-config sections, e.g. {{pg: "
                                 "{normalize_advantages: false}} (python -m intersection_meta.train --help-config)")
        if "scenario" in v.get("train", {}):
            raise self.fail(f"{key}.train.scenario", "a scenario cannot choose the scenario to train on")
        try:
            make_config(v, source=self.source_of(key))
        except ConfigError as exc:
            raise self.fail(f"{key}.{exc.key}", exc.message) from None
        return {section: dict(values) for section, values in v.items()}

    def normal(self, key: str, leaf: _Leaf, v: dict[str, Any]) -> Normal:
        if set(v) != {"normal", "clip"}:
            raise self.fail(key, f"got keys {sorted(map(str, v))}; a normal distribution is "
                                 "{normal: [mean, std], clip: [low, high]}")
        plain = replace(leaf, sampled=False)
        pair = v["normal"]
        if not (isinstance(pair, list) and len(pair) == 2 and all(is_number(x) and math.isfinite(x) for x in pair)
                and pair[1] > 0):
            raise self.fail(f"{key}.normal", f"got {pair!r}; expected [mean, std] with std > 0")
        clip = v["clip"]
        if not isinstance(clip, list) or len(clip) != 2:
            raise self.fail(f"{key}.clip", f"got {clip!r}; expected [low, high] ({leaf.describe()})")
        lo = self.scalar(f"{key}.clip[0]", plain, clip[0])
        hi = self.scalar(f"{key}.clip[1]", plain, clip[1])
        if not lo < hi:
            raise self.fail(f"{key}.clip", f"got {clip!r}; a clip range needs low < high")
        return Normal(float(pair[0]), float(pair[1]), lo, hi)

    def param(self, key: str, leaf: _Leaf, v: Any) -> Param:
        if isinstance(v, dict) and "normal" in v and leaf.type == "float":
            return self.normal(key, leaf, v)
        if isinstance(v, dict):
            if set(v) != {"choice"}:
                extra = sorted(set(v) - {"choice"})
                raise self.fail(key, f"unknown key(s) {extra} in a choice; write {{choice: [a, b, ...]}}")
            opts = v["choice"]
            if not isinstance(opts, list) or not opts:
                raise self.fail(
                    f"{key}.choice", f"got {abbreviate(opts)}; expected a non-empty list of options ({leaf.describe()})"
                )
            plain = replace(leaf, sampled=False)
            vals = tuple(self.scalar(f"{key}.choice[{i}]", plain, o) for i, o in enumerate(opts))
            if len(set(vals)) != len(vals):
                raise self.fail(f"{key}.choice", f"got duplicate options {abbreviate(list(opts))}")
            return Choice(vals)
        if isinstance(v, list):
            if leaf.type != "float":
                raise self.fail(key, f"got a list {abbreviate(v)}; ranges are only for numbers. Use {{choice: {abbreviate(v)}}}")
            if len(v) != 2:
                raise self.fail(key, f"got {abbreviate(v)}; a range is [low, high] (two numbers)")
            plain = replace(leaf, sampled=False)
            lo = self.scalar(f"{key}[0]", plain, v[0])
            hi = self.scalar(f"{key}[1]", plain, v[1])
            if not lo < hi:
                raise self.fail(
                    key,
                    f"got the empty range {abbreviate(v)}; a range needs low < high "
                    f"(for a fixed value write a single number)",
                )
            return Range(lo, hi)
        return Fixed(self.scalar(key, replace(leaf, sampled=False), v))

    def section(self, prefix: str, schema: Mapping[str, Any], data: Any) -> dict[str, Any]:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.fail(
                prefix or "(top level)", f"got {type(data).__name__} {abbreviate(data)}; expected a mapping"
            )
        for k in data:
            if k not in schema:
                raise self.fail(_join(prefix, str(k)), "unknown key" + did_you_mean(str(k), list(schema)))
        out: dict[str, Any] = {}
        for k, sub in schema.items():
            path = _join(prefix, k)
            if isinstance(sub, dict):
                out[k] = self.section(path, sub, data.get(k))
                continue
            if k not in data:
                if sub.required:
                    raise self.fail(path, f"missing required key; expected {sub.describe()}")
                default = sub.default
                out[k] = Fixed(default) if sub.sampled else default
                continue
            if sub.type == "medium":
                out[k] = data[k]  # validated later against the parameters
            elif sub.type == "float" and sub.default is None and data[k] is None:
                out[k] = None
            else:
                out[k] = self.leaf(path, sub, data[k])
        return out


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------------------------------
# The Scenario value


@dataclass(frozen=True)
class Scenario:
    """A validated task distribution. Build with :func:`load_scenario` or :meth:`Scenario.from_dict`."""

    name: str
    kind: str
    source: str
    description: str
    target_return: float | None
    #: Validated, normalised sections (sampled keys are Fixed/Range/Choice),
    #: e.g. ``spec["other"]["speed_mps"]``.
    spec: Mapping[str, Any] = field(repr=False)
    #: The concrete medium task's sampled values, by dotted key.
    medium_values: Mapping[str, Any] = field(repr=False)
    #: Every constraint a sampled task must satisfy: the file's ``require:`` lines, then the built-in ones.
    constraints: tuple[Constraint, ...] = field(default=(), repr=False)

    @property
    def run_defaults(self) -> dict[str, Any]:
        """The file's ``run_defaults:`` (run-config sections; ``{}`` without them): see
        :func:`intersection_meta.config.scenario_defaults`."""
        return self.spec.get("run_defaults", {})

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>", origins: Mapping[str, str] | None = None) -> Scenario:
        """Validate a parsed YAML mapping. Raises :class:`ScenarioError`.

        Args:
            data: The mapping (``extends:`` already resolved, see :func:`load_scenario`).
            source: The file (or other origin) named in errors.
            origins: Dotted key -> file that set it, for scenarios built with ``extends:``, so an error names the
                file the bad key is in.
        """
        if isinstance(data, dict) and "extends" in data:
            raise ScenarioError(source, "extends", "is resolved when a file is loaded (load_scenario); a mapping "
                                                   "given directly must be complete")
        if data is None:
            raise ScenarioError(
                source, "", "the file is empty; expected a scenario mapping (see scenarios/*.yaml)"
            )
        if not isinstance(data, dict):
            raise ScenarioError(
                source, "(top level)", f"got {type(data).__name__}; expected a mapping of keys"
            )
        kind = data.get("kind")
        if kind is None:
            raise ScenarioError(source, "kind", f"missing required key; expected one of {', '.join(KINDS)}")
        if not isinstance(kind, str) or kind not in SCHEMAS:
            raise ScenarioError(
                source,
                "kind",
                f"got {abbreviate(kind)}"
                + (
                    f" (did you mean '{m[0]}'?)"
                    if (m := difflib.get_close_matches(str(kind), KINDS, n=1))
                    else ""
                )
                + f"; expected one of {', '.join(KINDS)}",
            )
        v = _Validator(source, origins)
        spec = v.section("", SCHEMAS[kind], data)
        if kind == "intersection":
            _check_intersection(v, spec)
        spec.pop("medium_task")
        constraints = _compile_constraints(v, spec)
        medium = _resolve_medium(v, spec, data.get("medium_task", "midpoint"))
        for c in constraints:
            if not _holds(v, c, medium):
                raise v.fail("medium_task", f"the medium task {_show_values(medium, c.expr.keys)} breaks "
                                            f"{c.describe()}; give medium_task: explicitly")
        return cls(
            name=spec["name"],
            kind=kind,
            source=source,
            description=spec["description"],
            target_return=spec["target_return"],
            spec=spec,
            medium_values=medium,
            constraints=constraints,
        )

    # ---- the distribution ----------------------------------------------------------------------------------
    def sampled_keys(self) -> dict[str, Param]:
        """Every sampled key (dotted path) with its distribution, in schema order."""
        return dict(_walk_params(self.spec))

    def sample_values(self, rng: np.random.Generator) -> dict[str, Any]:
        """One unconstrained draw of every sampled key (use :meth:`sample_tasks` for tasks)."""
        return {k: p.sample(rng) for k, p in self.sampled_keys().items()}

    def broken_constraint(self, values: Mapping[str, Any]) -> Constraint | None:
        """The first constraint that ``values`` (dotted key -> value) breaks, or None if all hold."""
        v = _Validator(self.source)
        return next((c for c in self.constraints if not _holds(v, c, values)), None)

    def sample_tasks(self, n: int, seed: int = 0) -> list[Task]:
        """``n`` tasks; task ``i`` depends only on ``(seed, i)``: a prefix of a larger sample is the same.

        Raises:
            ScenarioError: a task needed more than :data:`MAX_DRAWS_PER_TASK` draws to satisfy the constraints;
                the message names the constraint that rejected most of them.
        """
        return self.sample_with_stats(n, seed).tasks

    def sample_with_stats(self, n: int, seed: int = 0) -> Sample:
        """Like :meth:`sample_tasks`, also counting the draws (rejection sampling against :attr:`constraints`).

        Task ``i`` draws from its own generator seeded by ``derive_seed(seed, i)`` until a draw satisfies every
        constraint; its first draw is the one an unconstrained scenario would take, so adding a constraint that
        a task already satisfies does not change it.
        """
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {abbreviate(n)}")
        tasks, draws = [], 0
        rejected: dict[str, int] = {}
        for i in range(n):
            rng = np.random.default_rng(derive_seed(seed, i))
            per_task: dict[Constraint, int] = {}
            for _ in range(MAX_DRAWS_PER_TASK):
                values = self.sample_values(rng)
                draws += 1
                broken = self.broken_constraint(values)
                if broken is None:
                    tasks.append(self.task_from_values(values))
                    break
                per_task[broken] = per_task.get(broken, 0) + 1
                rejected[broken.key] = rejected.get(broken.key, 0) + 1
            else:
                worst = max(per_task, key=per_task.__getitem__)
                raise ScenarioError(
                    self.source, worst.key,
                    f"no task satisfied the constraints in {MAX_DRAWS_PER_TASK} draws (task {i}, seed {seed}); "
                    f"{worst.describe()} rejected {per_task[worst]} of them. Relax it or narrow the ranges",
                )
        return Sample(tasks, draws, rejected)

    def acceptance(self, n_draws: int = 2000, seed: int = 0) -> Sample:
        """Estimate the acceptance rate from ``n_draws`` unconstrained draws (no task is built).

        Returns:
            A :class:`Sample` with no tasks; ``accepted`` of ``draws`` satisfied every constraint.
        """
        rng = np.random.default_rng(derive_seed(seed, 0xACCE97))
        rejected: dict[str, int] = {}
        for _ in range(n_draws):
            broken = self.broken_constraint(self.sample_values(rng))
            if broken is not None:
                rejected[broken.key] = rejected.get(broken.key, 0) + 1
        return Sample([], n_draws, rejected)

    def medium_task(self) -> Task:
        """The representative task used by the Directed-* step (``medium_task:`` in the file)."""
        return self.task_from_values(self.medium_values)

    def task_from_values(self, values: Mapping[str, Any]) -> Task:
        s = self.spec
        if self.kind == "intersection":
            settings = IntersectionSettings(
                duration_s=s["episode"]["duration_s"],
                policy_frequency_hz=s["episode"]["policy_frequency_hz"],
                simulation_frequency_hz=s["episode"]["simulation_frequency_hz"],
                action=s["action"]["type"],
                target_speeds_mps=tuple(s["action"]["target_speeds_mps"]),
                observation_features=tuple(s["observation"]["features"]),
                observation_absolute=s["observation"]["absolute"],
                rewards=RewardWeights(
                    collision_reward=s["reward"]["collision_reward"],
                    high_speed_reward=s["reward"]["high_speed_reward"],
                    arrived_reward=s["reward"]["arrived_reward"],
                    reward_speed_range_mps=tuple(s["reward"]["reward_speed_range_mps"]),
                    normalize_reward=s["reward"]["normalize_reward"],
                ),
            )
            fields = {f: values[k] if isinstance(values[k], str) else float(values[k])
                      for k, f in INTERSECTION_TASK_FIELDS.items()}
            if fields["other_driver"] != "idm":
                # The IDM parameters do not apply: a constant-speed task carries the defaults, so its ID does not
                # depend on values that cannot change its crossing.
                fields.update(IDM_PARAMETER_DEFAULTS)
            return IntersectionTask(scenario=self.name, **fields, settings=settings)
        if self.kind == "cartpole":
            return CartPoleTask(
                scenario=self.name,
                **{k.split(".", 1)[1]: float(v) for k, v in values.items()},
                max_episode_steps=s["episode"]["max_steps"],
            )
        return LunarLanderTask(
            scenario=self.name,
            **{k.split(".", 1)[1]: float(v) for k, v in values.items()},
            enable_wind=s["physics"]["enable_wind"],
            continuous=s["action"]["continuous"],
            max_episode_steps=s["episode"]["max_steps"],
        )

    def task_values(self, task: Task) -> dict[str, Any]:
        """The sampled keys' values (dotted key -> value) that give ``task``: the inverse of
        :meth:`task_from_values` (e.g. for reports by parameter, or ``--set`` lines that pin one task)."""
        return {k: getattr(task, task_field(self.kind, k)) for k in self.sampled_keys()}

    # ---- serialisation -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved scenario as a plain mapping that :meth:`from_dict` accepts (round trip)."""

        def plain(section: Any) -> Any:
            if isinstance(section, dict):
                return {k: plain(v) for k, v in section.items()}
            if isinstance(section, PARAM_TYPES):
                return section.to_yaml()
            return section

        out = plain(dict(self.spec))
        out["medium_task"] = _nest(self.medium_values)
        if not out.get("require"):
            out.pop("require", None)
        if not out.get("run_defaults"):
            out.pop("run_defaults", None)
        if out.get("target_return") is None:
            out.pop("target_return", None)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


#: Sampled key of an intersection scenario -> field of :class:`IntersectionTask`.
INTERSECTION_TASK_FIELDS: dict[str, str] = {
    "ego.entry": "ego_entry",
    "ego.intent": "ego_intent",
    "ego.speed_mps": "ego_speed_mps",
    "ego.distance_to_stop_m": "ego_distance_to_stop_m",
    "other.entry": "other_entry",
    "other.intent": "other_intent",
    "other.driver": "other_driver",
    "other.speed_mps": "other_speed_mps",
    "other.time_gap_s": "time_gap_s",
    "other.idm_time_headway_s": "other_idm_time_headway_s",
    "other.idm_min_gap_m": "other_idm_min_gap_m",
    "other.idm_max_accel_mps2": "other_idm_max_accel_mps2",
}

#: The sampled keys of the other driver's IDM parameters (they apply to ``other.driver: idm`` only).
IDM_KEYS: tuple[str, ...] = tuple(k for k, f in INTERSECTION_TASK_FIELDS.items() if f in IDM_PARAMETER_DEFAULTS)


def task_field(kind: str, key: str) -> str:
    """The task field a sampled key sets: ``other.time_gap_s`` -> ``time_gap_s``, ``physics.force_n`` ->
    ``force_n``."""
    return INTERSECTION_TASK_FIELDS[key] if kind == "intersection" else key.split(".", 1)[1]


def _walk_params(spec: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Param]]:
    for k, v in spec.items():
        path = _join(prefix, k)
        if isinstance(v, dict):
            yield from _walk_params(v, path)
        elif isinstance(v, PARAM_TYPES):
            yield path, v


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in flat.items():
        head, tail = k.split(".", 1)
        out.setdefault(head, {})[tail] = v
    return out


def _resolve_medium(v: _Validator, spec: Mapping[str, Any], raw: Any) -> dict[str, Any]:
    params = dict(_walk_params(spec))
    medium = {k: p.midpoint() for k, p in params.items()}
    if raw == "midpoint":
        return medium
    if not isinstance(raw, dict):
        raise v.fail(
            "medium_task",
            f"got {abbreviate(raw)}; expected 'midpoint' or a mapping of concrete values, e.g. "
            f"{{other: {{speed_mps: 7.5}}}} (unlisted keys take their midpoint)",
        )
    sections = sorted({k.split(".")[0] for k in params})
    for sec, sub in raw.items():
        if sec not in sections:
            raise v.fail(f"medium_task.{sec}", "unknown key" + did_you_mean(str(sec), sections))
        if not isinstance(sub, dict):
            raise v.fail(f"medium_task.{sec}", f"got {abbreviate(sub)}; expected a mapping of concrete values")
        keys = [k.split(".", 1)[1] for k in params if k.startswith(sec + ".")]
        for key, value in sub.items():
            dotted = f"{sec}.{key}"
            if dotted not in params:
                raise v.fail(f"medium_task.{dotted}", "unknown key" + did_you_mean(str(key), keys))
            leaf = SCHEMAS[spec["kind"]][sec][key]
            medium[dotted] = v.scalar(f"medium_task.{dotted}", replace(leaf, sampled=False), value)
    return medium


def _check_intersection(v: _Validator, spec: Mapping[str, Any]) -> None:
    """Cross-key checks that hold for the whole file (per-task ones are constraints, see :data:`BUILT_IN`)."""
    ego, other = spec["ego"], spec["other"]
    shared = set(ego["entry"].values()) & set(other["entry"].values())
    if shared:
        raise v.fail(
            "other.entry",
            f"the other vehicle can enter from {sorted(shared)}, the ego's approach too; "
            "both vehicles on one approach is not a crossing. Use different entries",
        )
    if "idm" not in other["driver"].values():
        for key in IDM_KEYS:
            param, default = other[key.split(".", 1)[1]], IDM_PARAMETER_DEFAULTS[INTERSECTION_TASK_FIELDS[key]]
            if param.values() != (default,):
                raise v.fail(
                    key,
                    f"got {abbreviate(param.to_yaml())}, but other.driver is {abbreviate(other['driver'].to_yaml())}:"
                    f" the IDM parameters apply to driver idm only. Remove the key (default {default:g}) or let "
                    "other.driver be idm or {choice: [idm, constant_speed]}",
                )
    lo, hi = spec["reward"]["reward_speed_range_mps"]
    if hi > 40:
        raise v.fail(
            "reward.reward_speed_range_mps", f"got [{lo}, {hi}]; speeds above 40 m/s are unreachable"
        )


# ----------------------------------------------------------------------------------------------------
# Constraints (``require:``) and rejection sampling

#: Draws a single task may take before sampling gives up with an error naming the constraint.
MAX_DRAWS_PER_TASK = 1000


@dataclass(frozen=True)
class Constraint:
    """A compiled boolean constraint over sampled keys: ``key`` names it in errors (``require[0]``, or the
    built-in's name), ``expr`` is the compiled expression."""

    key: str
    expr: Expr

    def describe(self) -> str:
        return f"{self.key} '{self.expr.text}'"


@dataclass(frozen=True)
class Sample:
    """Tasks drawn by rejection sampling and what it cost: ``draws`` in all, ``rejected`` per constraint key."""

    tasks: list[Task]
    draws: int
    rejected: Mapping[str, int]

    @property
    def accepted(self) -> int:
        return self.draws - sum(self.rejected.values())

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.draws if self.draws else 1.0

    def describe(self) -> str:
        """One line, e.g. ``acceptance 412/500 draws (82.4%); rejected by require[0]: 88``."""
        text = f"acceptance {self.accepted}/{self.draws} draws ({self.acceptance_rate:.1%})"
        if self.rejected:
            text += "; rejected by " + ", ".join(f"{k}: {n}" for k, n in self.rejected.items())
        return text


#: Built-in per-task constraints of each kind (name, expression), checked after the file's ``require:`` lines.
#: The other vehicle's start distance d_o = v_o * (d_e / v_e + gap) must lie on its 100 m approach lane
#: (:func:`intersection_meta.tasks.other_distance_to_stop_m`).
BUILT_IN: dict[str, tuple[tuple[str, str], ...]] = {
    "intersection": (
        (
            "built-in 'other starts inside its approach lane'",
            f"0 <= other.speed_mps * (ego.distance_to_stop_m / ego.speed_mps + other.time_gap_s) "
            f"<= {APPROACH_LANE_LENGTH_M:g}",
        ),
    ),
}


def _key_types(spec: Mapping[str, Any]) -> dict[str, str]:
    """Sampled dotted key -> expression type (``num`` or ``str``)."""
    return {k: NUM if all(is_number(x) for x in p.values()) else STR for k, p in _walk_params(spec)}


def _compile_constraints(v: _Validator, spec: Mapping[str, Any]) -> tuple[Constraint, ...]:
    types = _key_types(spec)
    out = []
    for i, text in enumerate(spec.get("require", [])):
        try:
            out.append(Constraint(f"require[{i}]", compile_expr(text, types)))
        except ExprError as exc:
            raise v.fail(f"require[{i}]", f"{text!r}: {exc}") from None
    for name, text in BUILT_IN.get(spec["kind"], ()):
        out.append(Constraint(name, compile_expr(text, types)))
    return tuple(out)


def _holds(v: _Validator, c: Constraint, values: Mapping[str, Any]) -> bool:
    try:
        return c.expr.evaluate(values)
    except ExprError as exc:  # a division by zero for these values
        raise v.fail(c.key, f"'{c.expr.text}' {exc} with {_show_values(values, c.expr.keys)}") from None


def _show_values(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    return "(" + ", ".join(f"{k}={values[k]:g}" if is_number(values[k]) else f"{k}={values[k]}" for k in keys) + ")"


# ----------------------------------------------------------------------------------------------------
# Loading and overrides


def scenario_path(name_or_path: str | Path) -> Path:
    """A name resolves to ``scenarios/NAME.yaml``; anything with a suffix or a separator is a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    return SCENARIO_DIR / f"{name_or_path}.yaml"


def available_scenarios() -> list[str]:
    """Names of the shipped scenarios; files whose name starts with ``_`` are base files (``extends:``)."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml") if not p.stem.startswith("_"))


Override = str | tuple[str, Any]


def _parsed(overrides: Sequence[Override]) -> list[tuple[str, str, Any]]:
    """``(text, key, value)`` per override: ``KEY.PATH=VALUE`` strings are parsed by the one ``--set`` parser
    (:func:`intersection_meta.schema.parse_set`); parsed ``(key, value)`` pairs pass through."""
    return [
        (f"{item[0]}={abbreviate(item[1])}", *item) if isinstance(item, tuple) else (item, *parse_set([item], ScenarioError)[0])
        for item in overrides
    ]


def _describe(overrides: Sequence[Override]) -> str:
    return " ".join(text for text, _, _ in _parsed(overrides))


def apply_overrides(data: Any, overrides: Sequence[Override], source: str) -> Any:
    """Return a copy of the raw mapping with each override applied (validated later).

    Args:
        data: A parsed scenario mapping.
        overrides: ``"KEY.PATH=VALUE"`` strings or already parsed ``(key, value)`` pairs.
        source: Unused; kept for the callers that pass the file name.
    """
    if not overrides:
        return data
    if not isinstance(data, dict):
        return data
    import copy

    data = copy.deepcopy(data)
    kind = data.get("kind")
    schema = SCHEMAS.get(kind, _INTERSECTION_SCHEMA)
    for text, key, value in _parsed(overrides):
        parts = key.split(".")
        node: Any = data
        sub: Any = schema
        for i, part in enumerate(parts):
            where = ".".join(parts[: i + 1])
            if not isinstance(sub, dict) or part not in sub:
                allowed = list(sub) if isinstance(sub, dict) else []
                raise ScenarioError(f"--set {text}", where, "unknown key" + did_you_mean(part, allowed))
            if i == len(parts) - 1:
                if isinstance(sub[part], dict):
                    raise ScenarioError(
                        f"--set {text}", where, f"is a section; set one of its keys: {', '.join(sub[part])}"
                    )
                node[part] = value
            else:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node, sub = node[part], sub[part]
    return data


def load_scenario(name_or_path: str | Path, overrides: Sequence[Override] = ()) -> Scenario:
    """Load and validate a scenario by name (``scenarios/NAME.yaml``) or path, with optional overrides
    (``"KEY.PATH=VALUE"`` strings or parsed ``(key, value)`` pairs, see :func:`apply_overrides`).

    Raises:
        ScenarioError: naming the file, the key path and what is allowed.
    """
    path = scenario_path(name_or_path)
    if not path.exists() and path.parent == SCENARIO_DIR:
        names = available_scenarios()
        raise ScenarioError(
            str(name_or_path),
            "",
            "no scenario of that name"
            + did_you_mean(str(name_or_path), names, what="available"),
        )
    data, origins = read_scenario_file(path)
    source = str(path)
    if overrides:
        data = apply_overrides(data, overrides, source)
        source = f"{path} (with --set {_describe(overrides)})"
        for _, key, _ in _parsed(overrides):
            _set_origin(origins, key, source)
    return Scenario.from_dict(data, source=source, origins=origins)


# ----------------------------------------------------------------------------------------------------
# Inheritance (``extends:``)

#: Longest chain of ``extends:`` (a child, its base, the base's base, ...).
MAX_EXTENDS_DEPTH = 8


def read_scenario_file(path: str | Path) -> tuple[Any, dict[str, str]]:
    """A scenario file's mapping with ``extends:`` resolved, and where each key came from.

    ``extends: NAME`` names a scenario file in the scenario folder (``_base_intersection`` is
    ``scenarios/_base_intersection.yaml``); ``extends: PATH`` (with a ``.yaml`` suffix or a folder) is relative to
    the extending file. The base is read (and resolved) first; the child is deep-merged onto it: sections merge
    key by key, anything else (a number, a list such as ``require:``, a range, a ``{choice: ...}`` or
    ``{normal: ...}`` distribution, ``medium_task``) replaces the base's value as a whole.

    Returns:
        ``(mapping, origins)``: origins maps dotted keys to the file that set them (the nearest enclosing key
        that is listed counts), for error messages.

    Raises:
        ScenarioError: a missing or unreadable base, a cycle, a chain deeper than :data:`MAX_EXTENDS_DEPTH`, or a
            bad ``extends:`` value, naming the file that holds the ``extends:``.
    """
    return _read_extending(Path(path), ())


def _read_extending(path: Path, chain: tuple[Path, ...]) -> tuple[Any, dict[str, str]]:
    data = read_yaml_file(path, ScenarioError)
    source = str(path)
    if not isinstance(data, dict):
        return data, {}
    origins = {str(k): source for k in data if k != "extends"}
    if "extends" not in data:
        return data, origins
    ref = data["extends"]
    if not isinstance(ref, str) or not ref.strip():
        raise ScenarioError(source, "extends", f"got {ref!r}; expected a scenario name or a path to a .yaml file")
    base_path = _extends_path(ref, path)
    seen = [*chain, path.resolve()]
    if base_path.resolve() in seen:
        cycle = " -> ".join(p.name for p in [*seen[seen.index(base_path.resolve()):], base_path.resolve()])
        raise ScenarioError(source, "extends", f"cycle of extends: {cycle}")
    if len(seen) >= MAX_EXTENDS_DEPTH:
        raise ScenarioError(source, "extends", f"more than {MAX_EXTENDS_DEPTH} levels of extends")
    if not base_path.is_file():
        hint = did_you_mean(ref, _base_names(), what="names") if base_path.parent == SCENARIO_DIR else ""
        raise ScenarioError(source, "extends", f"{ref!r}: no such scenario file ({base_path}){hint}")
    base, base_origins = _read_extending(base_path, tuple(seen))
    if not isinstance(base, dict):
        raise ScenarioError(str(base_path), "(top level)", f"expected a mapping (it is extended by {source})")
    child = {k: v for k, v in data.items() if k != "extends"}
    schema = SCHEMAS.get(child.get("kind", base.get("kind")), {})
    merged = _deep_merge(base, child, schema, "", base_origins, source)
    return merged, base_origins


def _extends_path(ref: str, child: Path) -> Path:
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p if p.is_absolute() else child.parent / p
    return SCENARIO_DIR / f"{ref}.yaml"


def _base_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _origin(origins: Mapping[str, str], key: str) -> str | None:
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return None


def _set_origin(origins: dict[str, str], key: str, source: str) -> None:
    """``key`` (and everything under it) now comes from ``source``."""
    for k in [k for k in origins if k.startswith(key + ".")]:
        del origins[k]
    origins[key] = source


def _deep_merge(base: Mapping[str, Any], child: Mapping[str, Any], schema: Mapping[str, Any], prefix: str,
                origins: dict[str, str], child_source: str) -> dict[str, Any]:
    """``child`` merged onto ``base`` (both raw mappings); ``origins`` is updated in place."""
    out = dict(base)
    for k, v in child.items():
        path = _join(prefix, str(k))
        sub = schema.get(k)
        if isinstance(sub, dict) and isinstance(v, dict) and isinstance(base.get(k), dict):
            inherited = _origin(origins, path)
            for base_key in base[k]:
                origins.setdefault(_join(path, str(base_key)), inherited or child_source)
            origins[path] = child_source
            out[k] = _deep_merge(base[k], v, sub, path, origins, child_source)
        elif getattr(sub, "type", None) == "run_defaults" and isinstance(v, dict) and isinstance(base.get(k), dict):
            # run-config sections merge key by key too: a child changes one key without repeating the others
            out[k] = {sec: dict(vals) if isinstance(vals, dict) else vals for sec, vals in base[k].items()}
            for sec, vals in v.items():
                both = isinstance(vals, dict) and isinstance(out[k].get(sec), dict)
                out[k][sec] = {**out[k][sec], **vals} if both else vals
            _set_origin(origins, path, child_source)
        else:
            out[k] = v
            _set_origin(origins, path, child_source)
    return out
