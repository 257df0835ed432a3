"""The example flows compile without errors or warnings, and the quickstart's handlers work.

The handlers are run against a fake context that follows the contract written in
examples/quickstart/__init__.py, so a change to a handler or to a flow that
breaks the other fails here.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tideflow.dsl import ast
from tideflow.dsl.parser import parse

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FLOWS = sorted(EXAMPLES.glob("*.flow"))


def compile_example(path: Path) -> Any:
    from tideflow.compiler import compile_flow

    return compile_flow(path)


def describe(result: Any) -> str:
    """The diagnostics of a compile result as `tideflow lint` prints them."""
    from tideflow.compiler.report import render_text

    return render_text(result.diagnostics, result.sources)


def test_the_examples_are_all_there() -> None:
    names = {p.name for p in FLOWS}
    expected = {
        "quickstart.flow",
        "kafka-orders.flow",
        "nats-events.flow",
        "pipeline.flow",
        "executors.flow",
    }
    assert expected <= names, f"missing examples: {sorted(expected - names)}"


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_example_compiles_without_errors_or_warnings(path: Path) -> None:
    result = compile_example(path)
    assert result.ok, f"{path.name} does not compile:\n{describe(result)}"
    assert not result.warnings, f"{path.name} has warnings:\n{describe(result)}"


def test_pipeline_takes_its_notifiers_from_the_shared_file() -> None:
    result = compile_example(EXAMPLES / "pipeline.flow")
    assert result.ok, describe(result)
    shared = parse((EXAMPLES / "common" / "ops.flow").read_text("utf-8"), "ops.flow")
    assert shared.file is not None
    declared = {b.label.value for b in shared.file.blocks if b.type == "notify" and b.label}
    assert declared, "examples/common/ops.flow declares no notifier"
    assert set(result.ir.notifiers) == declared


def test_pipeline_uses_each_trigger_rule_the_brief_asks_for() -> None:
    result = compile_example(EXAMPLES / "pipeline.flow")
    assert result.ok, describe(result)
    rules = {job.trigger for job in result.ir.jobs.values()}
    assert {"all_done", "one_failed", "none_failed"} <= rules


def test_secret_values_do_not_reach_the_compiled_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cr3t-kafka-password-9f2c"
    monkeypatch.setenv("KAFKA_PASSWORD", password)
    result = compile_example(EXAMPLES / "kafka-orders.flow")
    assert result.ok, describe(result)
    broker = result.ir.brokers["orders_cluster"]
    assert password not in repr(broker.options)
    assert "KAFKA_PASSWORD" in repr(broker.options["sasl_password"])


# --- the quickstart's Python handlers -------------------------------------------------


@dataclass
class Published:
    topic: str
    value: Any
    key: str | None


@dataclass
class FakeContext:
    """The context contract of examples/quickstart/__init__.py, recording what is published."""

    params: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = "run-1"
    scheduled_at: datetime | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("quickstart.test"))
    published: list[Published] = field(default_factory=list)

    def publish(self, topic: str, value: Any, key: str | None = None) -> None:
        self.published.append(Published(topic, value, key))


@dataclass(frozen=True)
class FakeMessage:
    value: Any
    key: str | None = None


@pytest.fixture
def quickstart(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The quickstart package, imported as the runtime imports it: from the flow's folder."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    names = ("quickstart", "quickstart.jobs", "quickstart.workers")
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield {name: importlib.import_module(name) for name in names}
    for name in names:
        sys.modules.pop(name, None)


def quickstart_blocks() -> dict[tuple[str, str], ast.Block]:
    result = parse((EXAMPLES / "quickstart.flow").read_text("utf-8"), "quickstart.flow")
    assert result.file is not None, result.diagnostics
    return {(b.type, b.label.value): b for b in result.file.blocks if b.label}


def attribute(block: ast.Block, name: str) -> ast.Expr:
    for item in block.attributes:
        if item.name == name:
            return item.value
    pytest.fail(f"{block.describe()} in quickstart.flow has no `{name}`")


def literal(expr: ast.Expr) -> Any:
    """A literal of the flow as the runtime hands it to a handler (params)."""
    match expr:
        case ast.String() | ast.Number() | ast.Bool():
            return expr.value
        case ast.ListExpr():
            return [literal(item) for item in expr.items]
        case ast.MapExpr():
            return {entry.key: literal(entry.value) for entry in expr.entries}
    raise AssertionError(f"not a literal: {expr}")


def test_every_handler_the_quickstart_names_exists(quickstart: dict[str, ModuleType]) -> None:
    handlers = []
    for (kind, name), block in quickstart_blocks().items():
        if kind in {"job", "consumer"}:
            run = attribute(block, "run")
            assert isinstance(run, ast.String)
            handlers.append((f'{kind} "{name}"', run.value))
    assert len(handlers) >= 5
    for owner, target in handlers:
        module_name, _, function = target.partition(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, function, None)), f"{owner}: {target} is not callable"


def test_supply_publishes_its_batch_to_the_topic_the_flow_declares(
    quickstart: dict[str, ModuleType],
) -> None:
    block = quickstart_blocks()[("job", "supply")]
    params = literal(attribute(block, "params"))
    publishes = attribute(block, "publishes")
    assert isinstance(publishes, ast.Reference)
    ctx = FakeContext(params=params, scheduled_at=datetime(2025, 3, 1, 12, 0, 5, tzinfo=UTC))

    count = quickstart["quickstart.jobs"].supply(ctx)

    assert count == params["batch"] == len(ctx.published)
    assert {p.topic for p in ctx.published} == {publishes.target}
    assert {p.key for p in ctx.published} == set(params["sensors"])
    for message in ctx.published:
        assert message.value["sensor"] == message.key
        assert 0.0 <= message.value["value"] <= 100.0
        assert message.value["taken_at"] == "2025-03-01T12:00:05+00:00"


def test_a_retried_supply_publishes_the_same_values(quickstart: dict[str, ModuleType]) -> None:
    supply = quickstart["quickstart.jobs"].supply
    first, retried, other_run = (
        FakeContext(params={"batch": 5}, run_id=run) for run in ("run-7", "run-7", "run-8")
    )
    for ctx in (first, retried, other_run):
        supply(ctx)
    assert [p.value for p in first.published] == [p.value for p in retried.published]
    assert [p.value for p in first.published] != [p.value for p in other_run.published]


def test_the_dag_jobs_log_their_run(
    quickstart: dict[str, ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    jobs = quickstart["quickstart.jobs"]
    ctx = FakeContext(run_id="run-42")
    with caplog.at_level(logging.INFO, logger="quickstart.test"):
        for handler in (jobs.audit, jobs.report_failure, jobs.tidy):
            handler(ctx)
    assert len(caplog.records) == 3
    assert all("run-42" in record.getMessage() for record in caplog.records)
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.WARNING, logging.INFO]
    assert not ctx.published


@pytest.mark.parametrize(("value", "high"), [(80.5, True), (75.0, False), (3.0, False)])
def test_the_worker_flags_readings_above_the_threshold(
    quickstart: dict[str, ModuleType], value: float, high: bool
) -> None:
    block = quickstart_blocks()[("consumer", "workers")]
    ctx = FakeContext(params=literal(attribute(block, "params")))
    message = FakeMessage({"sensor": "north", "value": value, "taken_at": None}, key="north")
    assert quickstart["quickstart.workers"].handle(ctx, message) is high


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.flow")), ids=lambda p: p.name)
def test_examples_are_in_canonical_format(path: Path) -> None:
    from tideflow.dsl.formatter import format_source

    result = format_source(path.read_text("utf-8"), str(path))
    assert result.text is not None and not result.changed, f"run `tideflow fmt {path}`"
