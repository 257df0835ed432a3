"""docs/language.md keeps up with the language.

Fails when a block, nested block or attribute of `compiler/schema.py`, an option
of a built-in backend, a function or a diagnostic code has no entry in the
reference; when the reference documents something that no longer exists or a
default that changed; when an in-page link is broken; and when a diagnostic's
example no longer triggers its code or no longer prints what the page shows.

The printed outputs are snapshots: after a deliberate change to a message, run
`TIDEFLOW_UPDATE_DOCS=1 .venv/bin/pytest tests/test_docs.py` to rewrite them
in the page, then read the diff.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler import schema
from tideflow.dsl.diagnostics import CODES
from tideflow.dsl.parser import parse
from tideflow.plugins import api
from tideflow.plugins.manager import DISABLE_AUTOLOAD_ENV, load_plugins

DOC = Path(__file__).resolve().parents[1] / "docs" / "language.md"
UPDATE = os.environ.get("TIDEFLOW_UPDATE_DOCS") == "1"


# --- reading the page -------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    info: str  # the words after the opening ```
    text: str
    start: int  # line index of the opening ```, in the whole page
    end: int  # line index of the closing ```


@dataclass(frozen=True)
class Section:
    level: int
    title: str
    lines: tuple[str, ...]  # from the heading (excluded) to the next heading of any level
    fences: tuple[Fence, ...]

    def table_rows(self) -> dict[str, list[str]]:
        """Rows of the section's tables keyed by their first cell's `name` (which may be
        followed by "(default)"), cells stripped."""
        rows: dict[str, list[str]] = {}
        for line in self.lines:
            if not line.startswith("|") or re.fullmatch(r"[|\-: ]+", line.strip()):
                continue
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            name = re.fullmatch(r"`([A-Za-z_]\w*)`(?: \(default\))?", cells[0]) if cells else None
            if name:
                rows[name.group(1)] = cells
        return rows


def read_sections(text: str) -> list[Section]:
    lines = text.splitlines()
    headings: list[tuple[int, int, str]] = []  # line index, level, title
    fences: list[Fence] = []
    opened: tuple[int, str] | None = None
    for index, line in enumerate(lines):
        if line.startswith("```"):
            if opened is None:
                opened = (index, line[3:].strip())
            else:
                start, info = opened
                fences.append(Fence(info, "\n".join(lines[start + 1 : index]) + "\n", start, index))
                opened = None
        elif opened is None and (match := re.match(r"(#{1,6}) (.+)", line)):
            headings.append((index, len(match.group(1)), match.group(2).strip()))
    assert opened is None, (
        f"docs/language.md: the fence opened at line {opened[0] + 1} is not closed"
    )
    sections = []
    bounds = [h[0] for h in headings] + [len(lines)]
    for (index, level, title), end in zip(headings, bounds[1:], strict=True):
        inside = tuple(f for f in fences if index < f.start < end)
        sections.append(Section(level, title, tuple(lines[index + 1 : end]), inside))
    return sections


SECTIONS = read_sections(DOC.read_text(encoding="utf-8"))


def section(title: str) -> Section:
    for found in SECTIONS:
        if found.title == title:
            return found
    pytest.fail(f"docs/language.md has no section titled {title!r}")


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to `-`."""
    text = unicodedata.normalize("NFKC", title).lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


# --- what the language has --------------------------------------------------------------


def nested_schemas() -> list[api.BlockSchema]:
    """Schemas reached through `ObjectType` fields of the top-level blocks, recursively."""
    found: dict[str, api.BlockSchema] = {}
    pending = list(schema.BLOCKS.values())
    while pending:
        block = pending.pop()
        for field in block.fields:
            value_type: Any = field.type
            while isinstance(value_type, api.ListType | api.MapType):
                value_type = (
                    value_type.item if isinstance(value_type, api.ListType) else value_type.value
                )
            if isinstance(value_type, api.ObjectType) and value_type.schema.type not in found:
                found[value_type.schema.type] = value_type.schema
                pending.append(value_type.schema)
    return sorted(found.values(), key=lambda s: s.type)


def backends() -> list[tuple[str, api.BackendSpec]]:
    catalog = load_plugins(environ={DISABLE_AUTOLOAD_ENV: "1"}).catalog  # the built-ins
    return [
        (kind, spec)
        for kind in ("broker", "scaler", "notifier")
        for name in catalog.names(kind)
        if (spec := catalog.get(kind, name)) is not None
    ]


def flow_literal(value_type: api.ValueType, value: Any) -> str:
    """A default value as a .flow file writes it, as the tables show it."""
    if isinstance(value_type, api.DurationType):
        seconds = float(value)
        for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            if seconds >= size and seconds % size == 0:
                return f"{int(seconds // size)}{unit}"
        return "0s" if seconds == 0 else f"{round(seconds * 1000)}ms"
    if isinstance(value_type, api.BoolType):
        return "true" if value else "false"
    if isinstance(value_type, api.ListType):
        return "[" + ", ".join(flow_literal(value_type.item, v) for v in value) + "]"
    if isinstance(value_type, api.StringType):
        return f'"{value}"'
    return str(value)


def expected_type_cell(value_type: api.ValueType) -> str:
    """How the tables write a value type."""
    match value_type:
        case api.StringType(secretable=True):
            return "string, `env()` or `secret()`"
        case api.StringType():
            return "string"
        case api.IntType(minimum=None):
            return "integer"
        case api.IntType(minimum=minimum):
            return f"integer ≥ {minimum}"
        case api.NumberType(positive=True):
            return "number > 0"
        case api.NumberType():
            return "number"
        case api.BoolType():
            return "boolean"
        case api.DurationType(positive=True):
            return "duration > 0"
        case api.DurationType():
            return "duration"
        case api.SizeType():
            return "size"
        case api.EnumType(choices=choices):
            return " \\| ".join(f"`{c}`" for c in choices)
        case api.ListType(item=item, allow_single=True):
            return f"{expected_type_cell(item)}, or a list of them"
        case api.ListType(item=item):
            return f"list of {expected_type_cell(item)}"
        case api.MapType(value=item):
            return f"map of {expected_type_cell(item)}"
        case api.RefType(kind=kind):
            return f"`{kind}.NAME`"
        case api.ObjectType(schema=nested):
            return f"[`{nested.type}`](#{nested.type}-nested-block) block or map"
        case api.ScheduleType():
            return "`cron(...)` or `every(...)`"
        case api.BackoffType():
            return "`fixed(...)` or `exponential(...)`"
        case api.CallableType():
            return '`"module:function"`'
        case api.LiteralType():
            return "any literal"
    raise AssertionError(f"no table wording for {value_type!r}: add one here")


def expected_default_cell(field: api.Field) -> str:
    if field.required:
        return "**required**"
    if field.default is None:
        return "optional"
    return f"`{flow_literal(field.type, field.default)}`"


def check_table(title: str, fields: tuple[api.Field, ...]) -> list[str]:
    """Problems with the attribute table under the heading `title`, as sentences."""
    rows = section(title).table_rows()
    names = [f.name for f in fields]
    problems = []
    missing = [n for n in names if n not in rows]
    if missing:
        problems.append(f"no row for: {', '.join(missing)}")
    stale = sorted(set(rows) - set(names))
    if stale:
        problems.append(f"rows for attributes that do not exist: {', '.join(stale)}")
    for field in fields:
        cells = rows.get(field.name)
        if cells is None:
            continue
        if len(cells) != 5:
            problems.append(f"`{field.name}`: {len(cells)} cells, expected 5")
            continue
        kind = expected_type_cell(field.type)
        if cells[1] != kind:
            problems.append(f"`{field.name}`: type cell is {cells[1]!r}, expected {kind!r}")
        expected = expected_default_cell(field)
        if cells[2] != expected:
            problems.append(f"`{field.name}`: default cell is {cells[2]!r}, expected {expected!r}")
        # the meaning is the schema's own text (what `tideflow lsp` shows on hover),
        # with the page's links around some of its words
        meaning = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", cells[3]).replace("\\|", "|")
        if not cells[3]:
            problems.append(f"`{field.name}`: no meaning")
        elif meaning != field.doc:
            problems.append(f"`{field.name}`: meaning cell is {cells[3]!r}, expected {field.doc!r}")
        if field.example and cells[4] != f"`{field.name} = {field.example}`":
            problems.append(
                f"`{field.name}`: example cell is {cells[4]!r}, "
                f"expected '`{field.name} = {field.example}`'"
            )
    return problems


# --- reference sections -----------------------------------------------------------------


@pytest.mark.parametrize("block", list(schema.BLOCKS.values()), ids=lambda b: b.type)
def test_block_is_documented_with_every_attribute(block: api.BlockSchema) -> None:
    title = f"`{block.type}` block"
    problems = check_table(title, block.fields)
    assert not problems, f"docs/language.md, section {title!r}: " + "; ".join(problems)


@pytest.mark.parametrize("nested", nested_schemas(), ids=lambda b: b.type)
def test_nested_block_is_documented_with_every_attribute(nested: api.BlockSchema) -> None:
    title = f"`{nested.type}` nested block"
    problems = check_table(title, nested.fields)
    assert not problems, f"docs/language.md, section {title!r}: " + "; ".join(problems)


@pytest.mark.parametrize(
    ("kind", "backend"), backends(), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_builtin_backend_is_documented_with_every_option(
    kind: str, backend: api.BackendSpec
) -> None:
    title = f"`{backend.name}` {kind}"
    problems = check_table(title, backend.options)
    assert not problems, f"docs/language.md, section {title!r}: " + "; ".join(problems)


def test_the_reference_covers_the_nested_blocks_the_brief_names() -> None:
    # guards the collection above: if it found nothing, the parametrized test would pass empty
    assert {s.type for s in nested_schemas()} >= {"retry", "resources", "scale"}
    assert {spec.name for _, spec in backends()} >= {"embedded", "kafka", "nats", "local"}


def test_every_function_is_documented() -> None:
    rows = [line for line in section("Functions").lines if line.startswith("| `")]
    documented = {m.group(1) for row in rows if (m := re.match(r"\| `(\w+)\(", row))}
    missing = sorted(set(schema.FUNCTIONS) - documented)
    stale = sorted(documented - set(schema.FUNCTIONS))
    assert not missing, f"docs/language.md, section 'Functions': no row for {', '.join(missing)}"
    assert not stale, f"docs/language.md, section 'Functions': unknown functions {stale}"


@pytest.mark.parametrize("rule", schema.TRIGGER_RULES)
def test_every_trigger_rule_is_defined(rule: str) -> None:
    rows = section("Trigger rules").table_rows()
    assert rule in rows, f"docs/language.md, section 'Trigger rules': no row for `{rule}`"


@pytest.mark.parametrize(
    ("title", "words"),
    [("Catch-up and overlap", schema.CATCH_UP_POLICIES + schema.OVERLAP_POLICIES)],
)
def test_every_policy_is_defined(title: str, words: tuple[str, ...]) -> None:
    rows = section(title).table_rows()
    missing = [w for w in words if w not in rows]
    assert not missing, f"docs/language.md, section {title!r}: no row for {missing}"


# --- diagnostics ------------------------------------------------------------------------


def code_sections() -> dict[str, Section]:
    return code_sections_of(SECTIONS)


def code_sections_of(sections: list[Section]) -> dict[str, Section]:
    """Sections whose heading starts with a diagnostic code, by code."""
    return {m.group(1): s for s in sections if (m := re.match(r"([EW]\d{3}) ", s.title))}


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_diagnostic_code_has_a_section(code: str) -> None:
    expected = f"{code} {CODES[code]}"
    sections = code_sections()
    assert code in sections, f"docs/language.md has no section for {code} (a heading {expected!r})"
    assert sections[code].title == expected, (
        f"docs/language.md: the heading of {code} is {sections[code].title!r}, "
        f"but CODES says {expected!r}"
    )


def test_no_section_documents_an_unknown_code() -> None:
    stale = sorted(set(code_sections()) - set(CODES))
    assert not stale, f"docs/language.md documents codes that CODES does not have: {stale}"


# --- links and examples -----------------------------------------------------------------


def test_in_page_links_lead_to_headings() -> None:
    anchors = {slug(s.title) for s in SECTIONS}
    text = DOC.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    broken = sorted(links - anchors)
    assert links, "no in-page links found: the pattern no longer matches the page"
    assert not broken, f"docs/language.md links to headings that do not exist: {broken}"


def flow_fences() -> Iterator[tuple[Section, Fence]]:
    for found in SECTIONS:
        for fence in found.fences:
            if fence.info.split()[:1] == ["flow"]:
                yield found, fence


def test_flow_examples_parse() -> None:
    """Every ```flow block parses, except the syntax errors that E1xx sections show."""
    checked = 0
    for found, fence in flow_fences():
        if re.match(r"E1\d\d ", found.title):
            continue
        result = parse(fence.text, f"docs/language.md:{fence.start + 2}")
        problems = [f"{d.code} {d.message}" for d in result.diagnostics]
        assert result.ok, (
            f"docs/language.md: the flow example at line {fence.start + 2} "
            f"(section {found.title!r}) does not parse: {problems}"
        )
        checked += 1
    assert checked > 20, f"only {checked} flow examples found: the fences are no longer read"


# --- the diagnostics' examples, run ----------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A diagnostic section's example: the files it writes and the command it runs."""

    code: str
    files: dict[str, bytes]
    root: str  # the file `tideflow lint` is given
    printed: str  # what the page says it prints
    plugin: str | None  # Python source of lint rules, for the codes only a plugin triggers
    check_imports: bool = False  # `tideflow lint --check-imports FILE` (E5xx)

    def rules(self) -> list[Any]:
        """An instance of each lint rule class the example's plugin source defines."""
        if self.plugin is None:
            return []
        namespace: dict[str, Any] = {"__name__": "acme_rules"}
        exec(compile(self.plugin, f"docs/language.md ({self.code})", "exec"), namespace)
        return [
            value()
            for value in namespace.values()
            if isinstance(value, type) and hasattr(value, "check") and hasattr(value, "code")
        ]


def read_example(code: str, found: Section) -> Example:
    files: dict[str, bytes] = {}
    for fence in found.fences:
        if fence.info != "flow":
            continue
        header = re.match(r"# ([\w./-]+\.flow)(, saved as Latin-1)?\n", fence.text)
        name = header.group(1) if header else "example.flow"
        encoding = "latin-1" if header and header.group(2) else "utf-8"
        files[name] = fence.text.encode(encoding)
    consoles = [f for f in found.fences if f.info == "console"]
    assert len(consoles) == 1, f"docs/language.md, {code}: expected one ```console block"
    command, _, printed = consoles[0].text.partition("\n")
    match = re.fullmatch(r"\$ tideflow lint (--check-imports )?(\S+)", command)
    assert match, f"docs/language.md, {code}: the console block must start `$ tideflow lint FILE`"
    plugins: list[str] = []
    for fence in found.fences:
        if fence.info != "python":
            continue
        # `# etl/tasks.py` alone on the first line: a module of the flow's, written beside it
        module = re.match(r"# ([\w./-]+\.py)\n", fence.text)
        if module:
            files[module.group(1)] = fence.text.encode("utf-8")
        else:
            plugins.append(fence.text)
    plugin = plugins[0] if plugins else None
    return Example(code, files, match.group(2), printed, plugin, bool(match.group(1)))


def lint_output(example: Example, where: Path) -> tuple[list[str], str]:
    """The codes the compiler finds in the example, and what `tideflow lint` prints.

    The text comes from the real command line (run in-process), except for an
    example that needs a plugin's lint rules, which the command line finds only
    among installed plugins: that one is rendered as the command line renders.
    """
    from click.testing import CliRunner
    from tideflow.compiler import compile_loaded
    from tideflow.compiler.report import render_text
    from tideflow.dsl.loader import load_flow

    from tideflow.cli import main

    for name, data in example.files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes(data)
    result = compile_loaded(load_flow(example.root), rules=example.rules())
    codes = [d.code for d in result.diagnostics]
    if example.plugin is not None:
        return codes, render_text(result.diagnostics, result.sources, paths=[example.root])
    if not example.check_imports:
        run = CliRunner().invoke(main, ["lint", example.root], env={"NO_COLOR": "1"})
        assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
        return codes, run.output
    with _imports_forgotten(where):
        run = CliRunner().invoke(
            main, ["lint", "--check-imports", example.root], env={"NO_COLOR": "1"}
        )
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    return codes + re.findall(r"^error\[(E5\d\d)\]", run.output, re.MULTILINE), run.output


@contextlib.contextmanager
def _imports_forgotten(folder: Path) -> Iterator[None]:
    """The examples' modules (`etl.tasks`, ...) are imported from `folder`: forget them
    after, so that the next example's module of the same name is imported afresh."""
    saved_path = list(sys.path)
    before = set(sys.modules)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            del sys.modules[name]


def same_output(shown: str, printed: str) -> bool:
    """Equal but for dates: the daylight-saving warnings name the next clock change."""
    date_pattern = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
    return date_pattern.sub("YYYY-MM-DD", shown) == date_pattern.sub("YYYY-MM-DD", printed)


def rewrite_console(code: str, printed: str) -> None:
    """Put `printed` under the `$ tideflow lint` line of `code`'s example, in the page."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    found = code_sections_of(read_sections("\n".join(lines)))[code]
    fence = next(f for f in found.fences if f.info == "console")
    command = lines[fence.start + 1]
    body = printed.rstrip("\n").splitlines()
    lines[fence.start + 1 : fence.end] = [command, *body]
    DOC.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("code", sorted(CODES))
def test_diagnostic_example_triggers_its_code_and_prints_what_the_page_shows(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = code_sections().get(code)
    assert found is not None, f"docs/language.md has no section for {code}"
    example = read_example(code, found)
    monkeypatch.chdir(tmp_path)
    codes, printed = lint_output(example, tmp_path)
    assert code in codes, (
        f"docs/language.md: the example of {code} does not trigger it; tideflow lint prints:\n"
        f"{printed}"
    )
    others = sorted(set(codes) - {code})
    assert not others, (
        f"docs/language.md: the example of {code} also triggers {others}; keep it minimal:\n"
        f"{printed}"
    )
    if not same_output(example.printed, printed):
        if UPDATE:
            rewrite_console(code, printed)
            return
        pytest.fail(
            f"docs/language.md: the output shown for {code} is not what tideflow lint prints "
            "(TIDEFLOW_UPDATE_DOCS=1 rewrites it).\n"
            f"--- the page shows:\n{example.printed}--- tideflow lint prints:\n{printed}"
        )


def test_the_tour_lints_clean_and_prints_what_the_page_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from tideflow.cli import main

    tour = section("A short tour")
    flows = [f for f in tour.fences if f.info == "flow"]
    consoles = [f for f in tour.fences if f.info == "console"]
    assert flows and consoles, "docs/language.md: the tour needs a ```flow and a ```console block"
    command, _, shown = consoles[0].text.partition("\n")
    assert command == "$ tideflow lint orders.flow"
    (tmp_path / "orders.flow").write_text(flows[0].text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(main, ["lint", "orders.flow"], env={"NO_COLOR": "1"})
    assert run.exit_code == 0 and run.output == shown, (
        "docs/language.md: the tour's flow does not lint as the page shows; tideflow lint "
        f"exits {run.exit_code} and prints:\n{run.output}"
    )
