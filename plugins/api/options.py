"""Option schemas: the value types, `Field`, and the catalog of backends.

A backend declares its options as a tuple of `Field`s; the compiler checks a
`broker`, `scale` or `notify` block against the options of the backend it names,
and `tideflow plugins --describe` prints them. The language's own blocks are
described with the same classes (`tideflow.compiler.schema`).

`EnvRef` and `SecretRef` are the values `env("VAR")` and `secret("VAR")` stand
for until they are read from the environment (a `StringType(secretable=True)`
option may hold one); a backend never receives one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "BackendSpec",
    "BackoffType",
    "BlockSchema",
    "BoolType",
    "CallableType",
    "Catalog",
    "DurationType",
    "EnumType",
    "EnvRef",
    "Field",
    "IntType",
    "ListType",
    "LiteralType",
    "MapType",
    "NumberType",
    "ObjectType",
    "RefType",
    "ScheduleType",
    "SecretRef",
    "SizeType",
    "StringType",
    "ValueType",
]


# --- values read at run time ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvRef:
    """`env("NAME", default)`: read from the environment at run time."""

    name: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class SecretRef:
    """`secret("NAME")`: read from the environment at run time, never shown."""

    name: str


# --- value types ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringType:
    """A string literal. With `secretable`, also `env("VAR", default)` or `secret("VAR")`."""

    secretable: bool = False
    choices: tuple[str, ...] = ()  # when set, the string must be one of these
    pattern: str | None = None  # a regular expression the whole string must match
    pattern_doc: str = ""  # how a message describes `pattern`

    def describe(self) -> str:
        return "string, env() or secret()" if self.secretable else "string"


@dataclass(frozen=True, slots=True)
class IntType:
    minimum: int | None = None

    def describe(self) -> str:
        return "integer" if self.minimum is None else f"integer ≥ {self.minimum}"


@dataclass(frozen=True, slots=True)
class NumberType:
    """An integer or a decimal number; `positive` excludes zero."""

    positive: bool = False

    def describe(self) -> str:
        return "positive number" if self.positive else "number"


@dataclass(frozen=True, slots=True)
class BoolType:
    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True, slots=True)
class DurationType:
    """A duration literal (`500ms`, `10s`, `1h30m`), converted to seconds."""

    positive: bool = True

    def describe(self) -> str:
        return "duration"


@dataclass(frozen=True, slots=True)
class SizeType:
    """A byte size (`512Mi`, `2Gi`, `1GB`); a plain integer counts bytes."""

    def describe(self) -> str:
        return "size"


@dataclass(frozen=True, slots=True)
class EnumType:
    """One of a fixed set of words, written bare (`latest`) or quoted (`"latest"`)."""

    choices: tuple[str, ...]

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True, slots=True)
class ListType:
    """A list; with `allow_single`, one item may be written without brackets."""

    item: ValueType
    allow_single: bool = False
    min_items: int = 0

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True, slots=True)
class MapType:
    """A map literal `{ KEY = value, ... }` with values of one type."""

    value: ValueType

    def describe(self) -> str:
        return f"map of {self.value.describe()}"


@dataclass(frozen=True, slots=True)
class RefType:
    """A reference to a declared block, such as `topic.orders`."""

    kind: str

    def describe(self) -> str:
        return f"{self.kind} reference ({self.kind}.NAME)"


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A nested structure, written as a block (`retry { ... }`) or a map (`retry = { ... }`)."""

    schema: BlockSchema

    def describe(self) -> str:
        return f"{self.schema.type} block"


@dataclass(frozen=True, slots=True)
class ScheduleType:
    """`cron("expr")` (5 or 6 fields, or an `@alias`; optional `timezone = "Zone"`) or
    `every(10m)`."""

    def describe(self) -> str:
        return "cron(...) or every(...)"


@dataclass(frozen=True, slots=True)
class BackoffType:
    """`fixed(10s)` or `exponential(10s, 5m)` (initial delay, cap; optional `factor = 2`)."""

    def describe(self) -> str:
        return "fixed(...) or exponential(...)"


@dataclass(frozen=True, slots=True)
class CallableType:
    """A Python callable as `"package.module:function"`."""

    def describe(self) -> str:
        return 'callable ("package.module:function")'


@dataclass(frozen=True, slots=True)
class LiteralType:
    """Any literal value (string, number, boolean, duration, size, list or map of those)."""

    def describe(self) -> str:
        return "literal value"


ValueType: TypeAlias = (
    StringType
    | IntType
    | NumberType
    | BoolType
    | DurationType
    | SizeType
    | EnumType
    | ListType
    | MapType
    | RefType
    | ObjectType
    | ScheduleType
    | BackoffType
    | CallableType
    | LiteralType
)


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute of a block, or one option of a backend."""

    name: str
    type: ValueType
    doc: str
    required: bool = False
    default: Any = None  # the value after conversion (seconds for durations)
    example: str | None = None  # as it would be written in a .flow file


@dataclass(frozen=True, slots=True)
class BlockSchema:
    """The attributes a block (or nested block) accepts.

    `backend_kind` names the catalog ("broker", "scaler", "notifier") whose backend,
    chosen by the `backend_field` attribute, contributes further options.
    """

    type: str
    doc: str
    fields: tuple[Field, ...]
    label: bool = True  # top-level blocks carry a name: `job "extract" { ... }`
    backend_kind: str | None = None
    backend_field: str | None = None

    @property
    def by_name(self) -> Mapping[str, Field]:
        return {f.name: f for f in self.fields}


# --- the catalog of backends ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What the compiler needs to know of one backend: its name and its options."""

    name: str
    options: tuple[Field, ...]
    doc: str = ""
    partitioned: bool = False  # brokers: instances beyond the partition count idle
    subject_routed: bool = False  # brokers: topics' `subjects` decide where a message goes
    remote: bool = False  # executors: attempts run off the orchestrator's machine
    resource_options: tuple[str, ...] = ()  # executors: extra `resources` entries it takes
    # executors: the most one attempt can get, by resource, as the block's options say
    capacity: Callable[[Mapping[str, Any]], Mapping[str, float] | None] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass(frozen=True)
class Catalog:
    """Backends the compiler may name, by kind ("broker", "scaler", "notifier").

    The plugin manager (`tideflow.plugins.manager`) builds the real catalog from
    the installed plugins; the compiler only reads it.
    """

    backends: Mapping[str, Mapping[str, BackendSpec]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> BackendSpec | None:
        return self.backends.get(kind, {}).get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.backends.get(kind, {}))
