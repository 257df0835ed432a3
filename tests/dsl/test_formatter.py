"""`tideflow fmt`: the layout rules, comment placement, and the `FormatResult` API."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from tideflow.dsl.formatter import LINE_WIDTH, FormatResult, format_file, format_source
from tideflow.dsl.parser import parse

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*.flow"))


def fmt(text: str) -> str:
    result = format_source(text, "t.flow")
    assert result.text is not None, result.diagnostics
    assert format_source(result.text).text == result.text, "not idempotent"
    return result.text


def comment_texts(text: str) -> list[str]:
    result = parse(text, "t.flow")
    assert result.file is not None
    return [
        c.text.replace("\r\n", "\n") if c.text.startswith("/*") else c.text.rstrip()
        for c in result.file.comments
    ]


# --- the API ---------------------------------------------------------------------------


def test_result_for_a_file_that_parses() -> None:
    source = 'pool "p" { slots = 4 }'
    result = format_source(source, "p.flow")
    assert result == FormatResult('pool "p" {\n  slots = 4\n}\n', (), source)
    assert result.changed
    again = format_source(result.text or "", "p.flow")
    assert not again.changed
    assert again.text == result.text


def test_result_for_a_syntax_error() -> None:
    result = format_source('job "a" {\n  x = \n', "broken.flow")
    assert result.text is None
    assert not result.changed
    assert [d.code for d in result.diagnostics] == ["E104"]
    assert result.diagnostics[0].span is not None
    assert result.diagnostics[0].span.path == "broken.flow"


def test_invalid_escape_is_reported_and_kept_as_written() -> None:
    result = format_source('job "a" { x = "a\\qb" }')
    assert [d.code for d in result.diagnostics] == ["E106"]
    assert result.text == 'job "a" {\n  x = "a\\qb"\n}\n'


def test_format_file_matches_format_source() -> None:
    for sample in SAMPLE_FILES:
        text = sample.read_text("utf-8")
        parsed = parse(text, sample.name)
        assert parsed.file is not None
        assert format_file(parsed.file) == format_source(text, sample.name).text


# --- layout ----------------------------------------------------------------------------


def test_one_item_per_line_with_two_space_indentation() -> None:
    source = 'job "a" { retry { attempts = 3  backoff = fixed(10s) }  run = "m:f" }'
    assert fmt(source) == (
        'job "a" {\n  retry {\n    attempts = 3\n    backoff  = fixed(10s)\n  }\n  run = "m:f"\n}\n'
    )


def test_equals_aligned_within_runs_of_single_line_attributes() -> None:
    source = (
        'job "a" {\n'
        "a = 1\n"
        "bbb = 2\n"
        "\n"
        "cc = 3\n"
        "# a comment line does not end the run\n"
        "dddd = 4\n"
        "e = 5\n"
        "retry { attempts = 3 }\n"
        "ffffff = 6\n"
        "g = [\n1, # multi-line: not in any run\n]\n"
        "hh = 7\n"
        "}"
    )
    assert fmt(source) == (
        'job "a" {\n'
        "  a   = 1\n"
        "  bbb = 2\n"
        "\n"
        "  cc   = 3\n"
        "  # a comment line does not end the run\n"
        "  dddd = 4\n"
        "  e    = 5\n"
        "  retry {\n"
        "    attempts = 3\n"
        "  }\n"
        "  ffffff = 6\n"
        "  g = [\n"
        "    1, # multi-line: not in any run\n"
        "  ]\n"
        "  hh = 7\n"
        "}\n"
    )


def test_trailing_comments_of_consecutive_lines_share_a_column() -> None:
    source = (
        'consumer "c" {\n'
        '  group = "workers" # one\n'
        "  batch_size = 500 /* two */ # and more\n"
        '  run = "m:f"\n'
        "  max_failures = 3 # three\n"
        "  # own line\n"
        "  dead_letter = topic.dead # four\n"
        "  params = { a = 1 } # five\n"
        "}"
    )
    assert fmt(source) == (
        'consumer "c" {\n'
        '  group        = "workers" # one\n'
        "  batch_size   = 500       /* two */ # and more\n"
        '  run          = "m:f"\n'
        "  max_failures = 3 # three\n"
        "  # own line\n"
        "  dead_letter  = topic.dead # four\n"
        "  params       = { a = 1 }  # five\n"
        "}\n"
    )


def test_blank_lines() -> None:
    source = (
        '\n\n\njob "a" {\n\n\n  x = 1\n\n\n\n  y = 2\n\n\n}\njob "b" {}\n\n\n\njob "c" {}\n\n\n'
    )
    assert fmt(source) == 'job "a" {\n  x = 1\n\n  y = 2\n}\n\njob "b" {}\n\njob "c" {}\n'


def test_includes_first_in_written_order_with_their_comments() -> None:
    source = (
        "// header: stays on top\n"
        "\n"
        "# about a\n"
        'job "a" {}\n'
        'include "x.flow" # x\n'
        'job "b" {}\n'
        "# about y\n"
        'include "y.flow"\n'
    )
    assert fmt(source) == (
        "// header: stays on top\n"
        "\n"
        'include "x.flow" # x\n'
        "# about y\n"
        'include "y.flow"\n'
        "\n"
        "# about a\n"
        'job "a" {}\n'
        "\n"
        'job "b" {}\n'
    )


def test_lists_maps_and_calls_stay_on_one_line_when_they_fit() -> None:
    source = (
        'job "a" {\n'
        '  command = [ "python" ,"-m",\n  "x" , ]\n'
        "  env = {A=1 B=2,}\n"
        "  empty = [ ]\n"
        "  none = { }\n"
        '  schedule = cron( "0 2 * * *" , timezone="UTC" )\n'
        "}"
    )
    assert fmt(source) == (
        'job "a" {\n'
        '  command  = ["python", "-m", "x"]\n'
        "  env      = { A = 1, B = 2 }\n"
        "  empty    = []\n"
        "  none     = {}\n"
        '  schedule = cron("0 2 * * *", timezone = "UTC")\n'
        "}\n"
    )


@pytest.mark.parametrize("width", [LINE_WIDTH, LINE_WIDTH + 1])
def test_a_list_breaks_past_the_line_width(width: int) -> None:
    # `  x = ["…"]` puts 10 characters around the string
    text = "a" * (width - 10)
    output = fmt(f'job "j" {{ x = ["{text}"] }}')
    lines = output.splitlines()
    if width <= LINE_WIDTH:
        assert lines[1] == f'  x = ["{text}"]'
        assert len(lines[1]) == width
    else:
        assert lines[1:4] == ["  x = [", f'    "{text}",', "  ]"]
    assert all(len(line) <= LINE_WIDTH for line in lines)


def test_alignment_padding_counts_towards_the_width() -> None:
    long_map = "{ " + ", ".join(f"k{i} = {i}" for i in range(11)) + " }"
    source = f'job "j" {{\n  longer_name = 1\n  m = {long_map}\n}}'
    assert len(f"  m = {long_map}") <= LINE_WIDTH < len(f"  longer_name = {long_map}")
    output = fmt(source)
    assert all(len(line) <= LINE_WIDTH for line in output.splitlines())
    assert "  m = {\n    k0  = 0,\n" in output
    assert "  longer_name = 1\n" in output


def test_broken_maps_align_and_end_items_with_commas() -> None:
    source = 'job "a" { env = {\n  A = "1" # first\n  LONGER = "2"\n  "quoted key" = 3 } }'
    assert fmt(source) == (
        'job "a" {\n'
        "  env = {\n"
        '    A            = "1", # first\n'
        '    LONGER       = "2",\n'
        '    "quoted key" = 3,\n'
        "  }\n"
        "}\n"
    )


def test_long_call_breaks_one_argument_per_line() -> None:
    url = "x" * 90
    output = fmt(f'broker "b" {{ url = env("BROKER_URL", "{url}", optional = true) }}')
    assert output == (
        'broker "b" {\n'
        "  url = env(\n"
        '    "BROKER_URL",\n'
        f'    "{url}",\n'
        "    optional = true,\n"
        "  )\n"
        "}\n"
    )


def test_nested_lists_break_from_the_outside_in() -> None:
    inner = ", ".join(f'"item-{i:02}"' for i in range(8))
    source = f'job "a" {{ matrix = [[{inner}], [{inner}], [1]] }}'
    output = fmt(source)
    assert output == (
        f'job "a" {{\n  matrix = [\n    [{inner}],\n    [{inner}],\n    [1],\n  ]\n}}\n'
    )


def test_literals_are_written_as_the_user_wrote_them() -> None:
    values = [
        '"caf\\u00e9 \\u{1F600} \\t \\"q\\" \\\\"',
        "1_000",
        "-3",
        "2.5e3",
        "1E-2",
        "0.50",
        "1h30m",
        "90s",
        "1.5s",
        "512Mi",
        "2GB",
        "true",
        "all_success",
        "topic.orders-eu",
    ]
    keys = [f"v{i}" for i in range(len(values))]
    body = "".join(f"  {key.ljust(3)} = {value}\n" for key, value in zip(keys, values, strict=True))
    canonical = f'job "l\\u00e9" {{\n{body}  m   = {{ "k\\n" = 1 }}\n}}\n'
    glued = " ".join(f"{key}={value}" for key, value in zip(keys, values, strict=True))
    assert fmt(f'job "l\\u00e9"{{{glued} m={{"k\\n"=1}}}}') == canonical
    assert fmt(canonical) == canonical


def test_crlf_and_trailing_whitespace() -> None:
    source = 'job "a" {\r\n  x = 1   # note   \r\n  /* a\r\n  b */\r\n}\r\n'
    assert fmt(source) == 'job "a" {\n  x = 1 # note\n  /* a\n  b */\n}\n'


def test_file_ends_with_exactly_one_newline() -> None:
    assert fmt('job "a" {}') == 'job "a" {}\n'
    assert fmt('job "a" {}\n\n\n\n') == 'job "a" {}\n'
    assert fmt("") == ""
    assert fmt("\n\n  \n") == ""
    assert (
        fmt("  # just a comment\n\n\n// and another   ") == "# just a comment\n\n// and another\n"
    )


# --- comments --------------------------------------------------------------------------


def test_comments_everywhere_stay_with_their_code() -> None:
    source = (SAMPLES / "comments.flow").read_text("utf-8")
    assert fmt(source) == (
        'include "late.flow" # trailing include\n'
        "\n"
        "// every place a comment can hide\n"
        "/* type */\n"
        "/* label */\n"
        'job "a" { # after the brace\n'
        "  /* name */\n"
        "  /* value */\n"
        "  x = 1 # trailing x\n"
        "\n"
        "  # before y\n"
        "\n"
        "  y = [ # after bracket\n"
        "    1, # one\n"
        "    /* before two */\n"
        "    2,\n"
        "    3,\n"
        "    /* before closer */\n"
        "  ]\n"
        "  z = {\n"
        "    a = 1,\n"
        "    /* b */\n"
        "    b = 2,\n"
        "  }\n"
        "  /* fn */\n"
        "  w = f(\n"
        "    1,\n"
        "    /* kw */\n"
        "    k = 2, # end\n"
        "  )\n"
        "  retry {\n"
        "    /* inline */\n"
        "  }\n"
        "  /* dangling\n"
        "     multi-line */\n"
        "} # after job\n"
        "/* end of file */\n"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # a comment between items goes with the item that follows
        ('job "a" { x = [1, /* c */ 2] }', "  x = [\n    1,\n    /* c */\n    2,\n  ]\n"),
        # one that ends the line trails the item before it
        ('job "a" { x = [1, # c\n 2] }', "  x = [\n    1, # c\n    2,\n  ]\n"),
        ('job "a" { x = [1 # c\n , 2] }', "  x = [\n    1, # c\n    2,\n  ]\n"),
        # after the opener
        ('job "a" { x = [ /* c */\n 1] }', "  x = [ /* c */\n    1,\n  ]\n"),
        ('job "a" { x = [ # c\n] }', "  x = [ # c\n  ]\n"),
        # before the closer
        ('job "a" { x = [1 /* c */] }', "  x = [\n    1,\n    /* c */\n  ]\n"),
        ('job "a" { x = { /* c */ } }', "  x = {\n    /* c */\n  }\n"),
        # inside an item, where no line can break: before the item
        ('job "a" { x = /* c */ 1 }', "  /* c */\n  x = 1\n"),
        ('job "a" { x # c\n = 1 }', "  # c\n  x = 1\n"),
        ('job "a" { x = f /* c */ (1) }', "  /* c */\n  x = f(1)\n"),
        ('job "a" { x = { k /* c */ = 1 } }', "  x = {\n    /* c */\n    k = 1,\n  }\n"),
        ('job "a" { x = f(k /* c */ = 1) }', "  x = f(\n    /* c */\n    k = 1,\n  )\n"),
        ('job "a" { r /* c */ { } }', "  /* c */\n  r {}\n"),
        # several on one line
        ('job "a" { x = 1 /* a */ /* b */ # c\n}', "  x = 1 /* a */ /* b */ # c\n"),
        # a trailing block comment followed by code on the same line leads that code
        ('job "a" { x = 1 /* a */ y = 2 }', "  x = 1\n  /* a */\n  y = 2\n"),
    ],
)
def test_comment_placement(source: str, expected: str) -> None:
    output = fmt(source)
    assert output == 'job "a" {\n' + expected + "}\n"
    assert comment_texts(output) == comment_texts(source)


def test_header_comments_and_block_headers() -> None:
    source = '/* a */ job /* b */ "x" /* c */ { # d\n} # e\n// f'
    assert fmt(source) == '/* a */\n/* b */\n/* c */\njob "x" { # d\n} # e\n// f\n'


def test_file_without_final_newline_keeps_the_trailing_comment() -> None:
    assert fmt('job "a" {} # end') == 'job "a" {} # end\n'


def test_executor_blocks_and_where_jobs_run_are_kept() -> None:
    source = (
        'flow "f" { executor = executor.cluster }\n'
        'executor "cluster" { kind = "dask"\n'
        'scheduler = env("DASK_SCHEDULER", "tcp://127.0.0.1:8786")  # the cluster\n'
        "worker_resources = { GPU = 1, MEMORY = 32Gi } }\n"
        'job "train" { run = "ml.jobs:train"  executor = executor.cluster\n'
        "  resources { cpu = 4  memory = 16Gi  gpu = 1  GPU = 1 } }\n"
    )
    assert fmt(source) == (
        'flow "f" {\n'
        "  executor = executor.cluster\n"
        "}\n"
        "\n"
        'executor "cluster" {\n'
        '  kind             = "dask"\n'
        '  scheduler        = env("DASK_SCHEDULER", "tcp://127.0.0.1:8786") # the cluster\n'
        "  worker_resources = { GPU = 1, MEMORY = 32Gi }\n"
        "}\n"
        "\n"
        'job "train" {\n'
        '  run      = "ml.jobs:train"\n'
        "  executor = executor.cluster\n"
        "  resources {\n"
        "    cpu    = 4\n"
        "    memory = 16Gi\n"
        "    gpu    = 1\n"
        "    GPU    = 1\n"
        "  }\n"
        "}\n"
    )


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.name)
def test_samples_keep_every_comment_in_order(sample: Path) -> None:
    source = sample.read_text("utf-8")
    output = fmt(source)
    before, after = comment_texts(source), comment_texts(output)
    assert Counter(after) == Counter(before)
    if "late.flow" not in source:  # no include moves, so the order is the same
        assert after == before


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.name)
def test_samples_are_formatted_like_their_golden_copies(sample: Path) -> None:
    golden = SAMPLES / "formatted" / sample.name
    assert format_source(sample.read_text("utf-8"), sample.name).text == golden.read_text("utf-8")
    # a formatted file is its own canonical form
    assert not format_source(golden.read_text("utf-8")).changed
