"""What the checks hand to `compiler.build`: checked declarations and their sections."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from tideflow.dsl.ast import Attribute, Block, MapEntry, Span
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.plugins.api import options as o

__all__ = [
    "INVALID",
    "CheckedFlow",
    "Declaration",
    "Invalid",
    "Item",
    "OtherFlowsJob",
    "ScheduleSpec",
    "Section",
]

Item: TypeAlias = Attribute | Block | MapEntry


@dataclass(frozen=True, slots=True)
class OtherFlowsJob:
    """A job of another flow, named by `flow.FLOW.job.JOB` in `after`."""

    flow: str
    job: str


class Invalid:
    """The result of converting a value that had a problem (already reported)."""

    __slots__ = ()


INVALID: Final = Invalid()


@dataclass(slots=True)
class Section:
    """The converted values of one block body (or map literal), as written.

    `values` holds schema fields, `options` the options of the backend the
    block names (`backend`); `items` says where each name was written. Values
    that had a problem are left out. Defaults are not filled in here.

    `deferred` holds what a `resources` body writes beyond its schema, for a later
    pass that knows the job's executor (`placement`); it puts the entries that
    executor declares, converted, in `options`.
    """

    values: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    backend: o.BackendSpec | None = None
    deferred: dict[str, Item] = field(default_factory=dict)


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
