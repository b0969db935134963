"""Strict loading: the one YAML parser, the one ``--set`` parser and the one per-key validator.

Both configuration files of the package go through here: scenario files (:mod:`intersection_meta.scenario`) and
run configs (:mod:`intersection_meta.config`). A key is described by a :class:`Leaf` (type, default, range,
allowed values, help); :func:`check_scalar` validates one value against it and raises a :class:`LoadError`
subclass whose message is one line naming the source, the dotted key and what is allowed.

Values are parsed as YAML with one extension: scientific notation without a dot (``1e-3``), which YAML 1.1
reads as a string, is a float here (as in YAML 1.2), in files and in ``--set`` alike.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class LoadError(ValueError):
    """Invalid configuration input. ``str(err)`` is one line: ``SOURCE: KEY.PATH: what is wrong``."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``2E5`` as floats (YAML 1.2 behaviour)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with scientific notation as floats.

    >>> parse_yaml("1e-3"), parse_yaml("[64, 64]"), parse_yaml("fomaml")
    (0.001, [64, 64], 'fomaml')
    """
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_file(path: Path, error: type[LoadError]) -> Any:
    """Parse a YAML file; a missing file or a syntax error raises ``error`` naming the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(str(path), "", "no such file") from None
    except OSError as exc:
        raise error(str(path), "", f"cannot read: {exc.strerror}") from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(str(path), "", f"YAML syntax error at {where}{problem}") from None


def parse_set(items: Sequence[str], error: type[LoadError] = LoadError) -> list[tuple[str, Any]]:
    """``["pg.gae_lambda=0.95", "other.speed_mps=[6,9]"]`` -> ``[("pg.gae_lambda", 0.95), ...]`` (order kept).

    Raises:
        LoadError (or ``error``): an item without ``=`` or a value that is not valid YAML.
    """
    out = []
    for item in items:
        if "=" not in item:
            raise error(f"--set {item}", "", "expected KEY=VALUE, e.g. --set other.speed_mps=[6,9]")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise error(f"--set {item}", key, f"cannot parse value {raw!r} as YAML") from None
        out.append((key, value))
    return out


def did_you_mean(key: str, allowed: Iterable[str], what: str = "allowed keys") -> str:
    """`` (did you mean 'x'?); allowed keys: a, b`` for an unknown ``key``."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    return (f" (did you mean '{close[0]}'?)" if close else "") + f"; {what}: {', '.join(allowed)}"


@dataclass(frozen=True)
class Leaf:
    """How one key is validated, with its default and help text.

    ``type`` is one of ``float``, ``int``, ``bool``, ``enum``, ``str``, ``float_pair``, ``float_list``,
    ``enum_list``, ``int_list`` (scenario files also use ``medium``). ``sampled`` keys (scenario files) may be
    ranges or choices; the others are single values.
    """

    type: str
    default: Any = None
    required: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allowed: tuple[Any, ...] = ()
    sampled: bool = False
    help: str = ""

    def describe(self) -> str:
        """What the key accepts, e.g. ``a number in (0, 1]``."""
        if self.type == "enum":
            what = "one of " + ", ".join(map(str, self.allowed))
        elif self.type == "enum_list":
            what = "a non-empty list of distinct values from " + ", ".join(map(str, self.allowed))
        elif self.type in ("float", "int"):
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            lo_v = "-inf" if self.low is None else f"{self.low:g}"
            hi_v = "inf" if self.high is None else f"{self.high:g}"
            what = f"a{'n integer' if self.type == 'int' else ' number'} in {lo}{lo_v}, {hi_v}{hi}"
        elif self.type == "float_pair":
            what = "a list [low, high] of two numbers with low < high"
        elif self.type == "float_list":
            what = "a non-empty increasing list of numbers"
        elif self.type == "int_list":
            what = "a non-empty list of positive integers, e.g. [64, 64]"
        elif self.type == "bool":
            what = "true or false"
        elif self.type == "str":
            what = "a non-empty string"
        else:
            what = f"a {self.type}"
        if self.sampled:
            if self.type == "enum":
                what += ", or {choice: [...]} of those"
            else:
                what += ", a range [low, high], or {choice: [...]}"
        return what


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_scalar(source: str, key: str, leaf: Leaf, v: Any, error: type[LoadError] = LoadError) -> Any:
    """Validate and normalise one single (not sampled) value of type bool/str/enum/float/int/int_list.

    Returns:
        The value, with ints widened to float for ``float`` keys and lists turned into tuples for ``int_list``.

    Raises:
        ``error``: naming ``source``, ``key``, the value and what is allowed (with "did you mean" for enums).
    """

    def bad(note: str = "") -> LoadError:
        return error(source, key, f"got {v!r}{note}; expected {leaf.describe()}")

    if leaf.type == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if leaf.type == "str":
        if not isinstance(v, str) or not v.strip():
            raise bad()
        return v
    if leaf.type == "enum":
        if not isinstance(v, str) or v not in leaf.allowed:
            close = difflib.get_close_matches(str(v), [str(a) for a in leaf.allowed], n=1)
            raise bad(f" (did you mean '{close[0]}'?)" if close else "")
        return v
    if leaf.type == "int_list":
        if not isinstance(v, list | tuple) or not v or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                                for x in v):
            raise bad()
        return tuple(int(x) for x in v)
    if leaf.type in ("float", "int"):
        if not is_number(v) or (leaf.type == "int" and not isinstance(v, int)):
            raise bad()
        if isinstance(v, float) and not math.isfinite(v):
            raise bad(" (not finite)")
        too_low = leaf.low is not None and (v <= leaf.low if leaf.low_open else v < leaf.low)
        too_high = leaf.high is not None and (v >= leaf.high if leaf.high_open else v > leaf.high)
        if too_low or too_high:
            raise bad(", out of range")
        return int(v) if leaf.type == "int" else float(v)
    raise AssertionError(f"check_scalar: unsupported leaf type {leaf.type!r}")  # internal
