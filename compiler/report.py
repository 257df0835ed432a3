"""Rendering diagnostics for people (rustc-style text) and for tools (JSON, SARIF 2.1.0).

Renderers take the diagnostics and the source texts they point into (`path -> text`,
as `CompileResult.sources` holds them) and never read files. Positions follow
`Span`: 1-based lines and columns counted in characters, exclusive ends.

Text is plain unless `color=True`; the caller decides (a terminal, `NO_COLOR`, a flag).
JSON mirrors `terraform validate -json`; SARIF is what GitHub code scanning accepts.
"""

from __future__ import annotations

import io
import itertools
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
    "shown_per_file",
    "summary",
]

JSON_FORMAT_VERSION: Final = "1.0"
SARIF_SCHEMA_URI: Final = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_VERSION: Final = "2.1.0"
TAB_WIDTH: Final = 4  # a tab is shown as this many spaces, in the line and under it
# a long line is shown as a window around the marks, so that the output of many
# diagnostics on one generated line grows with their number, not number × line length
SNIPPET_WIDTH: Final = 120
SNIPPET_CONTEXT: Final = 40  # characters shown before the first mark
ELLIPSIS: Final = "…"
# like clang's -ferror-limit: past this many diagnostics in one file the rest are counted
MAX_PER_FILE: Final = 200
SNIPPET_LINES: Final = 20  # a JSON snippet of a span over more lines is cut there

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
    max_per_file: int | None = MAX_PER_FILE,
) -> str:
    """Every diagnostic, a blank line after each, then a summary line when `paths` are given.

    `paths` are the files that were checked; the summary names the file, or counts them.
    At most `max_per_file` diagnostics are shown per file (None or 0: all); the summary
    still counts every one, and a note says how many of each file were left out.
    """
    diagnostics = tuple(diagnostics)
    shown, omitted = shown_per_file(diagnostics, max_per_file)
    out = Text()
    for diagnostic in shown:
        out.append_text(render_diagnostic(diagnostic, sources))
        out.append("\n")
    for path, count in omitted.items():
        out.append("note", _MESSAGE_STYLE)
        out.append(
            f": {_plural(count, 'more diagnostic')} in {path or 'the flow'} not shown "
            f"(at most {max_per_file} per file; `--max-errors 0` shows all)\n"
        )
    if paths:
        line = summary(diagnostics, paths)
        if line is not None:
            out.append_text(line)
            out.append("\n")
    return _to_str(out, color)


def shown_per_file(
    diagnostics: Sequence[Diagnostic], max_per_file: int | None
) -> tuple[list[Diagnostic], dict[str, int]]:
    """The first `max_per_file` diagnostics of each file, in order, and how many of each
    file were left out (files without any left out are absent). None or 0: no limit."""
    if not max_per_file:
        return list(diagnostics), {}
    seen: dict[str, int] = {}
    shown: list[Diagnostic] = []
    for diagnostic in diagnostics:
        path = diagnostic.span.path if diagnostic.span is not None else ""
        seen[path] = seen.get(path, 0) + 1
        if seen[path] <= max_per_file:
            shown.append(diagnostic)
    return shown, {path: n - max_per_file for path, n in seen.items() if n > max_per_file}


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
            between = _line(sources, marks[0].span.path, previous + 1) or ""
            shown, _ = _windowed(between, 0, 0)
            _gutter(out, pad, _display(shown).rstrip(), str(previous + 1).rjust(len(pad)))
        elif previous is not None and number - previous > 2:
            out.append("...", _GUTTER_STYLE)
            out.append("\n")
        text = _line(sources, marks[0].span.path, number) or ""
        # the primary mark first, so the eye finds the diagnostic's own label first
        on_line = sorted((m for m in marks if m.span.line == number), key=lambda m: not m.primary)
        ranges = [_columns(text, m.span) for m in on_line]
        shown, shift = _windowed(text, min(b for b, _ in ranges), max(e for _, e in ranges))
        _gutter(out, pad, _display(shown).rstrip(), str(number).rjust(len(pad)))
        for mark, (begin, end) in zip(on_line, ranges, strict=True):
            begin, end = (min(max(i + shift, 0), len(shown)) for i in (begin, end))
            start, width = _width(_display(shown[:begin])), _width(_display(shown[begin:end]))
            style = primary_style if mark.primary else _GUTTER_STYLE
            out.append(f"{pad} | ", _GUTTER_STYLE)
            out.append(" " * start)
            out.append(("^" if mark.primary else "-") * max(width, 1), style)
            if mark.label:
                out.append(f" {mark.label}", style)
            out.append("\n")
        previous = number


def _columns(line: str, span: Span) -> tuple[int, int]:
    """The characters of `line` under `span`; a span running past the line ends at its end."""
    begin = min(max(span.column - 1, 0), len(line))
    end = span.end_column - 1 if span.end_line == span.line else len(line)
    return begin, min(max(end, begin), len(line))


def _windowed(line: str, begin: int, end: int) -> tuple[str, int]:
    """`line` cut to a window of at most SNIPPET_WIDTH characters that shows `begin:end`
    (its start when the marks are wider), with `…` where text was left out; and how far
    the window moved the line's characters. A snippet never copies a whole long line."""
    if len(line) <= SNIPPET_WIDTH:
        return line, 0
    start = max(0, min(begin - SNIPPET_CONTEXT, len(line) - SNIPPET_WIDTH))
    stop = min(len(line), start + SNIPPET_WIDTH)
    before = ELLIPSIS if start > 0 else ""
    after = ELLIPSIS if stop < len(line) else ""
    return before + line[start:stop] + after, len(before) - start


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


def render_json(
    diagnostics: Iterable[Diagnostic],
    sources: Mapping[str, str],
    *,
    max_per_file: int | None = None,
) -> dict[str, Any]:
    """A document shaped like `terraform validate -json` (format_version 1.0).

    Lines and columns are 1-based, in characters; `byte` is the 0-based UTF-8 offset.
    Snippet highlight offsets count characters into `snippet.code`; a long line's
    snippet is a window around the range, `…` marking what was left out.
    With `max_per_file`, `diagnostics` lists at most that many per file and
    `omitted_count` says how many were left out; the counts cover them all.
    """
    diagnostics = tuple(diagnostics)
    errors = sum(1 for d in diagnostics if d.is_error)
    indexes: dict[str, _SourceIndex] = {}
    entries = []
    shown, omitted = shown_per_file(diagnostics, max_per_file)
    for diagnostic in shown:
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
        **({"omitted_count": sum(omitted.values())} if omitted else {}),
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
        # line -> UTF-8 offset of each character (None: an ASCII line, where they are equal)
        self._line_bytes: dict[int, list[int] | None] = {}
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
        return self._byte_starts[line - 1] + self._bytes_before(line, max(column - 1, 0))

    def _bytes_before(self, line: int, characters: int) -> int:
        """UTF-8 bytes of the first `characters` of a line, without encoding the line
        again for each diagnostic on it (a long generated line may have thousands)."""
        assert self.lines is not None
        text = self.lines[line - 1]
        characters = min(characters, len(text))
        if line not in self._line_bytes:
            self._line_bytes[line] = (
                None
                if text.isascii()
                else [0, *itertools.accumulate(len(ch.encode("utf-8")) for ch in text)]
            )
        starts = self._line_bytes[line]
        return characters if starts is None else starts[characters]

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
    if last - span.line >= SNIPPET_LINES:
        last = span.line + SNIPPET_LINES - 1
    code_lines: list[str] = []
    highlight_start = highlight_end = 0
    for number in range(span.line, last + 1):
        line = lines[number - 1]
        begin = min(max(span.column - 1, 0), len(line)) if number == span.line else 0
        end = len(line)
        if number == span.end_line:
            end = min(max(span.end_column - 1, begin), len(line))
        shown, shift = _windowed(line, begin, end)
        before = sum(len(code) + 1 for code in code_lines)
        if number == span.line:
            highlight_start = before + begin + shift
        highlight_end = before + min(max(end + shift, 0), len(shown))
        code_lines.append(shown)
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
    return metadata.version("tideflow")


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
