"""Diagnostics: what the parser and the compiler tell a user about a `.flow` file.

Every stage *collects* diagnostics instead of raising on the first problem.
Codes: E1xx syntax and files, E2xx names and types, E3xx the graph and where jobs run,
W4xx warnings, E5xx the flow's Python code (found only by the import check).
Each code is listed in `CODES` with a one-line title; `docs/language.md` explains
each with an example, and a test fails when a code lacks a test or a docs entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .ast import Span


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Related:
    """A secondary location, such as where a duplicate name was first defined."""

    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None
    label: str | None = None  # written under the carets
    help: str | None = None  # only when there is a real suggestion
    notes: tuple[str, ...] = ()
    related: tuple[Related, ...] = field(default=())
    # tideflow's own codes say their severity (W… is a warning); a plugin's lint
    # rule, whose codes are its own, says it here
    level: Severity | None = None

    @property
    def severity(self) -> Severity:
        if self.level is not None:
            return self.level
        return Severity.WARNING if self.code.startswith("W") else Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple[str, int, int, str]:
        if self.span is None:
            return ("", 0, 0, self.code)
        return (self.span.path, self.span.line, self.span.column, self.code)


CODES: dict[str, str] = {
    # files and syntax
    "E100": "file cannot be read",
    "E101": "file is not valid UTF-8",
    "E102": "unexpected character",
    "E103": "unexpected token",
    "E104": "unexpected end of file",
    "E105": "unterminated string",
    "E106": "invalid escape sequence in a string",
    "E107": "invalid number, duration or size",
    "E108": "nesting too deep",
    "E110": "included file not found",
    "E111": "include cycle",
    "E112": "included file is outside the include root",
    # names and types
    "E201": "unknown block type",
    "E202": "unknown attribute",
    "E203": "wrong value type",
    "E204": "missing required attribute",
    "E205": "duplicate name",
    "E206": "duplicate attribute",
    "E207": "undefined reference",
    "E208": "invalid value",
    "E209": "invalid cron expression",
    "E210": "unknown time zone",
    "E211": "unknown backend",
    "E212": "job has no body",
    "E213": "minimum above maximum",
    "E214": "value must be positive",
    "E215": "invalid block label",
    "E216": "unknown function or wrong arguments",
    "E217": "conflicting attributes",
    # graph
    "E301": "dependency cycle",
    # where jobs run
    "E302": "remote job publishes to an embedded topic",
    "E303": "resource demand above the executor's capacity",
    # the flow's Python code (`lint --check-imports`, `run`)
    "E501": "function's module cannot be imported",
    "E502": "function not found",
    "E503": "function cannot be called as the runtime calls it",
    # warnings
    "W401": "schedule fires in a daylight-saving gap",
    "W402": "schedule fires in a daylight-saving overlap",
    "W403": "scale maximum above the topic's partitions",
    "W404": "topic nobody publishes to",
    "W405": "topic nobody consumes",
    "W406": "poll interval longer than cooldown",
    "W407": "literal credential",
    "W408": "unused declaration",
    "W409": "lint rule failed",
    "W410": "cron runs on days matching either day field",
    "W411": "published topic needs a subject per message",
}
