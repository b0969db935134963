"""Run configuration: frozen sections, each handed unchanged to the code that uses it.

- ``train``: the outer loop (:mod:`intersection_meta.trainer`): scenario, seed, iterations, sampling sizes, the
  outer optimiser, the final evaluation, checkpoints.
- ``meta``: the meta-learner (:class:`intersection_meta.meta.MetaLearner`): ``algo``, inner and directed steps.
- ``pg``: the loss (:func:`intersection_meta.pg.policy_loss`): ``gamma``, ``gae_lambda``, advantages, baseline.
- ``policy``: the network (:func:`intersection_meta.networks.build_policy`): ``hidden_sizes``.
- ``env``: the env factory (:func:`intersection_meta.envs.factory.make_batch_env`): ``backend``.

A key has one name from the command line to the maths (``--set pg.gae_lambda=0.95`` is ``PGConfig.gae_lambda``
is the ``gae_lambda`` argument of :func:`intersection_meta.pg.gae`), one default and one validation: each field
carries a :class:`~intersection_meta.schema.Leaf`, checked when the section is constructed. Every key name is
unique across sections, so the flat name is accepted too (``--set gae_lambda=0.95``): that is how run configs and
checkpoints written before the sections existed still load. ``--help-config`` prints :func:`config_help`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from intersection_meta.registry import (
    ALGORITHMS,
    BACKENDS,
    DIRECTED_MODES,
    INNER_ADVANTAGES,
    INNER_ESTIMATORS,
    INPUT_NORMS,
    META_LR_SCHEDULES,
    OUTER_OPTIMIZERS,
    WARM_STARTS,
)
from intersection_meta.schema import Leaf, LoadError, abbreviate, check_scalar, parse_set, read_yaml_file


class ConfigError(LoadError):
    """Invalid run configuration or command-line value; ``str(err)`` is one line naming source and key."""


def _key(type_: str, default: Any, help: str, **limits: Any) -> Any:
    leaf = Leaf(type_, default=default, help=help, **limits)
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: tuple(default), metadata={"leaf": leaf})
    return field(default=default, metadata={"leaf": leaf})


def _choice(default: str, what: str, table: Mapping[str, Any]) -> Any:
    """An ``enum`` key whose allowed values are ``table``'s names, documented as ``what: name = doc; ...`` (a
    table's values are doc strings or specs with a ``doc``)."""
    docs = "; ".join(f"{k} = {getattr(v, 'doc', v)}" for k, v in table.items())
    return _key("enum", default, f"{what}: {docs}", allowed=tuple(table))


class _Section:
    """Validates every field against its :class:`Leaf` on construction (the one validation of each key)."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            key, leaf = f"{self.section}.{f.name}", f.metadata["leaf"]
            value = check_scalar(type(self).__name__, key, leaf, getattr(self, f.name), ConfigError)
            object.__setattr__(self, f.name, value)


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The outer loop: what to train on, how much to sample, the outer optimiser, evaluation and output."""

    section: ClassVar[str] = "train"
    scenario: str = _key("str", "yield_left", "scenario name (scenarios/NAME.yaml) or path to a scenario file")
    seed: int = _key("int", 0, "run seed; every random stream derives from (seed, iteration, task index)", low=0)
    iterations: int = _key("int", 120, "number of meta-iterations", low=1)
    meta_batch_size: int = _key("int", 20, "tasks per meta-iteration", low=1)
    episodes_per_task: int = _key("int", 20, "episodes per task for each inner step and for the outer loss", low=1)
    directed_episodes: int = _key("int", 20, "episodes sampled on the medium task for the directed step", low=1)
    meta_lr: float = _key("float", 0.001, "outer Adam step size", low=0.0)
    meta_lr_schedule: str = _choice("linear", "outer Adam step size over the run", META_LR_SCHEDULES)
    outer_optimizer: str = _choice("adam", "outer step", OUTER_OPTIMIZERS)
    trpo_max_kl: float = _key(
        "float", 0.01, "TRPO trust-region radius: mean KL of the post-adaptation policies", low=0.0, low_open=True
    )
    outer_grad_clip: float = _key("float", 1.0, "max global norm of the outer gradient (0 disables clipping)", low=0.0)
    eval_tasks: int = _key("int", 40, "held-out tasks for the final evaluation (0 skips it)", low=0)
    checkpoint_every: int = _key(
        "int", 10, "keep a numbered checkpoint every N iterations (last.pt is always updated)", low=1
    )


@dataclass(frozen=True)
class MetaConfig(_Section):
    """The meta-learner: which algorithm, its inner (adaptation) steps and the Directed-* step."""

    section: ClassVar[str] = "meta"
    algo: str = _key("enum", "directed_maml", "meta-learner", allowed=tuple(ALGORITHMS))
    inner_lr: float = _key(
        "float", 0.05, "inner (adaptation) step size; Meta-SGD's initial per-parameter step size", low=0.0
    )
    inner_steps: int = _key(
        "int",
        1,
        "policy-gradient adaptation steps per task, each on fresh episodes sampled with the task's current "
        "parameters (in training and in evaluation)",
        low=1,
    )
    inner_estimator: str = _choice("reinforce", "inner-loss surrogate", INNER_ESTIMATORS)
    inner_advantages: str = _choice("pg", "inner-loss advantages", INNER_ADVANTAGES)
    directed_lr: float = _key("float", 0.05, "step size beta_0 of the Directed-* step on the medium task", low=0.0)
    directed_lr_decay: float = _key(
        "float",
        0.98,
        "beta_k = directed_lr * directed_lr_decay**k at iteration k (1 = constant; 0 is rejected: it would keep "
        "sampling the medium task for a step of size 0 - use a non-directed algo instead)",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    directed_mode: str = _choice("pg", "directed step", DIRECTED_MODES)
    latent_lr: float = _key(
        "float",
        10.0,
        "latent policies (policy.latent_dim > 0): inner step size of the latent mean; the inner loss is the latent's "
        "REINFORCE term with normalised episode advantages, so the step is in units of the latent's std",
        low=0.0,
    )
    latent_sigma_lr: float = _key(
        "float", 0.0, "latent policies: inner step size of the latent log-std (0 keeps sigma fixed in adaptation)", low=0.0
    )
    latent_kl: float = _key(
        "float", 1.0, "latent policies: weight of KL(N(mu, sigma) || N(0, I)) in the outer loss (MAESN's prior)", low=0.0
    )


@dataclass(frozen=True)
class PGConfig(_Section):
    """The policy-gradient loss: discounting, GAE, the linear baseline, advantage normalisation, entropy."""

    section: ClassVar[str] = "pg"
    gamma: float = _key("float", 0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = _key("float", 1.0, "GAE lambda (1 = Monte-Carlo returns minus baseline)", low=0.0, high=1.0)
    normalize_advantages: bool = _key(
        "bool",
        True,
        "normalise advantages per task (mean 0, std 1); false keeps their scale, so tasks with larger return "
        "differences weigh more",
    )
    bootstrap_truncated: bool = _key(
        "bool",
        True,
        "bootstrap episodes cut by the time limit with the baseline value (gymnasium semantics); false treats the "
        "limit as the end of a finite-horizon task",
    )
    entropy_coef: float = _key(
        "float", 0.0, "policy-entropy bonus weight in the inner and outer losses (0 = plain REINFORCE)", low=0.0
    )
    baseline_reg: float = _key("float", 1e-5, "ridge regularisation of the linear feature baseline", low=0.0)


@dataclass(frozen=True)
class PolicyConfig(_Section):
    """The policy network."""

    section: ClassVar[str] = "policy"
    hidden_sizes: tuple[int, ...] = _key("int_list", (64, 64), "hidden layer sizes of the policy MLP", high=4096)
    input_norm: str = _choice("fitted", "policy-input standardisation", INPUT_NORMS)
    warm_start: str = _choice("none", "initial policy", WARM_STARTS)
    latent_dim: int = _key(
        "int",
        0,
        "per-episode latent exploration (MAESN): size of z ~ N(mu, sigma), drawn once per episode and fed to the "
        "policy with every observation; adaptation then moves only (mu, sigma), by meta.latent_lr and "
        "meta.latent_sigma_lr (meta.inner_lr is unused) (0 = off)",
        low=0,
        high=64,
    )


@dataclass(frozen=True)
class EnvConfig(_Section):
    """The simulator."""

    section: ClassVar[str] = "env"
    backend: str = _choice("auto", "simulator", BACKENDS)


#: Section name -> section class, in the order of config files and ``--help-config``.
SECTIONS: dict[str, type[_Section]] = {
    cls.section: cls for cls in (TrainConfig, MetaConfig, PGConfig, PolicyConfig, EnvConfig)
}

#: Flat key name -> its section (names are unique across sections).
FLAT_KEYS: dict[str, str] = {f.name: name for name, cls in SECTIONS.items() for f in fields(cls)}
assert len(FLAT_KEYS) == sum(len(fields(c)) for c in SECTIONS.values()), "config key names must be unique"


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a meta-training run (the scenario file defines the tasks)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    pg: PGConfig = field(default_factory=PGConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain mapping ``{section: {key: value}}`` (lists for tuples), as written to config.yaml."""
        return {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in section_values(getattr(self, name)).items()}
            for name in SECTIONS
        }

    def flat(self) -> dict[str, Any]:
        """``{"section.key": value}`` for every key."""
        return {f"{s}.{k}": v for s, values in self.to_dict().items() for k, v in values.items()}


def section_values(section: _Section) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}  # type: ignore[arg-type]


def config_keys() -> dict[str, Leaf]:
    """Every key as ``"section.key"`` with its :class:`Leaf` (default, range, help)."""
    return {f"{name}.{f.name}": f.metadata["leaf"] for name, cls in SECTIONS.items() for f in fields(cls)}


def canonical_key(key: str, source: str) -> str:
    """``"pg.gae_lambda"`` or the flat ``"gae_lambda"`` -> ``"pg.gae_lambda"``.

    Raises:
        ConfigError: an unknown key, with a "did you mean" among the keys of its form.
    """
    if "." not in key:
        if key in FLAT_KEYS:
            return f"{FLAT_KEYS[key]}.{key}"
        if key in SECTIONS:
            raise ConfigError(source, key, f"is a section; set one of its keys, e.g. {next(iter(config_keys()))}")
        raise ConfigError(source, key, "unknown key" + _suggest(key, FLAT_KEYS))
    if key not in config_keys():
        raise ConfigError(source, key, "unknown key" + _suggest(key, config_keys()))
    return key


def _suggest(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{hint}; run-config keys are SECTION.KEY in sections {', '.join(SECTIONS)} (--help-config lists them)"


def _dotted_items(values: Mapping[str, Any], source: str) -> Iterator[tuple[str, Any]]:
    """Nested ``{section: {key: v}}``, dotted ``{"section.key": v}`` or flat ``{"key": v}`` -> dotted items."""
    for key, value in values.items():
        key = str(key)
        if key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(source, key, f"got {abbreviate(value)}; expected a mapping of {key} keys")
            for sub, v in value.items():
                yield canonical_key(f"{key}.{sub}", source), v
        else:
            yield canonical_key(key, source), value


def make_config(values: Mapping[str, Any], *, source: str = "<config>", base: RunConfig | None = None) -> RunConfig:
    """Validate ``values`` on top of ``base`` (default: the defaults).

    Args:
        values: nested (``{"pg": {"gae_lambda": 0.95}}``, as in config.yaml), dotted (``{"pg.gae_lambda": 0.95}``)
            or flat (``{"gae_lambda": 0.95}``, as in run configs and checkpoints written before the sections).
        source: named in error messages (a file, ``--set``, ...).
        base: values not given keep this config's.

    Raises:
        ConfigError: one line naming ``source``, the dotted key and what is allowed.
    """
    base = base or RunConfig()
    current = {name: section_values(getattr(base, name)) for name in SECTIONS}
    for dotted, value in _dotted_items(values, source):
        section, key = dotted.split(".", 1)
        current[section][key] = value
    built = {}
    for name, cls in SECTIONS.items():
        try:
            built[name] = cls(**current[name])
        except ConfigError as exc:
            raise ConfigError(source, exc.key, exc.message) from None
    config = RunConfig(**built)
    check_combinations(config, source)
    return config


def check_combinations(config: RunConfig, source: str) -> None:
    """Keys that are valid alone but not together.

    Raises:
        ConfigError: naming ``source``, the key and what it needs.
    """
    latent = config.policy.latent_dim > 0
    if config.policy.warm_start == "rule_or_go" and not latent:
        raise ConfigError(source, "policy.warm_start", "'rule_or_go' needs a latent policy: set policy.latent_dim >= 1")
    if latent and config.meta.inner_estimator != "reinforce":
        raise ConfigError(
            source,
            "meta.inner_estimator",
            f"got {config.meta.inner_estimator!r} with policy.latent_dim > 0; a latent policy adapts by the latent's "
            "REINFORCE term (meta.latent_lr), so only 'reinforce' is allowed",
        )
    if latent and config.train.outer_optimizer != "adam":
        raise ConfigError(
            source,
            "train.outer_optimizer",
            f"got {config.train.outer_optimizer!r} with policy.latent_dim > 0; the TRPO step's surrogate has no latent "
            "term, so latent policies train with 'adam' only",
        )
    if latent and config.meta.inner_advantages != "pg":
        raise ConfigError(
            source,
            "meta.inner_advantages",
            f"got {config.meta.inner_advantages!r} with policy.latent_dim > 0; a latent policy's adaptation always "
            "uses normalised episode advantages, so only 'pg' is allowed",
        )


#: The value each key had before it existed, for keys whose default is no longer that value: a stored config (a
#: checkpoint or run directory written before the key) that lacks the key ran with this behaviour, not today's
#: default. (The defaults changed with issue 9's learning design.)
PRE_KEY_BEHAVIOUR: dict[str, Any] = {
    "policy.input_norm": "none",
    "policy.warm_start": "none",
    "train.meta_lr_schedule": "constant",
    "meta.directed_lr_decay": 1.0,
}


def stored_config(values: Mapping[str, Any], *, source: str = "<stored config>") -> RunConfig:
    """:func:`make_config` for a config read back from a checkpoint or run directory: keys it lacks take the
    behaviour the run had (:data:`PRE_KEY_BEHAVIOUR`), the others today's defaults."""
    return make_config(values, source=source, base=make_config(PRE_KEY_BEHAVIOUR, source="PRE_KEY_BEHAVIOUR"))


def split_overrides(items: Sequence[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Parse ``--set KEY=VALUE`` items once and route them: run-config keys (dotted, or flat names) to a dict
    ``{"section.key": value}``, other dotted keys (``other.speed_mps``) to the scenario, in order.

    Raises:
        ConfigError: a malformed item or an undotted key that is not a run-config key.
    """
    run: dict[str, Any] = {}
    scenario: list[tuple[str, Any]] = []
    for (key, value), item in zip(parse_set(items, ConfigError), items, strict=True):
        head = key.split(".", 1)[0]
        if head in SECTIONS or key in FLAT_KEYS or "." not in key:
            run[canonical_key(key, f"--set {item}")] = value
        else:
            scenario.append((key, value))
    return run, scenario


def scenario_defaults(scenario: Any) -> RunConfig:
    """The package defaults with the scenario's ``run_defaults:`` applied: the base that ``--config`` files, the
    shortcut flags and ``--set`` are applied on (the train and bench commands, the scenario matrix), so a scenario
    family trains with the values measured for it (rl-baselines3-zoo's per-environment hyperparameters)."""
    return make_config(scenario.run_defaults, source=f"{scenario.source} (run_defaults)")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a run-config YAML file (validate it with :func:`make_config`)."""
    data = read_yaml_file(Path(path), ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "expected a mapping of config sections (see --help-config)")
    return data


def config_help() -> str:
    """Every key by section, with its default, what it accepts and what it means."""
    lines = []
    for name, cls in SECTIONS.items():
        lines.append(f"\n{name}:  {cls.__doc__.strip().splitlines()[0]}")
        for f in fields(cls):
            leaf: Leaf = f.metadata["leaf"]
            default = list(leaf.default) if isinstance(leaf.default, tuple) else leaf.default
            lines.append(f"  {name}.{f.name} = {default!r}    ({leaf.describe()})\n      {leaf.help}")
    return "\n".join(lines)
