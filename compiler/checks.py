"""Semantic checks: the merged blocks of a flow against the schema, collecting diagnostics.

The checker interprets `compiler.schema` generically: a block's attributes are
looked up in its `BlockSchema` (plus the options of the backend it names, for
`broker`, `notify` and `scale`), and each value is checked and converted by
its value type. What the schema cannot say (a job runs `run` or `command`, a
topic's broker may be implied, dependency cycles, the warnings) follows in
named passes. Nothing here raises on a user's mistake: every problem of every
block is collected, and the converted values are handed to `compiler.build`.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from typing import Any, Final, TypeAlias

import networkx as nx
from tideflow.dsl import ast
from tideflow.dsl.ast import Attribute, Block, Call, MapEntry, Span, expr_kind
from tideflow.dsl.diagnostics import Diagnostic, Related
from tideflow.dsl.loader import LoadedFlow
from tideflow.dsl.suggest import suggest

from . import cron as cronlib
from . import schema as s
from .ir import Backoff, EnvRef, SecretRef

__all__ = ["CheckedFlow", "Declaration", "ScheduleSpec", "Section", "check_flow"]

Item: TypeAlias = Attribute | Block | MapEntry


@dataclass(frozen=True, slots=True)
class OtherFlowsJob:
    """A job of another flow, named by `flow.FLOW.job.JOB` in `after`."""

    flow: str
    job: str


def _is_other_flows_job(expr: ast.Reference) -> bool:
    parts = expr.parts
    return len(parts) == 4 and parts[0] == "flow" and parts[2] == "job"


class _Invalid:
    """The result of converting a value that had a problem (already reported)."""

    __slots__ = ()


INVALID: Final = _Invalid()
LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
CALLABLE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(slots=True)
class Section:
    """The converted values of one block body (or map literal), as written.

    `values` holds schema fields, `options` the options of the backend the
    block names (`backend`); `items` says where each name was written. Values
    that had a problem are left out. Defaults are not filled in here.
    """

    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    backend: s.BackendSpec | None = None


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A checked `cron(...)` or `every(...)`; `timezone` is cron's own `timezone =`."""

    kind: str
    cron: str | None
    interval: float | None
    timezone: str | None
    span: Span  # of the cron string, or of the call


@dataclass(frozen=True, slots=True)
class Declaration:
    """One checked top-level block."""

    kind: str
    name: str
    block: Block
    section: Section


@dataclass(frozen=True)
class CheckedFlow:
    """What the checks found: declarations by kind and name (source order) and diagnostics.

    `build` may turn it into IR only when `diagnostics` hold no error.
    """

    name: str
    source: str
    flow: Declaration | None
    declarations: Mapping[str, Mapping[str, Declaration]]
    diagnostics: tuple[Diagnostic, ...]
    timezones: Mapping[str, str] = field(default_factory=dict)  # job -> effective zone

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def check_flow(loaded: LoadedFlow, catalog: s.Catalog, *, today: date | None = None) -> CheckedFlow:
    """Check the merged blocks of `loaded`. `today` anchors the daylight-saving warnings."""
    checker = _Checker(catalog, today or datetime.now(UTC).date())
    return checker.run(loaded)


# --- helpers -----------------------------------------------------------------------------


def head_span(block: Block) -> Span:
    """`job "extract"`: where a message about a whole block points."""
    return block.type_span.to(block.label.span) if block.label else block.type_span


@cache
def _is_credential(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in s.CREDENTIAL_WORDS)


@cache
def _zone_suggestion(text: str) -> str | None:
    # cached: a flow may repeat one misspelt zone in many jobs
    zones = zoneinfo.available_timezones()
    folded = {name.lower(): name for name in zones}.get(text.lower())
    return f'did you mean "{folded}"?' if folded else suggest(text, zones, '"{}"', fold_case=True)


_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def _one_edit_away(
    word: str, choices: Container[str], alphabet: str = _NAME_CHARACTERS
) -> str | None:
    """A choice one transposition, deletion, replacement or insertion away from `word`.

    Replacements and insertions try the characters of `alphabet`, in its order: pass
    only those that occur in `choices` (`_alphabet`) to try far fewer strings.
    """
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    for head, tail in splits:
        if len(tail) > 1 and (near := head + tail[1] + tail[0] + tail[2:]) in choices:
            return near
    for head, tail in splits:
        if tail and (near := head + tail[1:]) in choices:
            return near
    for head, tail in splits:
        for character in alphabet:
            if tail and (near := head + character + tail[1:]) in choices:
                return near
            if (near := head + character + tail) in choices:
                return near
    return None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _value_span(item: Item) -> Span:
    """Where the value of an attribute or map entry is written (a block: its type)."""
    return item.type_span if type(item) is Block else item.value.span  # type: ignore[union-attr]


def _item_parts(item: Item) -> tuple[str, Span]:
    if type(item) is MapEntry:
        return item.key, item.key_span
    if type(item) is Block:
        return item.type, item.type_span
    assert type(item) is Attribute
    return item.name, item.name_span


_BACKEND_WORDS = {"broker": "brokers", "scaler": "scalers", "notifier": "notifiers"}

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


# --- the checker ---------------------------------------------------------------------------


class _Checker:
    def __init__(self, catalog: s.Catalog, today: date) -> None:
        self.catalog = catalog
        self.today = today
        self.found: list[Diagnostic] = []
        self._alphabets: dict[tuple[int, int], str] = {}  # see _alphabet
        # kind -> name -> first block of that name, filled before any value is checked
        self.blocks: dict[str, dict[str, Block]] = {kind: {} for kind in s.BLOCKS}
        self.declarations: dict[str, dict[str, Declaration]] = {kind: {} for kind in s.BLOCKS}
        self._field_tables: dict[tuple[int, int], dict[str, tuple[s.Field, bool]]] = {}
        self._required: dict[tuple[int, int], tuple[s.Field, ...]] = {}
        self._converters: dict[type, Callable[[Any, Any, str, str], Any]] = {
            s.StringType: self._string,
            s.IntType: self._int,
            s.NumberType: self._number,
            s.BoolType: self._bool,
            s.DurationType: self._duration,
            s.SizeType: self._size,
            s.EnumType: self._enum,
            s.ListType: self._list,
            s.MapType: self._map,
            s.RefType: self._reference,
            s.ObjectType: self._object,
            s.ScheduleType: self._schedule,
            s.BackoffType: self._backoff,
            s.CallableType: self._callable,
            s.LiteralType: self._literal,
        }
        # attributes whose accepted forms the schema cannot express
        self._special: dict[tuple[str, str], Callable[[Any, Any, str, str], Any]] = {
            ("job", "command"): self._command,
        }

    # --- reporting ------------------------------------------------------------------------

    def error(
        self,
        code: str,
        message: str,
        span: Span | None,
        *,
        label: str | None = None,
        help: str | None = None,
        related: tuple[Related, ...] = (),
        notes: tuple[str, ...] = (),
    ) -> _Invalid:
        self.found.append(
            Diagnostic(code, message, span, label=label, help=help, notes=notes, related=related)
        )
        return INVALID

    def _suggest_name(self, word: str, names: Mapping[str, object], template: str) -> str | None:
        """`suggest` for the names of a flow, which may be tens of thousands.

        difflib compares the word with every name (about 20 µs each); past a
        thousand names only names one edit away are looked up, so that a flow
        whose references are all misspelt is still reported in seconds.
        """
        if len(names) <= 1000:
            return suggest(word, names, template, fold_case=True)
        close = _one_edit_away(word, names, self._alphabet(names))
        return f"did you mean {template.format(close)}?" if close else None

    def _alphabet(self, names: Mapping[str, object]) -> str:
        """The name characters that occur in `names`, in `_NAME_CHARACTERS` order (a
        generated flow uses a dozen of the 64): computed once per set of names."""
        key = (id(names), len(names))
        found = self._alphabets.get(key)
        if found is None:
            used = set().union(*map(set, names))
            found = self._alphabets[key] = "".join(c for c in _NAME_CHARACTERS if c in used)
        return found

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.found)

    # --- the passes -----------------------------------------------------------------------

    def run(self, loaded: LoadedFlow) -> CheckedFlow:
        pending = self._declare(loaded.blocks)
        flow: Declaration | None = None
        for kind, name, block, schema in pending:
            section = self._section(block.body, schema, block.describe(), head_span(block))
            if name is None:
                continue
            declaration = Declaration(kind, name, block, section)
            if kind == "flow":
                flow = flow or declaration
            elif name not in self.declarations[kind]:
                self.declarations[kind][name] = declaration
        flow_zone = "UTC"
        if flow is not None:
            flow_zone = flow.section.values.get("timezone", "UTC")
        for declaration in self.declarations["topic"].values():
            self._check_topic(declaration)
        timezones: dict[str, str] = {}
        for declaration in self.declarations["job"].values():
            timezones[declaration.name] = self._check_job(declaration, flow_zone)
        for declaration in self.declarations["consumer"].values():
            self._check_consumer(declaration)
        self._check_cycles()
        if not self.has_errors:
            # these would only repeat the consequences of an error
            self._warn_unused()
            self._warn_partitions()
            self._warn_subject_needed()
        flow_name = flow.name if flow is not None else _stem(loaded.root)
        return CheckedFlow(
            flow_name,
            loaded.root,
            flow,
            {kind: dict(names) for kind, names in self.declarations.items()},
            tuple(self.found),
            timezones,
        )

    def _declare(
        self, blocks: Sequence[Block]
    ) -> list[tuple[str, str | None, Block, s.BlockSchema]]:
        """Pass 1: block types, labels and duplicate names, so that references can resolve."""
        pending: list[tuple[str, str | None, Block, s.BlockSchema]] = []
        flow_block: Block | None = None
        for block in blocks:
            schema = s.BLOCKS.get(block.type)
            if schema is None:
                self.error(
                    "E201",
                    f"unknown block type `{block.type}`",
                    block.type_span,
                    help=suggest(block.type, s.BLOCKS, fold_case=True),
                )
                continue
            name = self._label(block, schema)
            if block.type == "flow":
                if flow_block is not None:
                    self.error(
                        "E205",
                        "a flow has only one `flow` block",
                        head_span(block),
                        related=(Related(head_span(flow_block), "first `flow` block here"),),
                    )
                else:
                    flow_block = block
            elif name is not None:
                first = self.blocks[block.type].get(name)
                if first is not None:
                    self.error(
                        "E205",
                        f'duplicate {block.type} "{name}"',
                        head_span(block),
                        label=f'another {block.type} is already named "{name}"',
                        related=(Related(head_span(first), "first defined here"),),
                    )
                else:
                    self.blocks[block.type][name] = block
            pending.append((block.type, name, block, schema))
        return pending

    def _label(self, block: Block, schema: s.BlockSchema) -> str | None:
        if not schema.label:
            if block.label is not None:
                self.error(
                    "E215",
                    f"`{block.type}` blocks take no name",
                    block.label.span,
                    help=f"write `{block.type} {{ ... }}`",
                )
            return None
        if block.label is None:
            self.error(
                "E215",
                f"{block.type} block has no name",
                block.type_span,
                help=f'name it: `{block.type} "NAME" {{ ... }}`',
            )
            return None
        name = block.label.value
        if not LABEL.match(name):
            fixed = re.sub(r"[^A-Za-z0-9_-]", "_", name)
            if not fixed or not (fixed[0].isalpha() or fixed[0] == "_"):
                fixed = "_" + fixed
            self.error(
                "E215",
                f'invalid {block.type} name "{name}"',
                block.label.span,
                label="names start with a letter or `_` and hold letters, digits, `_` or `-`",
                help=f'for example "{fixed}"',
            )
        return name

    # --- block bodies -----------------------------------------------------------------------

    def _fields(
        self, schema: s.BlockSchema, backend: s.BackendSpec | None
    ) -> tuple[dict[str, tuple[s.Field, bool]], tuple[s.Field, ...]]:
        """Name -> (field, is a backend option), and the required fields."""
        key = (id(schema), id(backend))
        table = self._field_tables.get(key)
        if table is None:
            table = {f.name: (f, False) for f in schema.fields}
            for option in backend.options if backend else ():
                table.setdefault(option.name, (option, True))
            self._field_tables[key] = table
            self._required[key] = tuple(f for f, _ in table.values() if f.required)
        return table, self._required[key]

    def _backend(
        self, items: Sequence[Item], schema: s.BlockSchema, owner: str
    ) -> tuple[s.BackendSpec | None, bool]:
        """The backend the block names, and whether its name is known (E211 otherwise)."""
        assert schema.backend_kind is not None and schema.backend_field is not None
        choice: Item | None = None
        for item in items:
            if type(item) is not Block and _item_parts(item)[0] == schema.backend_field:
                choice = item
                break
        if choice is None or type(choice) is Block:
            default = schema.by_name[schema.backend_field].default
            if default is None:
                return None, False  # E204 follows from the required field
            return self.catalog.get(schema.backend_kind, default), True
        value = choice.value  # type: ignore[union-attr]
        if type(value) is not ast.String:
            return None, False  # the field's own type check reports it
        spec = self.catalog.get(schema.backend_kind, value.value)
        if spec is not None:
            return spec, True
        available = self.catalog.names(schema.backend_kind)
        words = _BACKEND_WORDS.get(schema.backend_kind, schema.backend_kind + "s")
        self.error(
            "E211",
            f'unknown {schema.backend_kind} "{value.value}" in {owner}',
            value.span,
            label=f"available {words}: {', '.join(available)}" if available else None,
            help=suggest(value.value, available, '"{}"', fold_case=True),
        )
        return None, False

    def _section(
        self, items: Sequence[Item], schema: s.BlockSchema, owner: str, where: Span
    ) -> Section:
        """Check one body against `schema` (and its backend's options); never raises."""
        section = Section()
        known_backend = True
        if schema.backend_kind is not None:
            section.backend, known_backend = self._backend(items, schema, owner)
        table, required = self._fields(schema, section.backend)
        written = section.items
        for item in items:
            kind = type(item)
            if kind is Attribute:
                name, name_span = item.name, item.name_span  # type: ignore[union-attr]
            else:
                name, name_span = _item_parts(item)
            entry = table.get(name)
            if entry is None:
                if known_backend or kind is Block:
                    self._unknown(name, name_span, kind is Block, table, owner)
                continue
            first = written.get(name)
            if first is not None:
                self.error(
                    "E206",
                    f"`{name}` is set twice in {owner}",
                    name_span,
                    related=(Related(_item_parts(first)[1], "first set here"),),
                )
                continue
            written[name] = item
            spec, is_option = entry
            if kind is Block:
                value = self._nested(item, spec, name, owner)  # type: ignore[arg-type]
            else:
                special = self._special.get((schema.type, name))
                convert = special or self._converters[type(spec.type)]
                value = convert(item.value, spec.type, name, owner)  # type: ignore[union-attr]
            if value is not INVALID:
                (section.options if is_option else section.values)[name] = value
        for spec in required:
            if spec.name not in written:
                example = f": `{spec.name} = {spec.example}`" if spec.example else ""
                self.error(
                    "E204",
                    f"missing required attribute `{spec.name}` in {owner}",
                    where,
                    help=f"add it{example}",
                )
        low, high = section.values.get("min"), section.values.get("max")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            self.error(
                "E213",
                f"`min` ({low}) is above `max` ({high}) in {owner}",
                _value_span(section.items["min"]),
                related=(Related(_value_span(section.items["max"]), "`max` set here"),),
            )
        return section

    def _unknown(
        self,
        name: str,
        span: Span,
        is_block: bool,
        table: Mapping[str, tuple[s.Field, bool]],
        owner: str,
    ) -> None:
        if is_block:
            blocks = [n for n, (f, _) in table.items() if isinstance(f.type, s.ObjectType)]
            self.error(
                "E202",
                f"unknown block `{name}` in {owner}",
                span,
                help=suggest(name, blocks, fold_case=True) or suggest(name, table, fold_case=True),
            )
        else:
            self.error(
                "E202",
                f"unknown attribute `{name}` in {owner}",
                span,
                help=suggest(name, table, fold_case=True),
            )

    def _nested(self, block: Block, spec: s.Field, name: str, owner: str) -> Any:
        if not isinstance(spec.type, s.ObjectType):
            return self.error(
                "E203",
                f"wrong type for `{name}` in {owner}: expected {spec.type.describe()}, "
                "found a block",
                block.type_span,
                help=f"write `{name} = {spec.example}`" if spec.example else None,
            )
        if block.label is not None:
            self.error(
                "E215",
                f"`{name}` blocks take no name",
                block.label.span,
                help=f"write `{name} {{ ... }}`",
            )
        return self._section(block.body, spec.type.schema, f"{name} of {owner}", block.type_span)

    # --- values ------------------------------------------------------------------------------

    def convert(self, expr: ast.Expr, vtype: s.ValueType, name: str, owner: str) -> Any:
        """Check `expr` against `vtype`; the converted value, or INVALID (reported)."""
        return self._converters[type(vtype)](expr, vtype, name, owner)

    def _mismatch(
        self, expr: ast.Expr, vtype: s.ValueType, name: str, owner: str, help: str | None = None
    ) -> _Invalid:
        if type(expr) is Call and expr.function not in s.FUNCTIONS:
            return self._unknown_function(expr)
        if type(expr) is Call and expr.function == "secret":
            return self.error(
                "E203",
                "secret() is only allowed in attributes that take it; "
                f"`{name}` in {owner} takes {vtype.describe()}",
                expr.span,
            )
        if help is None and type(expr) is ast.String:
            help = self._unquote_help(expr, vtype)
        if help is None and type(expr) is ast.Name and isinstance(vtype, s.StringType):
            help = f'write it as a string: "{expr.name}"'
        if help is None and type(expr) is ast.Number and isinstance(vtype, s.DurationType):
            help = f"add a unit: `{expr.raw}s`"
        return self.error(
            "E203",
            f"wrong type for `{name}` in {owner}: expected {vtype.describe()}, "
            f"found {expr_kind(expr)}",
            expr.span,
            help=help,
        )

    def _unquote_help(self, expr: ast.String, vtype: s.ValueType) -> str | None:
        text = expr.value
        if isinstance(vtype, s.RefType) and text in self.blocks.get(vtype.kind, {}):
            return f"write it as a reference: `{vtype.kind}.{text}`"
        if isinstance(vtype, s.IntType | s.NumberType | s.SizeType) and re.fullmatch(
            r"-?\d+(\.\d+)?", text
        ):
            return f"remove the quotes: `{text}`"
        if isinstance(vtype, s.DurationType) and re.fullmatch(
            r"(\d+(\.\d+)?(ms|us|s|m|h|d|w))+", text
        ):
            return f"remove the quotes: `{text}`"
        if isinstance(vtype, s.BoolType) and text in ("true", "false"):
            return f"remove the quotes: `{text}`"
        return None

    def _unknown_function(self, call: Call) -> _Invalid:
        return self.error(
            "E216",
            f"unknown function `{call.function}`",
            call.function_span,
            help=suggest(call.function, s.FUNCTIONS, "`{}()`", fold_case=True),
        )

    def _string(self, expr: Any, vtype: s.StringType, name: str, owner: str) -> Any:
        kind = type(expr)
        if kind is ast.String:
            text: str = expr.value
            if vtype.choices and text not in vtype.choices:
                return self._bad_choice(expr, text, vtype.choices, name, owner)
            if vtype.pattern and not re.fullmatch(vtype.pattern, text):
                return self.error(
                    "E208",
                    f'invalid value "{text}" for `{name}` in {owner}',
                    expr.span,
                    label=f"expected {vtype.pattern_doc or vtype.pattern}",
                )
            if name == "timezone":
                return self._timezone(expr)
            if text and _is_credential(name):
                self._literal_credential(expr, name, owner, vtype.secretable)
            return text
        if kind is Call and vtype.secretable and expr.function in ("env", "secret"):
            return self._env_or_secret(expr)
        return self._mismatch(expr, vtype, name, owner)

    def _literal_credential(
        self, expr: ast.String, name: str, owner: str, secretable: bool
    ) -> None:
        variable = re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
        key = name if LABEL.match(name) else f'"{name}"'
        self.found.append(
            Diagnostic(
                "W407",
                f"`{name}` in {owner} is a literal credential",
                expr.span,
                label="this is kept in the flow file, and in its IR",
                help=f'read it at run time: `{key} = secret("{variable}")`' if secretable else None,
            )
        )

    def _timezone(self, expr: ast.String) -> Any:
        text = expr.value
        if cronlib.zone(text) is not None:
            return text
        help = _zone_suggestion(text)
        return self.error(
            "E210",
            f'unknown time zone "{text}"',
            expr.span,
            label="expected an IANA zone such as Europe/Lisbon or UTC",
            help=help,
        )

    def _bad_choice(
        self, expr: ast.Expr, text: str, choices: Sequence[str], name: str, owner: str
    ) -> _Invalid:
        return self.error(
            "E208",
            f"invalid value `{text}` for `{name}` in {owner}",
            expr.span,
            label="expected one of: " + ", ".join(choices),
            help=suggest(text, choices, fold_case=True),
        )

    def _int(self, expr: Any, vtype: s.IntType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Number or type(expr.value) is not int:
            return self._mismatch(expr, vtype, name, owner)
        value: int = expr.value
        if vtype.minimum is not None and value < vtype.minimum:
            if vtype.minimum == 1:
                return self.error(
                    "E214",
                    f"`{name}` in {owner} must be positive, found {value}",
                    expr.span,
                )
            return self.error(
                "E208",
                f"`{name}` in {owner} must be at least {vtype.minimum}, found {value}",
                expr.span,
            )
        return value

    def _number(self, expr: Any, vtype: s.NumberType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Number:
            return self._mismatch(expr, vtype, name, owner)
        if vtype.positive and expr.value <= 0:
            return self.error(
                "E214", f"`{name}` in {owner} must be positive, found {expr.raw}", expr.span
            )
        return expr.value

    def _bool(self, expr: Any, vtype: s.BoolType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Bool:
            return self._mismatch(expr, vtype, name, owner)
        return expr.value

    def _duration(self, expr: Any, vtype: s.DurationType, name: str, owner: str) -> Any:
        if type(expr) is not ast.Duration:
            return self._mismatch(expr, vtype, name, owner)
        if vtype.positive and expr.seconds <= 0:
            return self.error("E214", f"`{name}` in {owner} must be longer than zero", expr.span)
        return expr.seconds

    def _size(self, expr: Any, vtype: s.SizeType, name: str, owner: str) -> Any:
        if type(expr) is ast.Size:
            return expr.bytes
        if type(expr) is ast.Number and type(expr.value) is int and expr.value >= 0:
            return expr.value
        return self._mismatch(expr, vtype, name, owner)

    def _enum(self, expr: Any, vtype: s.EnumType, name: str, owner: str) -> Any:
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

    def _list(self, expr: Any, vtype: s.ListType, name: str, owner: str) -> Any:
        if type(expr) is not ast.ListExpr:
            if not vtype.allow_single:
                return self._mismatch(expr, vtype, name, owner)
            items: tuple[ast.Expr, ...] = (expr,)
        else:
            items = expr.items
        convert = self._converters[type(vtype.item)]
        values = []
        for item in items:
            value = convert(item, vtype.item, name, owner)
            if value is not INVALID:
                values.append(value)
        if len(items) < vtype.min_items:
            return self.error(
                "E208",
                f"`{name}` in {owner} needs at least {_plural(vtype.min_items, 'item')}",
                expr.span,
            )
        return tuple(values)

    def _map(self, expr: Any, vtype: s.MapType, name: str, owner: str) -> Any:
        if type(expr) is not ast.MapExpr:
            return self._mismatch(expr, vtype, name, owner)
        convert = self._converters[type(vtype.value)]
        where = f"`{name}` of {owner}"
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        for entry in expr.entries:
            if entry.key in spans:
                self.error(
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

    def _reference(self, expr: Any, vtype: s.RefType, name: str, owner: str) -> Any:
        kind = type(expr)
        declared = self.blocks[vtype.kind]
        if kind is ast.Reference and _is_other_flows_job(expr) and vtype.kind == "job":
            # a job of another flow (`flow.billing.job.close`): not checkable here
            return OtherFlowsJob(expr.parts[1], expr.parts[3])
        if kind is ast.Reference:
            target = expr.target
            if expr.kind == vtype.kind and target in declared:
                return target
            if expr.kind == vtype.kind or expr.kind not in s.BLOCKS:
                close = self._suggest_name(target, declared, f"`{vtype.kind}.{{}}`")
                if close is None and expr.kind != vtype.kind and target in declared:
                    close = f"did you mean `{vtype.kind}.{target}`?"
                return self.error(
                    "E207",
                    f"undefined reference `{expr}`",
                    expr.span,
                    label=f'no {vtype.kind} is named "{target}"'
                    if expr.kind == vtype.kind
                    else None,
                    help=close,
                )
            return self.error(
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

    def _object(self, expr: Any, vtype: s.ObjectType, name: str, owner: str) -> Any:
        if type(expr) is not ast.MapExpr:
            return self._mismatch(expr, vtype, name, owner)
        return self._section(expr.entries, vtype.schema, f"{name} of {owner}", expr.span)

    def _callable(self, expr: Any, vtype: s.CallableType, name: str, owner: str) -> Any:
        if type(expr) is not ast.String:
            return self._mismatch(expr, vtype, name, owner)
        text: str = expr.value
        if not CALLABLE.match(text):
            fixed = None
            if ":" not in text and "." in text:
                module, _, function = text.rpartition(".")
                fixed = f'write it as "{module}:{function}"'
            return self.error(
                "E208",
                f'invalid callable "{text}" for `{name}` in {owner}',
                expr.span,
                label='expected "package.module:function"',
                help=fixed,
            )
        return text

    def _literal(self, expr: Any, vtype: s.LiteralType, name: str, owner: str) -> Any:
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
            return self._map(expr, s.MapType(vtype), name, owner)
        help = f'write it as a string: "{expr.name}"' if kind is ast.Name else None
        return self._mismatch(expr, vtype, name, owner, help=help)

    def _command(self, expr: Any, vtype: s.ValueType, name: str, owner: str) -> Any:
        # a string is a shell command line; whether `shell = true` is set is
        # checked with the whole job (`_check_job`)
        if type(expr) is ast.String:
            return expr.value
        return self.convert(expr, vtype, name, owner)

    # --- functions ---------------------------------------------------------------------------

    def _arguments(self, call: Call) -> tuple[list[Any], dict[str, Any]] | None:
        """Positional and keyword argument values of a known function, or None (reported)."""
        kinds, required, keywords = _SIGNATURES[call.function]
        usage = s.FUNCTIONS[call.function].split(": ", 1)[0]
        count = len(call.args)
        if not required <= count <= len(kinds):
            expected = (
                _plural(required, "argument")
                if required == len(kinds)
                else f"{required} or {len(kinds)} arguments"
            )
            self.error(
                "E216",
                f"{call.function}() takes {expected}, found {count}",
                call.span,
                help=f"write {usage}",
            )
            return None
        ok = True
        args: list[Any] = []
        for index, (arg, kind) in enumerate(zip(call.args, kinds, strict=False), start=1):
            value = self._argument(call, arg, kind, f"argument {index} of {call.function}()")
            ok = ok and value is not INVALID
            args.append(value)
        given: dict[str, Any] = {}
        for keyword in call.kwargs:
            if keyword.name not in keywords:
                self.error(
                    "E216",
                    f"{call.function}() has no argument `{keyword.name}`",
                    keyword.name_span,
                    help=suggest(keyword.name, keywords, fold_case=True) or f"write {usage}",
                )
                ok = False
                continue
            if keyword.name in given:
                self.error(
                    "E216",
                    f"argument `{keyword.name}` of {call.function}() is given twice",
                    keyword.name_span,
                )
                ok = False
                continue
            value = self._argument(
                call,
                keyword.value,
                keywords[keyword.name],
                f"`{keyword.name}` of {call.function}()",
            )
            given[keyword.name] = value
            ok = ok and value is not INVALID
        return (args, given) if ok else None

    def _argument(self, call: Call, arg: ast.Expr, kind: str, what: str) -> Any:
        if type(arg) is not _ARGUMENT_CLASSES[kind]:
            usage = s.FUNCTIONS[call.function].split(": ", 1)[0]
            return self.error(
                "E216",
                f"{what} must be a {kind}, found {expr_kind(arg)}",
                arg.span,
                help=f"write {usage}",
            )
        if type(arg) is ast.String:
            return arg.value
        if type(arg) is ast.Duration:
            if arg.seconds <= 0:
                return self.error("E214", f"{what} must be longer than zero", arg.span)
            return arg.seconds
        assert type(arg) is ast.Number
        if arg.value <= 0:
            return self.error("E214", f"{what} must be positive, found {arg.raw}", arg.span)
        return float(arg.value)

    def _env_or_secret(self, call: Call) -> Any:
        parsed = self._arguments(call)
        if parsed is None:
            return INVALID
        args, _ = parsed
        if not ENV_NAME.match(args[0]):
            return self.error(
                "E216",
                f'invalid environment variable name "{args[0]}" in {call.function}()',
                call.args[0].span,
                label="names hold letters, digits and `_`, and do not start with a digit",
            )
        if call.function == "secret":
            return SecretRef(args[0])
        return EnvRef(args[0], args[1] if len(args) > 1 else None)

    def _schedule(self, expr: Any, vtype: s.ScheduleType, name: str, owner: str) -> Any:
        if type(expr) is not Call or expr.function not in ("cron", "every"):
            return self._mismatch(expr, vtype, name, owner)
        parsed = self._arguments(expr)
        if parsed is None:
            return INVALID
        args, keywords = parsed
        if expr.function == "every":
            return ScheduleSpec("every", None, args[0], None, expr.span)
        text: str = args[0]
        literal: ast.String = expr.args[0]  # type: ignore[assignment]
        problem = cronlib.check_cron(text)
        if problem is not None:
            self.error(
                "E209",
                problem.message,
                _inside(literal, problem.start, problem.end),
                label=problem.label,
                help=problem.help,
            )
            return INVALID
        zone_name = keywords.get("timezone")
        if zone_name is not None:
            zone_expr = next(k.value for k in expr.kwargs if k.name == "timezone")
            if self._timezone(zone_expr) is INVALID:  # type: ignore[arg-type]
                return INVALID
        return ScheduleSpec("cron", text, None, zone_name, literal.span)

    def _backoff(self, expr: Any, vtype: s.BackoffType, name: str, owner: str) -> Any:
        if type(expr) is not Call or expr.function not in ("fixed", "exponential"):
            return self._mismatch(expr, vtype, name, owner)
        parsed = self._arguments(expr)
        if parsed is None:
            return INVALID
        args, keywords = parsed
        if expr.function == "fixed":
            return Backoff("fixed", args[0])
        initial, cap = args
        if initial > cap:
            return self.error(
                "E213",
                f"the first delay ({expr.args[0].raw}) is above the cap ({expr.args[1].raw})",  # type: ignore[union-attr]
                expr.args[0].span,
                related=(Related(expr.args[1].span, "the cap"),),
                help="exponential(INITIAL, CAP) takes the first delay first",
            )
        return Backoff("exponential", initial, cap, keywords.get("factor", 2.0))

    # --- what the schema cannot say -------------------------------------------------------------

    def _check_topic(self, topic: Declaration) -> None:
        if "broker" in topic.section.items:
            return
        brokers = list(self.blocks["broker"])
        if len(brokers) == 1:
            topic.section.values["broker"] = brokers[0]
            return
        if brokers:
            help = (
                f"the flow declares {len(brokers)} brokers ({', '.join(brokers)}): "
                f"choose one, such as `broker = broker.{brokers[0]}`"
            )
        else:
            help = 'declare one: `broker "main" { kind = "embedded" }`'
        self.error(
            "E204",
            f"missing required attribute `broker` in {topic.block.describe()}",
            head_span(topic.block),
            help=help,
        )

    def _check_job(self, job: Declaration, flow_zone: str) -> str:
        """Job rules across attributes; the zone its schedule fires in."""
        values, items = job.section.values, job.section.items
        owner = job.block.describe()
        run, command = items.get("run"), items.get("command")
        if run is not None and command is not None:
            first, second = sorted((run, command), key=lambda item: item.span.start)
            first_name, second_name = _item_parts(first)[0], _item_parts(second)[0]
            self.error(
                "E217",
                f"{owner} sets both `run` and `command`",
                _item_parts(second)[1],
                label=f"conflicts with `{first_name}`",
                help=f"keep one of them: remove `{second_name}` or `{first_name}`",
                related=(Related(_item_parts(first)[1], f"`{first_name}` set here"),),
            )
        elif run is None and command is None:
            self.error(
                "E212",
                f"{owner} has nothing to run",
                head_span(job.block),
                help='add `run = "package.module:function"` or `command = ["program", "arg"]`',
            )
        shell = values.get("shell", False)
        command_value = values.get("command")
        if isinstance(command_value, str) and not shell:
            self.error(
                "E217",
                f"`command` in {owner} is a string but `shell` is not true",
                _value_span(items["command"]),
                help="write the argv as a list, or set `shell = true`",
            )
        elif isinstance(command_value, tuple) and shell:
            self.error(
                "E217",
                f"`shell = true` in {owner} needs `command` as one string",
                _value_span(items["command"]),
                help="write the command line as one string, or remove `shell = true`",
            )
        elif shell and command is None:
            self.error(
                "E217",
                f"`shell = true` in {owner} applies only to `command`",
                items["shell"].span,
            )
        if values.get("publish_stdout"):
            where = items["publish_stdout"].span
            publishes = values.get("publishes", ())
            if run is not None:
                self.error(
                    "E217",
                    f"`publish_stdout` in {owner} applies only to `command`",
                    where,
                    label="a `run` callable publishes its messages itself",
                )
            elif len(publishes) != 1:
                self.error(
                    "E217",
                    f"`publish_stdout` in {owner} needs exactly one `publishes` topic, "
                    f"found {len(publishes)}",
                    where,
                )
        zone_name: str = values.get("timezone", flow_zone)
        schedule = values.get("schedule")
        if isinstance(schedule, ScheduleSpec) and schedule.timezone is not None:
            if "timezone" in values and values["timezone"] != schedule.timezone:
                self.error(
                    "E217",
                    f'{owner} sets two time zones: `timezone = "{values["timezone"]}"` '
                    f'and cron(timezone = "{schedule.timezone}")',
                    schedule.span,
                    help="keep one of them",
                )
            zone_name = schedule.timezone
        if isinstance(schedule, ScheduleSpec) and schedule.cron is not None:
            self._warn_dst(schedule, zone_name)
            self._warn_either_day(schedule)
        return zone_name

    def _check_consumer(self, consumer: Declaration) -> None:
        values, items = consumer.section.values, consumer.section.items
        owner = consumer.block.describe()
        if "dead_letter" in values and values.get("dead_letter") == values.get("consumes"):
            self.error(
                "E217",
                f"{owner} dead-letters to the topic it consumes",
                _value_span(items["dead_letter"]),
                help="a failed message would come straight back; use another topic",
            )
        scale = values.get("scale")
        if isinstance(scale, Section):
            poll = scale.values.get("poll", s.SCALE.by_name["poll"].default)
            cooldown = scale.values.get("cooldown", s.SCALE.by_name["cooldown"].default)
            if poll > cooldown:
                where = scale.items.get("poll") or scale.items.get("cooldown")
                assert where is not None
                self.found.append(
                    Diagnostic(
                        "W406",
                        f"`poll` ({_seconds(poll)}) is longer than `cooldown` "
                        f"({_seconds(cooldown)}) in scale of {owner}",
                        where.span,
                        label="the backlog is read less often than instances may be stopped",
                    )
                )

    def _check_cycles(self) -> None:
        """E301: one diagnostic per strongly connected group of jobs."""
        jobs = self.declarations["job"]
        graph = nx.DiGraph()
        order = {name: index for index, name in enumerate(jobs)}
        graph.add_nodes_from(jobs)
        graph.add_edges_from(
            (name, dependency)
            for name, job in jobs.items()
            for dependency in job.section.values.get("after", ())
            if dependency in jobs
        )
        for group in nx.strongly_connected_components(graph):
            if len(group) == 1:
                (only,) = group
                if not graph.has_edge(only, only):
                    continue
                path = [only, only]
            else:
                start = min(group, key=order.__getitem__)
                edges = nx.find_cycle(graph.subgraph(group), source=start)
                path = [edge[0] for edge in edges]
                first = min(range(len(path)), key=lambda i: order[path[i]])
                path = [*path[first:], *path[:first], path[first]]
            chain = " -> ".join(f'job "{name}"' for name in path)
            spans = [self._after_span(path[i], path[i + 1]) for i in range(len(path) - 1)]
            self.error(
                "E301",
                f"dependency cycle: {chain}",
                spans[0],
                label=f'job "{path[0]}" waits for job "{path[1]}"',
                related=tuple(
                    Related(span, f'job "{path[i + 1]}" waits for job "{path[i + 2]}"')
                    for i, span in enumerate(spans[1:])
                ),
                notes=('each arrow reads "waits for" (`after`)',),
            )

    def _after_span(self, job: str, dependency: str) -> Span:
        item = self.declarations["job"][job].section.items["after"]
        value = item.value  # type: ignore[union-attr]
        candidates = value.items if type(value) is ast.ListExpr else (value,)
        for candidate in candidates:
            if type(candidate) is ast.Reference and candidate.target == dependency:
                return candidate.span
        return item.span

    # --- warnings ---------------------------------------------------------------------------

    def _warn_dst(self, schedule: ScheduleSpec, zone_name: str) -> None:
        assert schedule.cron is not None
        gap, overlap = cronlib.dst_hits(schedule.cron, zone_name, self.today)
        shown = schedule.cron
        if gap is not None and gap.moved:
            start, end = gap.transition.start, gap.transition.end
            self.found.append(
                Diagnostic(
                    "W401",
                    f'cron "{shown}" fires at {_clock(gap.fires_at)}, which does not exist '
                    f"in {zone_name} on {gap.fires_at.date().isoformat()} (clocks go forward)",
                    schedule.span,
                    label=f"it runs once at {_clock(end)} instead",
                    help=f"local times from {_clock(start)} to {_clock(end)} are skipped that "
                    'day: schedule it outside them, or in timezone = "UTC"',
                )
            )
        elif gap is not None:
            start, end = gap.transition.start, gap.transition.end
            self.found.append(
                Diagnostic(
                    "W401",
                    f'cron "{shown}" does not fire at {_clock(gap.fires_at)}, which does not '
                    f"exist in {zone_name} on {gap.fires_at.date().isoformat()} "
                    "(clocks go forward)",
                    schedule.span,
                    label=f"a wildcard minute or hour follows the wall clock: no runs from "
                    f"{_clock(start)} to {_clock(end)} that day",
                    help='schedule it outside those times, or in timezone = "UTC"',
                )
            )
        if overlap is not None:
            start, end = overlap.transition.start, overlap.transition.end
            self.found.append(
                Diagnostic(
                    "W402",
                    f'cron "{shown}" fires at {_clock(overlap.fires_at)}, which happens twice '
                    f"in {zone_name} on {overlap.fires_at.date().isoformat()} (clocks go back)",
                    schedule.span,
                    label="it runs once, the first time",
                    help=f"local times from {_clock(start)} to {_clock(end)} repeat that day: "
                    'schedule it outside them, or in timezone = "UTC"',
                )
            )

    def _warn_either_day(self, schedule: ScheduleSpec) -> None:
        assert schedule.cron is not None
        either = cronlib.either_day(schedule.cron)
        if either is None:
            return
        days_of_month, days_of_week = either
        self.found.append(
            Diagnostic(
                "W410",
                f'cron "{schedule.cron}" runs {days_of_month} and also {days_of_week} '
                "(not only on days that are both)",
                schedule.span,
                label="both day fields are restricted, so a day matching either one will do",
                notes=(
                    "crontab(5): a day field that begins with `*` (such as `*/2`) is not "
                    "restricted, and then both fields must match",
                ),
            )
        )

    def _warn_unused(self) -> None:
        jobs = self.declarations["job"].values()
        consumers = self.declarations["consumer"].values()
        published = {t for job in jobs for t in job.section.values.get("publishes", ())}
        dead_letters = {
            c.section.values["dead_letter"] for c in consumers if "dead_letter" in c.section.values
        }
        published.update(dead_letters)
        # a dead-letter topic is read by people (and replays), not by a consumer
        consumed = {c.section.values.get("consumes") for c in consumers} | dead_letters
        for name, topic in self.declarations["topic"].items():
            if name not in published:
                self._warn(
                    "W404",
                    f'nothing publishes to topic "{name}"',
                    topic.block,
                    "no job lists it in `publishes`",
                )
            if name not in consumed:
                self._warn(
                    "W405",
                    f'nothing consumes topic "{name}"',
                    topic.block,
                    "no consumer names it in `consumes`",
                )
        used_pools = {job.section.values.get("pool") for job in jobs}
        for name, pool in self.declarations["pool"].items():
            if name not in used_pools:
                self._warn("W408", f'pool "{name}" is never used', pool.block, "no job uses it")
        used_brokers = {t.section.values.get("broker") for t in self.declarations["topic"].values()}
        for name, broker in self.declarations["broker"].items():
            if name not in used_brokers:
                self._warn(
                    "W408", f'broker "{name}" is never used', broker.block, "no topic is on it"
                )

    def _warn_subject_needed(self) -> None:
        """W411: a topic on a broker that routes by subject, whose subjects all have
        wildcards, takes only messages that name their subject."""
        brokers = self.declarations["broker"]
        needy: dict[str, tuple[str, ...]] = {}
        for name, topic in self.declarations["topic"].items():
            broker = brokers.get(topic.section.values.get("broker", ""))
            if broker is None or broker.section.backend is None:
                continue
            if broker.section.backend.subject_routed:
                wildcards = _wildcard_subjects(topic)
                if wildcards:
                    needy[name] = wildcards

        def related(topic: str) -> tuple[Related, ...]:
            item = self.declarations["topic"][topic].section.items["subjects"]
            return (Related(_value_span(item), "every subject has a wildcard"),)

        fix = "or give the topic a subject without wildcards (the first one is the default)"
        for job in self.declarations["job"].values():
            values, items = job.section.values, job.section.items
            for topic in values.get("publishes", ()):
                if topic not in needy:
                    continue
                subjects = ", ".join(needy[topic])
                example = ".".join(
                    "<token>" if t in ("*", ">") else t for t in needy[topic][0].split(".")
                )
                if values.get("publish_stdout"):
                    label = "lines of `publish_stdout` cannot name one: each publish fails"
                    help = fix.removeprefix("or ")
                else:
                    label = "without one, the publish fails"
                    help = f'name it: `ctx.publish("{topic}", value, subject="{example}")`, {fix}'
                self.found.append(
                    Diagnostic(
                        "W411",
                        f'{job.block.describe()} publishes to topic "{topic}", whose subjects '
                        f"all have wildcards ({subjects}): each message must name its subject",
                        _reference_span(items["publishes"], topic),
                        label=label,
                        help=help,
                        related=related(topic),
                    )
                )
        for consumer in self.declarations["consumer"].values():
            dead_letter = consumer.section.values.get("dead_letter")
            if dead_letter not in needy:
                continue
            self.found.append(
                Diagnostic(
                    "W411",
                    f'{consumer.block.describe()} dead-letters to topic "{dead_letter}", whose '
                    f"subjects all have wildcards ({', '.join(needy[dead_letter])})",
                    _value_span(consumer.section.items["dead_letter"]),
                    label="a dead-lettered message has no subject there: dead-lettering fails",
                    help=fix.removeprefix("or "),
                    related=related(dead_letter),
                )
            )

    def _warn(self, code: str, message: str, block: Block, label: str) -> None:
        self.found.append(Diagnostic(code, message, head_span(block), label=label))

    def _warn_partitions(self) -> None:
        topics = self.declarations["topic"]
        brokers = self.declarations["broker"]
        for consumer in self.declarations["consumer"].values():
            scale = consumer.section.values.get("scale")
            topic = topics.get(consumer.section.values.get("consumes", ""))
            if not isinstance(scale, Section) or topic is None or "max" not in scale.values:
                continue
            broker = brokers.get(topic.section.values.get("broker", ""))
            if broker is None or broker.section.backend is None:
                continue
            if not broker.section.backend.partitioned:
                continue
            partitions = topic.section.values.get(
                "partitions", s.TOPIC.by_name["partitions"].default
            )
            maximum = scale.values["max"]
            if maximum > partitions:
                self.found.append(
                    Diagnostic(
                        "W403",
                        f"scale `max` ({maximum}) of {consumer.block.describe()} is above the "
                        f'{_plural(partitions, "partition")} of topic "{topic.name}"',
                        _value_span(scale.items["max"]),
                        label=f"instances beyond {partitions} would idle",
                        help=f"set `max = {partitions}`, or give the topic more partitions",
                        related=(Related(head_span(topic.block), "the topic"),),
                    )
                )


def _wildcard_subjects(topic: Declaration) -> tuple[str, ...]:
    """The topic's `subjects` when every one of them has a wildcard token (`*`, `>`),
    else ()."""
    subjects = topic.section.values.get("subjects") or ()
    if isinstance(subjects, str):
        subjects = (subjects,)
    if subjects and all({"*", ">"} & set(s.split(".")) for s in subjects):
        return tuple(subjects)
    return ()


def _reference_span(item: Item, target: str) -> Span:
    """The span of the reference to `target` in a list (or single) attribute."""
    value = item.value  # type: ignore[union-attr]
    candidates = value.items if type(value) is ast.ListExpr else (value,)
    for candidate in candidates:
        if type(candidate) is ast.Reference and candidate.target == target:
            return candidate.span
    return item.span


def _inside(literal: ast.String, start: int, end: int) -> Span:
    """The span of characters [start, end) of a string literal's value."""
    span = literal.span
    if literal.raw[1:-1] != literal.value or span.line != span.end_line:
        return span  # escapes shift columns: point at the whole string
    offset = 1 + start
    width = max(end - start, 1)
    return Span(
        span.path,
        span.line,
        span.column + offset,
        span.line,
        span.column + offset + width,
        span.start + offset,
        span.start + offset + width,
    )


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S" if moment.second else "%H:%M")


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[: -len(".flow")] if name.endswith(".flow") else name.rsplit(".", 1)[0] or name
