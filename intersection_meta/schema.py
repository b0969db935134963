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
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 60, 60, 2
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = 6
_SHORT.maxdict = 4


def abbreviate(value: Any) -> str:
    """A bounded ``repr`` for messages (long strings, lists and deep nesting are elided with ``...``), so an error
    about a huge or alias-expanded value stays one short line.

    >>> abbreviate(list(range(100)))
    '[0, 1, 2, 3, 4, 5, ...]'
    """
    return shorten(_SHORT.repr(value))


def shorten(text: str, width: int = 100) -> str:
    """``text`` on one line (newlines and other control characters escaped) and cut to ``width`` characters
    (ending in `` ...`` when cut)."""
    text = text[: width * 4]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[: width - 4] + " ..."


class LoadError(ValueError):
    """Invalid configuration input. ``str(err)`` is one line: ``SOURCE: KEY.PATH: what is wrong``."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        source, key, message = shorten(str(source), 200), shorten(str(key)), shorten(str(message), 1000)
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


#: Bounds on every YAML input (scenario files, run-config files, ``--set`` values). The shipped files are a few
#: KB, a few levels deep and alias-free; the bounds stop a small file from expanding into gigabytes.
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 20_000  # nodes after alias expansion (an alias counts the whole subtree it refers to)
#: Longest list an ``int_list`` key takes (e.g. hidden layers).
MAX_LIST_LENGTH = 16
#: Longest string value (names, paths, descriptions: each is copied into every checkpoint).
MAX_STRING_LENGTH = 2000


class YAMLLimitError(yaml.YAMLError):
    """A YAML document exceeds one of the bounds above; ``str(err)`` says which."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``2E5`` as floats (YAML 1.2 behaviour) and enforces the depth
    and expanded-size bounds while composing (before any Python object is built)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # nodes so far, an alias counting its whole subtree
        self._sizes: dict[int, int] = {}  # id(node) -> nodes in its expanded subtree (for aliases to it)

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels")
            if not is_alias:
                self._count(1)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            self._count(self._sizes.get(id(node), 1))
        elif id(node) not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
        return node

    def _count(self, nodes: int) -> None:
        self._expanded += nodes
        if self._expanded > MAX_YAML_NODES:
            raise YAMLLimitError(f"more than {MAX_YAML_NODES} values once aliases are expanded")


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` with scientific notation as floats, within the depth and size bounds.

    >>> parse_yaml("1e-3"), parse_yaml("[64, 64]"), parse_yaml("fomaml")
    (0.001, [64, 64], 'fomaml')

    Raises:
        yaml.YAMLError: a syntax error, or :class:`YAMLLimitError` for a document beyond the bounds (also for an
            integer too long for Python to convert).
    """
    if len(text) > MAX_YAML_BYTES:
        raise YAMLLimitError(f"longer than {MAX_YAML_BYTES} characters")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. int() of a 5000-digit number
        raise YAMLLimitError(f"a value cannot be read ({type(exc).__name__}: {abbreviate(str(exc))})") from None


def read_yaml_file(path: Path, error: type[LoadError]) -> Any:
    """Parse a YAML file (UTF-8, at most ``MAX_YAML_BYTES``); a missing, unreadable, oversized or malformed file
    raises ``error`` naming the file (and the line of a syntax error)."""
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        raise error(str(path), "", "no such file") from None
    except OSError as exc:
        raise error(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise error(str(path), "", f"file larger than {MAX_YAML_BYTES} bytes; a scenario or config is a few KB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(str(path), "", f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return parse_yaml(text)
    except YAMLLimitError as exc:
        raise error(str(path), "", f"YAML too large: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(str(path), "", f"YAML syntax error at {_yaml_problem(exc)}") from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return where + shorten(str(problem))


def parse_set(items: Sequence[str], error: type[LoadError] = LoadError) -> list[tuple[str, Any]]:
    """``["pg.gae_lambda=0.95", "other.speed_mps=[6,9]"]`` -> ``[("pg.gae_lambda", 0.95), ...]`` (order kept).

    Raises:
        LoadError (or ``error``): an item without ``=`` or a value that is not valid YAML.
    """
    out = []
    for item in items:
        if "=" not in item:
            raise error(f"--set {shorten(item)}", "", "expected KEY=VALUE, e.g. --set other.speed_mps=[6,9]")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except YAMLLimitError as exc:
            raise error(f"--set {shorten(item)}", key, f"value too large: {exc}") from None
        except yaml.YAMLError:
            raise error(f"--set {shorten(item)}", key, f"cannot parse value {abbreviate(raw)} as YAML") from None
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
            at_most = "" if self.high is None else f" (each at most {self.high:g}, at most {MAX_LIST_LENGTH})"
            what = f"a non-empty list of positive integers{at_most}, e.g. [64, 64]"
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
        return error(source, key, f"got {abbreviate(v)}{note}; expected {leaf.describe()}")

    if leaf.type == "bool":
        if not isinstance(v, bool):
            raise bad()
        return v
    if leaf.type == "str":
        if not isinstance(v, str) or not v.strip():
            raise bad()
        if len(v) > MAX_STRING_LENGTH:
            raise bad(f", {len(v)} characters long (at most {MAX_STRING_LENGTH})")
        return v
    if leaf.type == "enum":
        if not isinstance(v, str) or v not in leaf.allowed:
            close = difflib.get_close_matches(str(v), [str(a) for a in leaf.allowed], n=1)
            raise bad(f" (did you mean '{close[0]}'?)" if close else "")
        return v
    if leaf.type == "int_list":
        high = math.inf if leaf.high is None else leaf.high
        if (
            not isinstance(v, list | tuple)
            or not 0 < len(v) <= MAX_LIST_LENGTH
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= high for x in v)
        ):
            raise bad()
        return tuple(int(x) for x in v)
    if leaf.type in ("float", "int"):
        if leaf.type == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)  # scientific notation of a whole number (1e3) is an integer too
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
