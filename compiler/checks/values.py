"""Values: each expression checked against the value type its attribute has in the schema,
and converted (a duration to seconds, a reference to the name it refers to, ...)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any, Final, TypeAlias, final

from tideflow.compiler import schema as s
from tideflow.dsl import ast
from tideflow.dsl.ast import Call, MapEntry, Span, expr_kind
from tideflow.dsl.diagnostics import Diagnostic, Related
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import options as o

from . import calls
from .common import LABEL, plural
from .context import CheckContext
from .model import INVALID, Invalid, OtherFlowsJob, Section
from .schedules import check_timezone

__all__ = ["Converter", "SectionCheck", "ValueChecker"]

CALLABLE: Final = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")

#: Checks one value: (expression, its value type, attribute name, owner) -> value or INVALID.
Converter: TypeAlias = Callable[[Any, Any, str, str], Any]
#: Checks a map literal's entries against an object's schema (`sections.SectionChecker`).
SectionCheck: TypeAlias = Callable[[Sequence[MapEntry], o.BlockSchema, str, Span], Section]


@cache
def _is_credential(name: str) -> bool:
    lowered = name.lower()
    if lowered.endswith("_name"):  # names where a credential is kept (`secret_name`)
        return False
    return any(word in lowered for word in s.CREDENTIAL_WORDS)


def _is_other_flows_job(expr: ast.Reference) -> bool:
    parts = expr.parts
    return len(parts) == 4 and parts[0] == "flow" and parts[2] == "job"


@final
class ValueChecker:
    """The converter of each value type; problems go to `ctx`, never raised.

    An object written as a map literal is a section of its own: `check_section`
    checks it (the section checker hands itself in, which calls back here).
    """

    def __init__(self, ctx: CheckContext, check_section: SectionCheck) -> None:
        self.ctx = ctx
        self._check_section = check_section
        self.converters: dict[type, Converter] = {
            o.StringType: self._string,
            o.IntType: self._int,
            o.NumberType: self._number,
            o.BoolType: self._bool,
            o.DurationType: self._duration,
            o.SizeType: self._size,
            o.EnumType: self._enum,
            o.ListType: self._list,
            o.MapType: self._map,
            o.RefType: self._reference,
            o.ObjectType: self._object,
            o.ScheduleType: self._schedule,
            o.BackoffType: self._backoff,
            o.CallableType: self._callable,
            o.LiteralType: self._literal,
        }
        # attributes whose accepted forms the schema cannot express
        self.special: dict[tuple[str, str], Converter] = {
            ("job", "command"): self._command,
        }

    def convert(self, expr: ast.Expr, vtype: o.ValueType, name: str, owner: str) -> Any:
        """Check `expr` against `vtype`; the converted value, or INVALID (reported)."""
        return self.converters[type(vtype)](expr, vtype, name, owner)

    def _mismatch(
        self, expr: ast.Expr, vtype: o.ValueType, name: str, owner: str, help: str | None = None
    ) -> Invalid:
        if type(expr) is Call and expr.function not in s.FUNCTIONS:
            return self._unknown_function(expr)
        if type(expr) is Call and expr.function == "secret":
            return self.ctx.error(
                "E203",
                "secret() is only allowed in attributes that take it; "
                f"`{name}` in {owner} takes {vtype.describe()}",
                expr.span,
            )
        if help is None and type(expr) is ast.String:
            help = self._unquote_help(expr, vtype)
        if help is None and type(expr) is ast.Name and isinstance(vtype, o.StringType):
            help = f'write it as a string: "{expr.name}"'
        if help is None and type(expr) is ast.Number and isinstance(vtype, o.DurationType):
            help = f"add a unit: `{expr.raw}s`"
        return self.ctx.error(
            "E203",
            f"wrong type for `{name}` in {owner}: expected {vtype.describe()}, "
            f"found {expr_kind(expr)}",
            expr.span,
            help=help,
        )

    def _unquote_help(self, expr: ast.String, vtype: o.ValueType) -> str | None:
        text = expr.value
        if isinstance(vtype, o.RefType) and text in self.ctx.blocks.get(vtype.kind, {}):
            return f"write it as a reference: `{vtype.kind}.{text}`"
        if isinstance(vtype, o.IntType | o.NumberType | o.SizeType) and re.fullmatch(
            r"-?\d+(\.\d+)?", text
        ):
            return f"remove the quotes: `{text}`"
        if isinstance(vtype, o.DurationType) and re.fullmatch(
            r"(\d+(\.\d+)?(ms|us|s|m|h|d|w))+", text
        ):
            return f"remove the quotes: `{text}`"
        if isinstance(vtype, o.BoolType) and text in ("true", "false"):
            return f"remove the quotes: `{text}`"
        return None

    def _unknown_function(self, call: Call) -> Invalid:
        return self.ctx.error(
            "E216",
            f"unknown function `{call.function}`",
            call.function_span,
            help=suggest(call.function, s.FUNCTIONS, "`{}()`", fold_case=True),
        )

    def _string(self, expr: Any, vtype: o.StringType, name: str, owner: str) -> Any:
        kind = type(expr)
        if kind is ast.String:
            text: str = expr.value
            if vtype.choices and text not in vtype.choices:
                return self._bad_choice(expr, text, vtype.choices, name, owner)
            if vtype.pattern and not re.fullmatch(vtype.pattern, text):
                return self.ctx.error(
                    "E208",
                    f'invalid value "{text}" for `{name}` in {owner}',
                    expr.span,
                    label=f"expected {vtype.pattern_doc or vtype.pattern}",
                )
            if name == "timezone":
                return check_timezone(self.ctx, expr)
            if text and _is_credential(name):
                self._literal_credential(expr, name, owner, vtype.secretable)
            return text
        if kind is Call and vtype.secretable and expr.function in ("env", "secret"):
            return calls.env_or_secret(self.ctx, expr)
        return self._mismatch(expr, vtype, name, owner)

    def _literal_credential(
        self, expr: ast.String, name: str, owner: str, secretable: bool
    ) -> None:
        variable = re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
        key = name if LABEL.match(name) else f'"{name}"'
        self.ctx.found.append(
            Diagnostic(
                "W407",
                f"`{name}` in {owner} is a literal credential",
                expr.span,
                label="this is kept in the flow file, and in its IR",
                help=f'read it at run time: `{key} = secret("{variable}")`' if secretable else None,
            )
        )

    def _bad_choice(
        self, expr: ast.Expr, text: str, choices: Sequence[str], name: str, owner: str
    ) -> Invalid:
        return self.ctx.error(
            "E208",
            f"invalid value `{text}` for `{name}` in {owner}",
            expr.span,
            label="expected one of: " + ", ".join(choices),
            help=suggest(text, choices, fold_case=True),
        )

    def _int(self, expr: Any, vtype: o.IntType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Number or type(expr.value) is not int:
            return self._mismatch(expr, vtype, name, owner)
        value: int = expr.value
        if vtype.minimum is not None and value < vtype.minimum:
            if vtype.minimum == 1:
                return self.ctx.error(
                    "E214",
                    f"`{name}` in {owner} must be positive, found {value}",
                    expr.span,
                )
            return self.ctx.error(
                "E208",
                f"`{name}` in {owner} must be at least {vtype.minimum}, found {value}",
                expr.span,
            )
        return value

    def _number(self, expr: Any, vtype: o.NumberType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Number:
            return self._mismatch(expr, vtype, name, owner)
        if vtype.positive and expr.value <= 0:
            return self.ctx.error(
                "E214", f"`{name}` in {owner} must be positive, found {expr.raw}", expr.span
            )
        return expr.value

    def _bool(self, expr: Any, vtype: o.BoolType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Bool:
            return self._mismatch(expr, vtype, name, owner)
        return expr.value

    def _duration(self, expr: Any, vtype: o.DurationType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Duration:
            return self._mismatch(expr, vtype, name, owner)
        if vtype.positive and expr.seconds <= 0:
            return self.ctx.error(
                "E214", f"`{name}` in {owner} must be longer than zero", expr.span
            )
        return expr.seconds

    def _size(self, expr: Any, vtype: o.SizeType, name: str, owner: str) -> Any:
        if type(expr) is ast.Size:
            return expr.bytes
        if type(expr) is ast.Number and type(expr.value) is int and expr.value >= 0:
            return expr.value
        return self._mismatch(expr, vtype, name, owner)

    def _enum(self, expr: Any, vtype: o.EnumType, name: str, owner: str) -> Any:
        kind = type(expr)
        if kind is ast.Name:
            text = expr.name
        elif kind is ast.String:
            text = expr.value
        else:
            return self._mismatch(expr, vtype, name, owner)
        if text not in vtype.choices:
            return self._bad_choice(expr, text, vtype.choices, name, owner)
        return text

    def _list(self, expr: Any, vtype: o.ListType, name: str, owner: str) -> Any:
        if type(expr) is not ast.ListExpr:
            if not vtype.allow_single:
                return self._mismatch(expr, vtype, name, owner)
            items: tuple[ast.Expr, ...] = (expr,)
        else:
            items = expr.items
        convert = self.converters[type(vtype.item)]
        values = []
        for item in items:
            value = convert(item, vtype.item, name, owner)
            if value is not INVALID:
                values.append(value)
        if len(items) < vtype.min_items:
            return self.ctx.error(
                "E208",
                f"`{name}` in {owner} needs at least {plural(vtype.min_items, 'item')}",
                expr.span,
            )
        return tuple(values)

    def _map(self, expr: Any, vtype: o.MapType, name: str, owner: str) -> Any:
        if type(expr) is not ast.MapExpr:
            return self._mismatch(expr, vtype, name, owner)
        convert = self.converters[type(vtype.value)]
        where = f"`{name}` of {owner}"
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for entry in expr.entries:
            if entry.key in spans:
                self.ctx.error(
                    "E206",
                    f"`{entry.key}` is set twice in {where}",
                    entry.key_span,
                    related=(Related(spans[entry.key], "first set here"),),
                )
                continue
            spans[entry.key] = entry.key_span
            value = convert(entry.value, vtype.value, entry.key, where)
            if value is not INVALID:
                values[entry.key] = value
        return values

    def _reference(self, expr: Any, vtype: o.RefType, name: str, owner: str) -> Any:
        kind = type(expr)
        declared = self.ctx.blocks[vtype.kind]
        if kind is ast.Reference and _is_other_flows_job(expr) and vtype.kind == "job":
            # a job of another flow (`flow.billing.job.close`): not checkable here
            return OtherFlowsJob(expr.parts[1], expr.parts[3])
        if kind is ast.Reference:
            target = expr.target
            if expr.kind == vtype.kind and target in declared:
                return target
            if expr.kind == vtype.kind or expr.kind not in s.BLOCKS:
                close = self.ctx.suggest_name(target, declared, f"`{vtype.kind}.{{}}`")
                if close is None and expr.kind != vtype.kind and target in declared:
                    close = f"did you mean `{vtype.kind}.{target}`?"
                return self.ctx.error(
                    "E207",
                    f"undefined reference `{expr}`",
                    expr.span,
                    label=f'no {vtype.kind} is named "{target}"'
                    if expr.kind == vtype.kind
                    else None,
                    help=close,
                )
            return self.ctx.error(
                "E203",
                f"wrong type for `{name}` in {owner}: expected {vtype.describe()}, "
                f"found a {expr.kind} reference",
                expr.span,
            )
        if kind is ast.Name and expr.name in declared:
            return self._mismatch(
                expr, vtype, name, owner, help=f"write `{vtype.kind}.{expr.name}`"
            )
        return self._mismatch(expr, vtype, name, owner)

    def _object(self, expr: Any, vtype: o.ObjectType, name: str, owner: str) -> Any:
        if type(expr) is not ast.MapExpr:
            return self._mismatch(expr, vtype, name, owner)
        return self._check_section(expr.entries, vtype.schema, f"{name} of {owner}", expr.span)

    def _callable(self, expr: Any, vtype: o.CallableType, name: str, owner: str) -> Any:
        if type(expr) is not ast.String:
            return self._mismatch(expr, vtype, name, owner)
        text: str = expr.value
        if not CALLABLE.match(text):
            fixed = None
            if ":" not in text and "." in text:
                module, _, function = text.rpartition(".")
                fixed = f'write it as "{module}:{function}"'
            return self.ctx.error(
                "E208",
                f'invalid callable "{text}" for `{name}` in {owner}',
                expr.span,
                label='expected "package.module:function"',
                help=fixed,
            )
        return text

    def _literal(self, expr: Any, vtype: o.LiteralType, name: str, owner: str) -> Any:
        kind = type(expr)
        if kind is ast.String:
            if expr.value and _is_credential(name):
                self._literal_credential(expr, name, owner, secretable=False)
            return expr.value
        if kind is ast.Number or kind is ast.Bool:
            return expr.value
        if kind is ast.Duration:
            return expr.seconds
        if kind is ast.Size:
            return expr.bytes
        if kind is ast.ListExpr:
            values = (self._literal(item, vtype, name, owner) for item in expr.items)
            return tuple(v for v in values if v is not INVALID)
        if kind is ast.MapExpr:
            return self._map(expr, o.MapType(vtype), name, owner)
        help = f'write it as a string: "{expr.name}"' if kind is ast.Name else None
        return self._mismatch(expr, vtype, name, owner, help=help)

    def _command(self, expr: Any, vtype: o.ValueType, name: str, owner: str) -> Any:
        # a string is a shell command line; whether `shell = true` is set is
        # checked with the whole job (`constraints.check_job`)
        if type(expr) is ast.String:
            return expr.value
        return self.convert(expr, vtype, name, owner)

    def _schedule(self, expr: Any, vtype: o.ScheduleType, name: str, owner: str) -> Any:
        if type(expr) is not Call or expr.function not in ("cron", "every"):
            return self._mismatch(expr, vtype, name, owner)
        return calls.schedule(self.ctx, expr)

    def _backoff(self, expr: Any, vtype: o.BackoffType, name: str, owner: str) -> Any:
        if type(expr) is not Call or expr.function not in ("fixed", "exponential"):
            return self._mismatch(expr, vtype, name, owner)
        return calls.backoff(self.ctx, expr)
