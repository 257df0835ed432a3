"""Completion: the cursor's context from the lexer's tokens (a half-typed file is the
normal case), then end to end through the real server over stdio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lsprotocol import types as lsp
from tideflow.plugins.manager import DISABLE_AUTOLOAD_ENV

from tideflow.lsp.context import Position, cursor_context

from .conftest import Editor

JOBS = """\
job "extract" {
  description = "pull the orders"
  run = "shop.jobs:extract"
}

job "load" {
  run = "shop.jobs:load"
}
"""

# --- the cursor's context, without a server ----------------------------------------------


@pytest.mark.parametrize(
    ("before", "position", "blocks", "attribute", "qualifier", "prefix"),
    [
        ("jo", Position.TOP, [], None, (), "jo"),
        ('job "a" {\n  ret', Position.BODY, ["job"], None, (), "ret"),
        ('job "a" {\n  trigger = ', Position.VALUE, ["job"], "trigger", (), ""),
        ('job "a" {\n  after = [job.ex', Position.VALUE, ["job"], "after", ("job",), "ex"),
        (
            'job "a" {\n  after = flow.billing.job.',
            Position.VALUE,
            ["job"],
            "after",
            ("flow", "billing", "job"),
            "",
        ),
        (
            'consumer "c" {\n  scale {\n    max = 3\n    ',
            Position.BODY,
            ["consumer", "scale"],
            None,
            (),
            "",
        ),
        ('consumer "c" {\n  scale = {\n    ', Position.BODY, ["consumer", "scale"], None, (), ""),
        ('broker "r" {\n  kind = "re', Position.STRING, ["broker"], "kind", (), "re"),
        ('job "a" {\n  # a comment ', Position.NONE, [], None, (), ""),
        ('job "a" {\n  retries = 3', Position.NONE, [], None, (), ""),
        ('job "a" { x = 1 }\n', Position.TOP, [], None, (), ""),
    ],
)
def test_the_context_comes_from_the_tokens_before_the_cursor(
    before: str,
    position: Position,
    blocks: list[str],
    attribute: str | None,
    qualifier: tuple[str, ...],
    prefix: str,
) -> None:
    # what follows the cursor does not close anything: the file does not parse
    ctx = cursor_context(before + "\n  shell = true\n", len(before))
    assert ctx.position is position
    if position is not Position.NONE:
        assert [b.type for b in ctx.blocks] == blocks
        assert (ctx.attribute, ctx.qualifier, ctx.prefix) == (attribute, qualifier, prefix)


def test_attributes_set_before_and_after_the_cursor_are_known() -> None:
    text = 'broker "r" {\n  kind = "redis"\n  \n  url = "redis://x"\n}\n'
    ctx = cursor_context(text, text.index("\n  \n") + 3)
    assert ctx.position is Position.BODY
    assert ctx.blocks[-1].attributes == {"kind": "redis", "url": "redis://x"}


def test_a_large_file_is_read_from_the_enclosing_blocks_header() -> None:
    # above 20,000 characters the tokens are read from the last top-level header
    jobs = "".join(
        f'job "j{i}" {{\n  run = "a.b:c"\n  retry {{ attempts = 3 }}\n}}\n' for i in range(800)
    )
    text = jobs + 'consumer "c" {\n  run = "a:b"\n  scale {\n    max = 2\n    '
    ctx = cursor_context(text, len(text))
    assert ctx.position is Position.BODY
    assert [(b.type, b.label) for b in ctx.blocks] == [("consumer", "c"), ("scale", None)]
    assert ctx.blocks[0].attributes == {"run": "a:b", "scale": None}
    assert cursor_context(text, len(jobs)).position is Position.TOP


# --- end to end ----------------------------------------------------------------------------

e2e = pytest.mark.asyncio(loop_scope="module")  # the module's one server (conftest)


@pytest.fixture(scope="module", autouse=True)
def installed_plugins_load() -> Iterator[None]:
    """The module's server (started after this autouse fixture) loads the installed
    plugins, among them tideflow-redis, the example plugin the test environment has."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
        yield


async def complete_at_end(editor: Editor, name: str, text: str) -> list[lsp.CompletionItem]:
    """Open `text` as `name` and complete at its end (where the user is typing)."""
    uri = editor.open(name, text)
    lines = text.split("\n")
    result = await editor.client.text_document_completion_async(
        lsp.CompletionParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            position=lsp.Position(line=len(lines) - 1, character=len(lines[-1])),
        )
    )
    assert isinstance(result, lsp.CompletionList), result
    return result.items


@e2e
async def test_attributes_of_a_scale_block_leave_out_those_set(editor: Editor) -> None:
    text = JOBS + 'consumer "workers" {\n  scale {\n    max = 4\n    '
    items = await complete_at_end(editor, "scale.flow", text)
    labels = {item.label for item in items}
    assert {"min", "lag_per_instance", "cooldown", "backend"} <= labels
    assert "max" not in labels  # already set
    assert "python" in labels  # the default `local` scaler's options
    lag = next(item for item in items if item.label == "lag_per_instance")
    assert lag.text_edit is not None and lag.text_edit.new_text == "lag_per_instance = $0"
    assert lag.insert_text_format == lsp.InsertTextFormat.Snippet


@e2e
async def test_a_plugin_backends_options_once_its_kind_is_known(editor: Editor) -> None:
    # tideflow-redis, the example plugin installed in the test environment
    text = 'broker "cache" {\n  kind = "redis"\n  '
    items = await complete_at_end(editor, "redis.flow", text)
    labels = {item.label for item in items}
    assert {"url", "key_prefix", "visibility_timeout"} <= labels
    assert "kind" not in labels
    assert "bootstrap" not in labels  # kafka's, not this broker's
    url = next(item for item in items if item.label == "url")
    assert url.detail is not None and "redis broker" in url.detail
    kinds = await complete_at_end(editor, "kinds.flow", 'broker "cache" {\n  kind = "')
    assert {"redis", "embedded", "kafka"} <= {item.label for item in kinds}


@e2e
async def test_enum_values_after_the_equal_sign(editor: Editor) -> None:
    triggers = await complete_at_end(editor, "enum.flow", JOBS + 'job "z" {\n  trigger = ')
    assert [item.label for item in triggers] == [
        "all_success",
        "all_done",
        "one_failed",
        "one_success",
        "none_failed",
        "always",
    ]
    policies = await complete_at_end(editor, "enum2.flow", JOBS + 'job "z" {\n  catch_up = l')
    assert [item.label for item in policies] == ["skip", "latest", "all"]


@e2e
async def test_declared_names_after_job_dot(editor: Editor) -> None:
    text = JOBS + 'job "report" {\n  after = [job.'
    items = await complete_at_end(editor, "refs.flow", text)
    assert [item.label for item in items] == ["extract", "load"]
    extract = items[0]
    assert extract.documentation is not None
    assert isinstance(extract.documentation, lsp.MarkupContent)
    assert extract.documentation.value == "pull the orders"
    # the edit replaces only the name being typed, after the dot
    assert extract.text_edit is not None and isinstance(extract.text_edit, lsp.TextEdit)
    start = extract.text_edit.range.start
    assert start.character == len("  after = [job.")


@e2e
async def test_executors_their_names_and_gpu_in_resources(editor: Editor) -> None:
    declared = 'executor "gpus" {\n  description = "the GPU farm"\n  kind = "local"\n}\n'
    text = declared + 'job "train" {\n  run = "a.b:c"\n  executor = executor.'
    items = await complete_at_end(editor, "executors.flow", text)
    assert [item.label for item in items] == ["gpus"]
    text = declared + 'job "train" {\n  run = "a.b:c"\n  resources {\n    '
    items = await complete_at_end(editor, "gpu.flow", text)
    assert {"cpu", "memory", "gpu"} <= {item.label for item in items}
    blocks = await complete_at_end(editor, "top.flow", "exec")
    assert "executor" in {item.label for item in blocks}


@e2e
async def test_names_declared_in_an_included_file(editor: Editor) -> None:
    editor.write("common.flow", 'topic "orders" {\n  description = "new orders"\n}\n')
    text = 'include "common.flow"\n\njob "export" {\n  run = "a.b:c"\n  publishes = topic.'
    items = await complete_at_end(editor, "main.flow", text)
    assert [(item.label, item.detail) for item in items] == [("orders", "topic · common.flow")]


@e2e
async def test_functions_with_their_argument_shape(editor: Editor) -> None:
    items = await complete_at_end(editor, "fn.flow", 'job "z" {\n  schedule = ')
    by_label = {item.label: item for item in items}
    assert set(by_label) == {"cron", "every"}
    cron = by_label["cron"]
    assert cron.detail == 'cron("MIN HOUR DOM MON DOW", timezone = "Zone")'
    assert (
        cron.text_edit is not None
        and cron.text_edit.new_text == 'cron("${1:MIN HOUR DOM MON DOW}")'
    )
