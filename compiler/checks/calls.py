"""The language's functions: the arguments of `env()`, `secret()`, `cron()`, `every()`,
`fixed()` and `exponential()`, and the values those calls stand for."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from tideflow.compiler import cron as cronlib
from tideflow.compiler import schema as s
from tideflow.compiler.ir import Backoff, EnvRef, SecretRef
from tideflow.dsl import ast
from tideflow.dsl.ast import Call
from tideflow.dsl.diagnostics import Related
from tideflow.dsl.suggest import suggest

from .common import inside, plural
from .context import CheckContext
from .model import INVALID, ScheduleSpec
from .schedules import check_timezone

__all__ = ["backoff", "env_or_secret", "schedule"]

ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# What a function accepts: positional argument kinds (the first `required` are
# required) and keyword arguments.
_SIGNATURES: Mapping[str, tuple[tuple[str, ...], int, Mapping[str, str]]] = {
    "env": (("string", "string"), 1, {}),
    "secret": (("string",), 1, {}),
    "cron": (("string",), 1, {"timezone": "string"}),
    "every": (("duration",), 1, {}),
    "fixed": (("duration",), 1, {}),
    "exponential": (("duration", "duration"), 2, {"factor": "number"}),
}
_ARGUMENT_CLASSES: Mapping[str, type] = {
    "string": ast.String,
    "duration": ast.Duration,
    "number": ast.Number,
}


def env_or_secret(ctx: CheckContext, call: Call) -> Any:
    """An `EnvRef` or `SecretRef` for a call of `env()` or `secret()`, or INVALID."""
    parsed = _arguments(ctx, call)
    if parsed is None:
        return INVALID
    args, _ = parsed
    if not ENV_NAME.match(args[0]):
        return ctx.error(
            "E216",
            f'invalid environment variable name "{args[0]}" in {call.function}()',
            call.args[0].span,
            label="names hold letters, digits and `_`, and do not start with a digit",
        )
    if call.function == "secret":
        return SecretRef(args[0])
    return EnvRef(args[0], args[1] if len(args) > 1 else None)


def schedule(ctx: CheckContext, expr: Call) -> Any:
    """A `ScheduleSpec` for a call of `cron()` or `every()`, or INVALID."""
    parsed = _arguments(ctx, expr)
    if parsed is None:
        return INVALID
    args, keywords = parsed
    if expr.function == "every":
        return ScheduleSpec("every", None, args[0], None, expr.span)
    text: str = args[0]
    literal: ast.String = expr.args[0]  # type: ignore[assignment]
    problem = cronlib.check_cron(text)
    if problem is not None:
        ctx.error(
            "E209",
            problem.message,
            inside(literal, problem.start, problem.end),
            label=problem.label,
            help=problem.help,
        )
        return INVALID
    zone_name = keywords.get("timezone")
    if zone_name is not None:
        zone_expr = next(k.value for k in expr.kwargs if k.name == "timezone")
        if check_timezone(ctx, zone_expr) is INVALID:  # type: ignore[arg-type]
            return INVALID
    return ScheduleSpec("cron", text, None, zone_name, literal.span)


def backoff(ctx: CheckContext, expr: Call) -> Any:
    """A `Backoff` for a call of `fixed()` or `exponential()`, or INVALID."""
    parsed = _arguments(ctx, expr)
    if parsed is None:
        return INVALID
    args, keywords = parsed
    if expr.function == "fixed":
        return Backoff("fixed", args[0])
    initial, cap = args
    if initial > cap:
        return ctx.error(
            "E213",
            f"the first delay ({expr.args[0].raw}) is above the cap ({expr.args[1].raw})",  # type: ignore[union-attr]
            expr.args[0].span,
            related=(Related(expr.args[1].span, "the cap"),),
            help="exponential(INITIAL, CAP) takes the first delay first",
        )
    return Backoff("exponential", initial, cap, keywords.get("factor", 2.0))


def _arguments(ctx: CheckContext, call: Call) -> tuple[list[Any], dict[str, Any]] | None:
    """Positional and keyword argument values of a known function, or None (reported)."""
    kinds, required, keywords = _SIGNATURES[call.function]
    usage = s.FUNCTIONS[call.function].split(": ", 1)[0]
    count = len(call.args)
    if not required <= count <= len(kinds):
        expected = (
            plural(required, "argument")
            if required == len(kinds)
            else f"{required} or {len(kinds)} arguments"
        )
        ctx.error(
            "E216",
            f"{call.function}() takes {expected}, found {count}",
            call.span,
            help=f"write {usage}",
        )
        return None
    ok = True
    args: list[Any] = []
    for index, (arg, kind) in enumerate(zip(call.args, kinds, strict=False), start=1):
        value = _argument(ctx, call, arg, kind, f"argument {index} of {call.function}()")
        ok = ok and value is not INVALID
        args.append(value)
    given: dict[str, Any] = {}
    for keyword in call.kwargs:
        if keyword.name not in keywords:
            ctx.error(
                "E216",
                f"{call.function}() has no argument `{keyword.name}`",
                keyword.name_span,
                help=suggest(keyword.name, keywords, fold_case=True) or f"write {usage}",
            )
            ok = False
            continue
        if keyword.name in given:
            ctx.error(
                "E216",
                f"argument `{keyword.name}` of {call.function}() is given twice",
                keyword.name_span,
            )
            ok = False
            continue
        value = _argument(
            ctx,
            call,
            keyword.value,
            keywords[keyword.name],
            f"`{keyword.name}` of {call.function}()",
        )
        given[keyword.name] = value
        ok = ok and value is not INVALID
    return (args, given) if ok else None


def _argument(ctx: CheckContext, call: Call, arg: ast.Expr, kind: str, what: str) -> Any:
    if type(arg) is not _ARGUMENT_CLASSES[kind]:
        usage = s.FUNCTIONS[call.function].split(": ", 1)[0]
        return ctx.error(
            "E216",
            f"{what} must be a {kind}, found {ast.expr_kind(arg)}",
            arg.span,
            help=f"write {usage}",
        )
    if type(arg) is ast.String:
        return arg.value
    if type(arg) is ast.Duration:
        if arg.seconds <= 0:
            return ctx.error("E214", f"{what} must be longer than zero", arg.span)
        return arg.seconds
    assert type(arg) is ast.Number
    if arg.value <= 0:
        return ctx.error("E214", f"{what} must be positive, found {arg.raw}", arg.span)
    return float(arg.value)
