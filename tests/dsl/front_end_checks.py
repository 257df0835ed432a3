"""What the front end promises for any text, as checks shared by the property tests, the
fuzzer (bench/fuzz/fuzz_flow.py) and the regression tests of what it found."""

from __future__ import annotations

import dataclasses
from collections import Counter

from tideflow.compiler import compile_source
from tideflow.compiler.report import render_json, render_text
from tideflow.dsl import ast
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.formatter import format_source
from tideflow.dsl.parser import parse


def shape(node: object) -> object:
    """A node without its positions or source text, for comparing trees."""
    if isinstance(node, tuple):
        return tuple(shape(item) for item in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        kept = [
            shape(getattr(node, f.name))
            for f in dataclasses.fields(node)
            if not f.name.endswith("span") and f.name not in {"source", "comments", "path"}
        ]
        return (type(node).__name__, *kept)
    return node


def file_shape(file: ast.FlowFile) -> object:
    # the formatter moves includes to the top, so compare includes and blocks apart
    return (shape(file.includes), shape(file.blocks))


def normalized_comments(file: ast.FlowFile) -> list[str]:
    return [
        c.text.replace("\r\n", "\n") if c.text.startswith("/*") else c.text.rstrip()
        for c in file.comments
    ]


def check_formatting(text: str) -> str:
    """Format a parseable text and check everything `fmt` promises; return the output."""
    before = parse(text, "gen.flow")
    assert before.file is not None
    result = format_source(text, "gen.flow")
    assert result.text is not None
    assert result.diagnostics == before.diagnostics
    after = parse(result.text, "gen.flow")
    assert after.file is not None, after.diagnostics
    assert after.diagnostics == () or after.diagnostics[0].code == "E106"
    assert file_shape(after.file) == file_shape(before.file)
    comments_before = normalized_comments(before.file)
    comments_after = normalized_comments(after.file)
    assert Counter(comments_after) == Counter(comments_before)
    includes_first = not any(
        isinstance(item, ast.Include)
        and any(isinstance(i, ast.Block) for i in before.file.items[:n])
        for n, item in enumerate(before.file.items)
    )
    if includes_first:
        assert comments_after == comments_before
    again = format_source(result.text, "gen.flow")
    assert again.text == result.text, "formatting is not idempotent"
    assert not again.changed
    assert result.text == "" or (result.text.endswith("\n") and not result.text.endswith("\n\n"))
    for line in result.text.split("\n"):
        assert line == line.rstrip() or "/*" in result.text  # only inside block comments
    return result.text


def check_front_end(text: str, path: str) -> None:
    """Everything a user can do with `text` works without an exception escaping:
    compile it, report its diagnostics (whose spans lie inside their files) as text and
    JSON, and format it (keeping its AST and comments, idempotently) when it parses.
    Includes resolve from `path`'s folder, which should hold nothing else."""
    result = compile_source(text, path)
    sources = dict(result.sources)
    check_spans(result.diagnostics, sources)
    render_text(result.diagnostics, sources, paths=[path])
    render_json(result.diagnostics, sources)
    if parse(text, path).file is not None:
        check_formatting(text)
    else:
        assert format_source(text, path).text is None


def check_spans(diagnostics: tuple[Diagnostic, ...], sources: dict[str, str]) -> None:
    """Each span of each diagnostic lies in a file that was read, and its offsets, lines
    and columns describe the same place."""
    for diagnostic in diagnostics:
        for span in [diagnostic.span, *(r.span for r in diagnostic.related)]:
            if span is None:
                continue
            text = sources.get(span.path)
            assert text is not None, (diagnostic, "span in a file that was not read")
            assert 0 <= span.start <= span.end <= len(text), (diagnostic, len(text))
            lines = text.split("\n")
            assert 1 <= span.line <= span.end_line <= len(lines), (diagnostic, len(lines))
            line_start = sum(len(line) + 1 for line in lines[: span.line - 1])
            assert span.start == line_start + span.column - 1, (diagnostic, line_start)
