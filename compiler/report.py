"""Rendering diagnostics for people (rustc-style text) and for tools (JSON, SARIF 2.1.0).

Renderers take the diagnostics and the source texts they point into (`path -> text`,
as `CompileResult.sources` holds them) and never read files. Positions follow
`Span`: 1-based lines and columns counted in characters, exclusive ends.

Text is plain unless `color=True`; the caller decides (a terminal, `NO_COLOR`, a flag).
JSON mirrors `terraform validate -json`; SARIF is what GitHub code scanning accepts.
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, Final
from urllib.parse import quote

from rich.console import Console
from rich.text import Text
from tideflow.dsl.ast import Span
from tideflow.dsl.diagnostics import CODES, Diagnostic, Severity

__all__ = [
    "JSON_FORMAT_VERSION",
    "SARIF_SCHEMA_URI",
    "render_diagnostic",
    "render_json",
    "render_sarif",
    "render_text",
    "summary",
]

JSON_FORMAT_VERSION: Final = "1.0"
SARIF_SCHEMA_URI: Final = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION: Final = "2.1.0"
TAB_WIDTH: Final = 4  # a tab is shown as this many spaces, in the line and under it

# rustc's palette: the severity in red or yellow, the gutter and secondary marks in blue
_SEVERITY_STYLE: Final = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow"}
_GUTTER_STYLE: Final = "bold blue"
_MESSAGE_STYLE: Final = "bold"


# --- text ----------------------------------------------------------------------------


def render_text(
    diagnostics: Iterable[Diagnostic],
    sources: Mapping[str, str],
    *,
    paths: Sequence[str] = (),
    color: bool = False,
) -> str:
    """Every diagnostic, a blank line after each, then a summary line when `paths` are given.

    `paths` are the files that were checked; the summary names the file, or counts them.
    """
    diagnostics = tuple(diagnostics)
    out = Text()
    for diagnostic in diagnostics:
        out.append_text(render_diagnostic(diagnostic, sources))
        out.append("\n")
    if paths:
        line = summary(diagnostics, paths)
        if line is not None:
            out.append_text(line)
            out.append("\n")
    return _to_str(out, color)


def summary(diagnostics: Sequence[Diagnostic], paths: Sequence[str]) -> Text | None:
    """`error: 2 errors and 1 warning in orders.flow`; None when there is nothing to say."""
    if not diagnostics:
        return None
    errors = sum(1 for d in diagnostics if d.is_error)
    warnings = len(diagnostics) - errors
    counts = []
    if errors:
        counts.append(_plural(errors, "error"))
    if warnings:
        counts.append(_plural(warnings, "warning"))
    where = paths[0] if len(paths) == 1 else _plural(len(paths), "file")
    severity = Severity.ERROR if errors else Severity.WARNING
    line = Text()
    line.append(str(severity), _SEVERITY_STYLE[severity])
    line.append(f": {' and '.join(counts)} in {where}", _MESSAGE_STYLE)
    return line


def render_diagnostic(diagnostic: Diagnostic, sources: Mapping[str, str]) -> Text:
    """One diagnostic as rustc prints one: header, location, snippets, help and notes."""
    severity = diagnostic.severity
    mark_style = _SEVERITY_STYLE[severity]
    out = Text()
    out.append(f"{severity}[{diagnostic.code}]", mark_style)
    out.append(f": {diagnostic.message}", _MESSAGE_STYLE)
    out.append("\n")

    marks = [_Mark(diagnostic.span, diagnostic.label, primary=True)] if diagnostic.span else []
    marks += [_Mark(r.span, r.message, primary=False) for r in diagnostic.related]
    shown = [m for m in marks if _source_line(sources, m.span) is not None]
    numbers = [m.span.line for m in shown] or [1]
    width = len(str(max(numbers)))
    pad = " " * width

    by_path: dict[str, list[_Mark]] = {}
    for mark in marks:
        by_path.setdefault(mark.span.path, []).append(mark)
    for index, (path, group) in enumerate(by_path.items()):
        first = group[0].span
        arrow = "-->" if index == 0 else ":::"
        if index > 0:
            _gutter(out, pad)
        out.append(f"{pad}{arrow} ", _GUTTER_STYLE)
        out.append(f"{path}:{first.line}:{first.column}\n")
        visible = [m for m in group if m in shown]
        if visible:
            _snippet(out, visible, sources, pad, mark_style)

    footer = [("help", diagnostic.help)] if diagnostic.help else []
    footer += [("note", note) for note in diagnostic.notes]
    if footer and marks:
        _gutter(out, pad)
    for word, text in footer:
        out.append(f"{pad} = ", _GUTTER_STYLE)
        out.append(f"{word}:", _MESSAGE_STYLE)
        indent = " " * (len(pad) + len(f" = {word}: "))
        out.append(" " + text.replace("\n", "\n" + indent) + "\n")
    return out


@dataclass(frozen=True, slots=True)
class _Mark:
    """A span to underline: `^` for the diagnostic's own, `-` for a related one."""

    span: Span
    label: str | None
    primary: bool


def _gutter(out: Text, pad: str, code: str | None = None, number: str | None = None) -> None:
    out.append(f"{number or pad} |", _GUTTER_STYLE)
    if code:
        out.append(f" {code}")
    out.append("\n")


def _snippet(
    out: Text, marks: list[_Mark], sources: Mapping[str, str], pad: str, primary_style: str
) -> None:
    _gutter(out, pad)
    lines = sorted({m.span.line for m in marks})
    previous: int | None = None
    for number in lines:
        if previous is not None and number - previous == 2:
            between = _line(sources, marks[0].span.path, previous + 1)
            _gutter(out, pad, _display(between or "").rstrip(), str(previous + 1).rjust(len(pad)))
        elif previous is not None and number - previous > 2:
            out.append("...", _GUTTER_STYLE)
            out.append("\n")
        text = _line(sources, marks[0].span.path, number) or ""
        _gutter(out, pad, _display(text).rstrip(), str(number).rjust(len(pad)))
        # the primary mark first, so the eye finds the diagnostic's own label first
        on_line = sorted((m for m in marks if m.span.line == number), key=lambda m: not m.primary)
        for mark in on_line:
            start, width = _underline(text, mark.span)
            style = primary_style if mark.primary else _GUTTER_STYLE
            out.append(f"{pad} | ", _GUTTER_STYLE)
            out.append(" " * start)
            out.append(("^" if mark.primary else "-") * width, style)
            if mark.label:
                out.append(f" {mark.label}", style)
            out.append("\n")
        previous = number


def _underline(line: str, span: Span) -> tuple[int, int]:
    """Display column and width of the marks under `span` in `line`, tabs and wide
    characters counted as they are shown. A span running past the line ends at its end."""
    begin = max(span.column - 1, 0)
    end = span.end_column - 1 if span.end_line == span.line else len(line)
    end = min(max(end, begin), len(line))
    start = _width(_display(line[:begin]))
    width = _width(_display(line[begin:end]))
    return start, max(width, 1)


def _display(text: str) -> str:
    """`text` as the snippet shows it: tabs expanded, other control characters replaced."""
    if text.isprintable():
        return text
    return "".join(
        " " * TAB_WIDTH if ch == "\t" else "\ufffd" if unicodedata.category(ch) == "Cc" else ch
        for ch in text
    )


def _width(text: str) -> int:
    """Terminal cells `text` takes: two for wide characters, none for combining marks."""
    if text.isascii():
        return len(text)
    total = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in {"Mn", "Me", "Cf"}:
            continue
        total += 2 if unicodedata.east_asian_width(ch) in {"W", "F"} else 1
    return total


def _line(sources: Mapping[str, str], path: str, number: int) -> str | None:
    lines = _lines_of(sources.get(path))
    if lines is None or not 1 <= number <= len(lines):
        return None
    return lines[number - 1]


def _source_line(sources: Mapping[str, str], span: Span) -> str | None:
    return _line(sources, span.path, span.line)


def _lines_of(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return _split_lines(text)


@lru_cache(maxsize=16)
def _split_lines(text: str) -> list[str]:
    # cached: a file with many diagnostics is split once, not once per diagnostic
    return [line.removesuffix("\r") for line in text.split("\n")]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _to_str(text: Text, color: bool) -> str:
    if not color:
        return text.plain
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=True,
        color_system="standard",
        no_color=False,  # the caller asked for colour: NO_COLOR was weighed already
        soft_wrap=True,
        width=10_000,
        markup=False,
        emoji=False,
        highlight=False,
        legacy_windows=False,
    )
    console.print(text, end="")
    return buffer.getvalue()


# --- JSON (terraform validate -json) ---------------------------------------------------


def render_json(diagnostics: Iterable[Diagnostic], sources: Mapping[str, str]) -> dict[str, Any]:
    """A document shaped like `terraform validate -json` (format_version 1.0).

    Lines and columns are 1-based, in characters; `byte` is the 0-based UTF-8 offset.
    Snippet highlight offsets count characters into `snippet.code`.
    """
    diagnostics = tuple(diagnostics)
    errors = sum(1 for d in diagnostics if d.is_error)
    indexes: dict[str, _SourceIndex] = {}
    entries = []
    for diagnostic in diagnostics:
        entry: dict[str, Any] = {
            "severity": str(diagnostic.severity),
            "code": diagnostic.code,
            "summary": diagnostic.message,
            "detail": "\n".join(_detail_lines(diagnostic)),
        }
        if diagnostic.span is not None:
            index = _index(indexes, sources, diagnostic.span.path)
            entry["range"] = _json_range(diagnostic.span, index)
            snippet = _json_snippet(diagnostic.span, index)
            if snippet is not None:
                entry["snippet"] = snippet
        if diagnostic.related:
            entry["related"] = [
                {
                    "message": related.message,
                    "range": _json_range(related.span, _index(indexes, sources, related.span.path)),
                }
                for related in diagnostic.related
            ]
        entries.append(entry)
    return {
        "format_version": JSON_FORMAT_VERSION,
        "valid": errors == 0,
        "error_count": errors,
        "warning_count": len(diagnostics) - errors,
        "diagnostics": entries,
    }


def _detail_lines(diagnostic: Diagnostic) -> list[str]:
    lines = [diagnostic.label] if diagnostic.label else []
    if diagnostic.help:
        lines.append(f"help: {diagnostic.help}")
    lines += [f"note: {note}" for note in diagnostic.notes]
    return lines


class _SourceIndex:
    """Line starts (in characters and UTF-8 bytes) and block contexts of one source text."""

    def __init__(self, text: str | None) -> None:
        self.text = text
        self.lines = _split_lines(text) if text is not None else None
        self._byte_starts: list[int] | None = None
        self._char_starts: list[int] | None = None
        self._contexts: tuple[list[int], list[str | None]] | None = None

    def byte(self, line: int, column: int, fallback: int) -> int:
        if self.text is None or self.lines is None or not 1 <= line <= len(self.lines):
            return fallback
        if self._byte_starts is None:
            starts, total = [], 0
            for raw in self.text.split("\n"):
                starts.append(total)
                total += len(raw.encode("utf-8")) + 1
            self._byte_starts = starts
        prefix = self.lines[line - 1][: max(column - 1, 0)]
        return self._byte_starts[line - 1] + len(prefix.encode("utf-8"))

    def context(self, line: int, column: int) -> str | None:
        """The block enclosing a position, such as `job "extract" > retry`."""
        if self.text is None or self.lines is None:
            return None
        if self._contexts is None:
            self._contexts = _block_contexts(self.text)
        if self._char_starts is None:
            starts, total = [], 0
            for text in self.text.split("\n"):
                starts.append(total)
                total += len(text) + 1
            self._char_starts = starts
        line = min(max(line, 1), len(self._char_starts))
        offsets, contexts = self._contexts
        return contexts[bisect_right(offsets, self._char_starts[line - 1] + column - 1) - 1]


def _index(indexes: dict[str, _SourceIndex], sources: Mapping[str, str], path: str) -> _SourceIndex:
    if path not in indexes:
        indexes[path] = _SourceIndex(sources.get(path))
    return indexes[path]


def _json_range(span: Span, index: _SourceIndex) -> dict[str, Any]:
    return {
        "filename": span.path,
        "start": {
            "line": span.line,
            "column": span.column,
            "byte": index.byte(span.line, span.column, span.start),
        },
        "end": {
            "line": span.end_line,
            "column": span.end_column,
            "byte": index.byte(span.end_line, span.end_column, span.end),
        },
    }


def _json_snippet(span: Span, index: _SourceIndex) -> dict[str, Any] | None:
    lines = index.lines
    if lines is None or not 1 <= span.line <= len(lines):
        return None
    last = min(max(span.end_line, span.line), len(lines))
    code_lines = lines[span.line - 1 : last]
    highlight_start = min(span.column - 1, len(code_lines[0]))
    before_last = sum(len(line) + 1 for line in code_lines[:-1])
    end_column = span.end_column if span.end_line <= len(lines) else len(code_lines[-1]) + 1
    highlight_end = before_last + min(end_column - 1, len(code_lines[-1]))
    return {
        "context": index.context(span.line, span.column),
        "code": "\n".join(code_lines),
        "start_line": span.line,
        "highlight_start_offset": highlight_start,
        "highlight_end_offset": max(highlight_end, highlight_start),
        "values": [],
    }


_BLOCK_HEADER = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)(\s+"(?:[^"\\\n]|\\.)*")?\s*$')


def _block_contexts(text: str) -> tuple[list[int], list[str | None]]:
    """Where the enclosing block changes, and what it is from there on.

    A light scan (strings and comments skipped, braces counted) rather than the parser,
    so that a file with a syntax error still gets a context. Nested blocks read
    `job "extract" > retry`; a map value's braces are not blocks.
    """
    offsets: list[int] = [0]
    contexts: list[str | None] = [None]
    stack: list[str | None] = []
    segment = 0  # where the text that may hold the next block header starts
    i, size = 0, len(text)
    while i < size:
        ch = text[i]
        if ch == '"':
            i += 1
            while i < size and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if ch == "#" or text.startswith("//", i):
            newline = text.find("\n", i)
            i = size if newline == -1 else newline
            continue
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = size if close == -1 else close + 2
            continue
        if ch == "\n":
            segment = i + 1
        elif ch in "{}":
            if ch == "{":
                header = text[segment:i].rstrip()
                match = _BLOCK_HEADER.search(header)
                is_map = not header or header[-1] in "=([,{"
                stack.append(None if is_map or match is None else match.group(0).strip())
            elif stack:
                stack.pop()
            chain = [h for h in stack if h is not None]
            offsets.append(i + 1)
            contexts.append(" > ".join(chain) if chain else None)
            segment = i + 1
        i += 1
    return offsets, contexts


# --- SARIF 2.1.0 -------------------------------------------------------------------------


def render_sarif(
    diagnostics: Iterable[Diagnostic],
    *,
    root: str | os.PathLike[str] | None = None,
    rule_titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run, as GitHub code scanning accepts it.

    File URIs are relative to `root` (default: the working directory) under the base id
    `%SRCROOT%`; a file outside `root` gets an absolute `file://` URI. Every tideflow code
    is listed as a rule, and so is every code in `rule_titles` (plugins' lint rules:
    code -> one-line summary) or among the diagnostics.
    """
    diagnostics = tuple(diagnostics)
    base = Path(root if root is not None else Path.cwd()).resolve()
    rules, rule_index = _sarif_rules(diagnostics, rule_titles or {})
    results = []
    for diagnostic in diagnostics:
        result: dict[str, Any] = {
            "ruleId": diagnostic.code,
            "ruleIndex": rule_index[diagnostic.code],
            "level": str(diagnostic.severity),
            "message": {"text": "\n".join([diagnostic.message, *_detail_lines(diagnostic)])},
        }
        if diagnostic.span is not None:
            result["locations"] = [_sarif_location(diagnostic.span, base)]
        if diagnostic.related:
            result["relatedLocations"] = [
                {
                    "id": number,
                    **_sarif_location(related.span, base),
                    "message": {"text": related.message},
                }
                for number, related in enumerate(diagnostic.related, start=1)
            ]
        results.append(result)

    driver: dict[str, Any] = {"name": "tideflow", "version": _version(), "rules": rules}
    homepage = _homepage()
    if homepage:
        driver["informationUri"] = homepage
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {"driver": driver},
                "originalUriBaseIds": {"%SRCROOT%": {"uri": base.as_uri() + "/"}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def _sarif_rules(
    diagnostics: Sequence[Diagnostic], rule_titles: Mapping[str, str]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    titles = {**rule_titles, **CODES}
    levels: dict[str, Severity | None] = {code: _code_severity(code) for code in CODES}
    for diagnostic in diagnostics:
        levels.setdefault(diagnostic.code, diagnostic.severity)
    for code in rule_titles:
        # a plugin rule says its severity per finding; until one is seen, call it a warning
        levels.setdefault(code, None)
    homepage = _homepage()
    rules = []
    for code in sorted(levels):
        rule: dict[str, Any] = {
            "id": code,
            "shortDescription": {"text": titles.get(code, code)},
            "defaultConfiguration": {"level": str(levels[code] or Severity.WARNING)},
        }
        if homepage and code in CODES:
            rule["helpUri"] = f"{homepage.rstrip('/')}/blob/main/docs/language.md#{code.lower()}"
        rules.append(rule)
    return rules, {rule["id"]: number for number, rule in enumerate(rules)}


def _code_severity(code: str) -> Severity:
    return Severity.WARNING if code.startswith("W") else Severity.ERROR


def _sarif_location(span: Span, base: Path) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": _artifact(span.path, base),
            "region": {
                "startLine": span.line,
                "startColumn": span.column,
                "endLine": span.end_line,
                "endColumn": span.end_column,
            },
        }
    }


def _artifact(path: str, base: Path) -> dict[str, str]:
    absolute = Path(path).resolve()
    try:
        relative = absolute.relative_to(base)
    except ValueError:
        return {"uri": absolute.as_uri()}
    return {"uri": quote(PurePath(relative).as_posix()), "uriBaseId": "%SRCROOT%"}


def _version() -> str:
    from tideflow import __version__

    return __version__


@cache
def _homepage() -> str | None:
    """The project's home page from the installed metadata, when it declares one."""
    try:
        meta = metadata.metadata("tideflow")
    except metadata.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or ():
        label, _, url = str(entry).partition(",")
        if label.strip().lower() in {"homepage", "home", "source", "repository"}:
            return url.strip()
    homes = meta.get_all("Home-page") or ()
    return next((str(home) for home in homes if home), None)
