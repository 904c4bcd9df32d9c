"""Pure Python rules as Lua text, so that a Redis script runs the very rule the Python code runs."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable

_ARITHMETIC: dict[type[ast.AST], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_COMPARISONS: dict[type[ast.AST], str] = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
}


def lua_expression(rule: Callable[..., int]) -> str:
    """The Lua expression of `rule`, a function whose body is one `return` of integer arithmetic
    on its parameters (+, -, *, comparisons, `x if c else y`, `max`, `min`).

    The Lua names are the parameters' names: the script defines locals of those names. Any
    other construct raises ValueError, so a rule that Lua could not run fails at import.
    """
    (function,) = ast.parse(textwrap.dedent(inspect.getsource(rule))).body
    if not isinstance(function, ast.FunctionDef):
        raise ValueError(f"{rule!r} is not a function defined with def")
    body = [s for s in function.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        raise ValueError(f"{rule.__name__}: the body must be a single return of an expression")
    names = {a.arg for a in function.args.args}
    return _lua(body[0].value, names, rule.__name__)


def _lua(node: ast.expr, names: set[str], rule: str) -> str:
    """An integer-valued expression."""
    match node:
        case ast.Name(id=name) if name in names:
            return name
        case ast.Constant(value=int() as value) if not isinstance(value, bool):
            return str(value)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _ARITHMETIC:
            return f"({_lua(left, names, rule)} {_ARITHMETIC[type(op)]} {_lua(right, names, rule)})"
        case ast.Call(func=ast.Name(id="max" | "min" as name), args=[_, _, *_] as args, keywords=[]):
            return f"math.{name}({', '.join(_lua(a, names, rule) for a in args)})"
        case ast.IfExp(
            test=ast.Compare(left=left, ops=[op], comparators=[right]), body=then, orelse=otherwise
        ):
            if type(op) in _COMPARISONS:
                test = f"{_lua(left, names, rule)} {_COMPARISONS[type(op)]} {_lua(right, names, rule)}"
                # `c and x or y` is Lua's conditional: exact here, as x is a number, never false.
                return f"({test} and {_lua(then, names, rule)} or {_lua(otherwise, names, rule)})"
    raise ValueError(f"{rule}: no Lua for {ast.unparse(node)!r}")
