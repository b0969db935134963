"""Constraint expressions: a small, safe evaluator for scenario ``require:`` lines (no ``eval``).

The grammar is a whitelisted subset of Python's expression syntax, parsed with :func:`ast.parse` and interpreted
by this module (nothing is ever compiled or executed by Python):

- numbers (``15``, ``0.3``, ``1e-3``) and, for comparisons with categorical keys, quoted strings (``'left'``);
- the scenario's dotted keys (``other.speed_mps``, ``ego.intent``);
- arithmetic ``+ - * /`` and unary ``-``/``+``;
- comparisons ``< <= > >= == !=``, chained as in Python (``0 <= x <= 100``); strings compare with ``==``/``!=``
  only;
- ``and``, ``or``, ``not``;
- the functions ``abs(x)``, ``min(a, b, ...)`` and ``max(a, b, ...)``.

Anything else (attribute access that is not a scenario key, other calls, subscripts, ``**``, lambdas, ...) is
refused when the expression is compiled, with a one-line :class:`ExprError` giving the column. Expressions are
type-checked at compile time (numbers vs categories vs booleans), so evaluation can only fail on a division by
zero.

>>> c = compile_expr("other.speed_mps * other.time_gap_s < 15", {"other.speed_mps": "num", "other.time_gap_s": "num"})
>>> c.evaluate({"other.speed_mps": 8.0, "other.time_gap_s": 1.5}), c.evaluate({"other.speed_mps": 10.0,
...                                                                             "other.time_gap_s": 2.0})
(True, False)
"""

from __future__ import annotations

import ast
import difflib
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Longest accepted expression [characters]: far above any sensible constraint, and it bounds parser work.
MAX_EXPR_CHARS = 500

#: The value types of keys and sub-expressions.
NUM, STR, BOOL = "num", "str", "bool"

_ARITH: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {  # name -> (function, min args, max args)
    "abs": (abs, 1, 1),
    "min": (min, 2, None),
    "max": (max, 2, None),
}
ALLOWED = (
    "numbers, 'strings' (compared with == or !=), the scenario's dotted keys, + - * /, unary -, "
    "< <= > >= == !=, and/or/not, abs(x), min(a, b, ...), max(a, b, ...)"
)

Env = Mapping[str, Any]
_Eval = Callable[[Env], Any]


class ExprError(ValueError):
    """A constraint that cannot be compiled or evaluated. ``str(err)`` is one line; ``column`` is 1-based."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message, self.column = message, column
        super().__init__(f"at column {column}: {message}" if column else message)


@dataclass(frozen=True)
class Expr:
    """A compiled constraint: the source text, the keys it reads and an evaluator over ``{dotted key: value}``."""

    text: str
    keys: tuple[str, ...]
    _fn: _Eval = field(repr=False, compare=False)

    def evaluate(self, values: Env) -> bool:
        """The constraint's truth value for one set of sampled values.

        Raises:
            ExprError: on a division by zero (naming the column of the ``/``).
        """
        return bool(self._fn(values))


def compile_expr(text: str, key_types: Mapping[str, str]) -> Expr:
    """Parse and type-check a boolean constraint over the keys in ``key_types`` (dotted key -> ``num``/``str``).

    Raises:
        ExprError: a syntax error, a construct outside the grammar (see module docstring), an unknown key, a type
            mismatch, or a result that is not a boolean; with the 1-based column where it happens.
    """
    if not isinstance(text, str) or not text.strip():
        raise ExprError(f"got {text!r}; expected a non-empty string holding a boolean expression")
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression is {len(text)} characters long; at most {MAX_EXPR_CHARS} are allowed")
    if "\n" in text or "\r" in text:
        raise ExprError("an expression is one line")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error: {exc.msg}", (exc.offset or 1) + len(text) - len(text.lstrip())) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExprError("expression is too deeply nested") from None
    offset = len(text) - len(text.lstrip())
    compiler = _Compiler(dict(key_types), offset, text.strip())
    try:
        fn, kind = compiler.node(tree.body)
    except RecursionError:
        raise ExprError("expression is too deeply nested") from None
    if kind != BOOL:
        raise ExprError(f"the expression is a {_NAMES[kind]}, not a condition; compare it, e.g. '... < 15'", 1)
    return Expr(text, tuple(sorted(compiler.used)), fn)


_NAMES = {NUM: "number", STR: "string", BOOL: "boolean"}


class _Compiler:
    """Turns a whitelisted AST into nested closures ``values -> result``, checking types on the way."""

    def __init__(self, key_types: dict[str, str], offset: int, text: str) -> None:
        self.key_types, self.offset, self.text, self.used = key_types, offset, text, set()

    def fail(self, node: ast.AST, message: str) -> ExprError:
        return ExprError(message, getattr(node, "col_offset", 0) + self.offset + 1)

    def fail_after(self, operand: ast.AST, message: str) -> ExprError:
        """An error at the operator that follows ``operand`` (the first non-blank, non-')' character after it)."""
        i = operand.end_col_offset or 0
        while i < len(self.text) and self.text[i] in " )":
            i += 1
        return ExprError(message, i + self.offset + 1)

    def node(self, node: ast.AST) -> tuple[_Eval, str]:
        method = getattr(self, "_" + type(node).__name__, None)
        if method is None:
            raise self.fail(node, f"{_describe(node)} is not allowed; allowed: {ALLOWED}")
        return method(node)

    def typed(self, node: ast.AST, kind: str, what: str) -> _Eval:
        fn, got = self.node(node)
        if got != kind:
            raise self.fail(node, f"{what} needs a {_NAMES[kind]}, got a {_NAMES[got]}")
        return fn

    # ---- leaves ----------------------------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant) -> tuple[_Eval, str]:
        v = node.value
        if isinstance(v, bool) or v is None or isinstance(v, complex | bytes):
            raise self.fail(node, f"the constant {v!r} is not allowed; allowed: {ALLOWED}")
        if isinstance(v, str):
            return (lambda _env, v=v: v), STR
        value = float(v)
        return (lambda _env, value=value: value), NUM

    def _key(self, node: ast.AST, dotted: str) -> tuple[_Eval, str]:
        if dotted not in self.key_types:
            raise self.fail(node, f"unknown key '{dotted}'" + _did_you_mean(dotted, self.key_types))
        self.used.add(dotted)
        return (lambda env, k=dotted: env[k]), self.key_types[dotted]

    def _Name(self, node: ast.Name) -> tuple[_Eval, str]:
        return self._key(node, node.id)

    def _Attribute(self, node: ast.Attribute) -> tuple[_Eval, str]:
        parts, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if not isinstance(inner, ast.Name):
            raise self.fail(node, f"attribute access is not allowed (only dotted scenario keys); allowed: {ALLOWED}")
        return self._key(node, ".".join([inner.id, *reversed(parts)]))

    # ---- operators -------------------------------------------------------------------------------------------
    def _UnaryOp(self, node: ast.UnaryOp) -> tuple[_Eval, str]:
        if isinstance(node.op, ast.Not):
            f = self.typed(node.operand, BOOL, "'not'")
            return (lambda env: not f(env)), BOOL
        if isinstance(node.op, ast.USub | ast.UAdd):
            f = self.typed(node.operand, NUM, "unary minus" if isinstance(node.op, ast.USub) else "unary plus")
            return ((lambda env: -f(env)) if isinstance(node.op, ast.USub) else f), NUM
        raise self.fail(node, f"the operator {type(node.op).__name__} is not allowed; allowed: {ALLOWED}")

    def _BinOp(self, node: ast.BinOp) -> tuple[_Eval, str]:
        op = _ARITH.get(type(node.op))
        if op is None:
            raise self.fail_after(node.left, f"the operator {_OP_TEXT.get(type(node.op), type(node.op).__name__)} "
                                             f"is not allowed; allowed: {ALLOWED}")
        a = self.typed(node.left, NUM, "arithmetic")
        b = self.typed(node.right, NUM, "arithmetic")
        if op is operator.truediv:
            where = self.fail(node, "division by zero")

            def divide(env: Env) -> float:
                d = b(env)
                if d == 0:
                    raise where
                return a(env) / d

            return divide, NUM
        return (lambda env: op(a(env), b(env))), NUM

    def _BoolOp(self, node: ast.BoolOp) -> tuple[_Eval, str]:
        name = "'and'" if isinstance(node.op, ast.And) else "'or'"
        fs = [self.typed(v, BOOL, name) for v in node.values]
        if isinstance(node.op, ast.And):
            return (lambda env: all(f(env) for f in fs)), BOOL
        return (lambda env: any(f(env) for f in fs)), BOOL

    def _Compare(self, node: ast.Compare) -> tuple[_Eval, str]:
        operands = [self.node(n) for n in (node.left, *node.comparators)]
        ops = []
        for i, op_node in enumerate(node.ops):
            op = _COMPARE.get(type(op_node))
            where = (node.left, *node.comparators)[i]
            if op is None:
                raise self.fail_after(where, f"the comparison {type(op_node).__name__} is not allowed; "
                                             f"allowed: {ALLOWED}")
            (_, left), (_, right) = operands[i], operands[i + 1]
            if left != right or left == BOOL:
                raise self.fail_after(where, f"cannot compare a {_NAMES[left]} with a {_NAMES[right]}")
            if left == STR and op not in (operator.eq, operator.ne):
                raise self.fail_after(where, "strings compare only with == or !=")
            ops.append(op)
        fns = [f for f, _ in operands]

        def compare(env: Env) -> bool:  # lazy, like Python: ``a < b < c`` stops at the first false link
            left = fns[0](env)
            for op, f in zip(ops, fns[1:], strict=True):
                right = f(env)
                if not op(left, right):
                    return False
                left = right
            return True

        return compare, BOOL

    def _Call(self, node: ast.Call) -> tuple[_Eval, str]:
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in _FUNCTIONS:
            raise self.fail(node, f"calls other than abs, min and max are not allowed; allowed: {ALLOWED}")
        fn, lo, hi = _FUNCTIONS[name]
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{name}() takes plain positional arguments")
        if len(node.args) < lo or (hi is not None and len(node.args) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise self.fail(node, f"{name}() takes {want} argument{'s' if lo > 1 else ''}, got {len(node.args)}")
        args = [self.typed(a, NUM, f"{name}()") for a in node.args]
        return (lambda env: fn(*(a(env) for a in args))), NUM


_OP_TEXT = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
            ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@"}


def _describe(node: ast.AST) -> str:
    names = {ast.Subscript: "indexing", ast.Lambda: "lambda", ast.IfExp: "'x if c else y'", ast.List: "a list",
             ast.Tuple: "a tuple", ast.Dict: "a dict", ast.Set: "a set", ast.ListComp: "a comprehension",
             ast.GeneratorExp: "a generator", ast.NamedExpr: "':='", ast.JoinedStr: "an f-string",
             ast.Starred: "'*'", ast.Await: "await"}
    return names.get(type(node), type(node).__name__)


def _did_you_mean(key: str, known: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return (f" (did you mean '{close[0]}'?)" if close else "") + f"; keys: {', '.join(known)}"
