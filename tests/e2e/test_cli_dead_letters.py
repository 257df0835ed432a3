"""Dead letters and consumer logs in the CLI: `status`, `explain`, `logs --consumer`,
and `tideflow dlq list|replay` on the embedded broker, through click's runner."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from tideflow.compiler import compile_flow
from tideflow.plugins.api import OutgoingMessage
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.consumer.dead_letter import dead_letter_group
from tideflow.runtime.model import ConsumerLogLine, DeadLetterRow
from tideflow.runtime.store import Store

from tideflow.cli import main

FLOW = """
flow "shop" {}
broker "b" { kind = "embedded"  path = "broker.db" }
topic "orders" { partitions = 2 }
topic "dead" {}
consumer "workers" {
  consumes     = topic.orders
  run          = "handlers:handle"
  dead_letter  = topic.dead
  max_failures = 2
  scale { max = 2  lag_per_instance = 10 }
}
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    flow = tmp_path / "shop.flow"
    flow.write_text(FLOW)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    now = datetime.now(UTC)
    with Store.open(state) as store:
        store.record_dead_letters(
            [
                DeadLetterRow("shop", "workers", "w-1", now, "orders", 1, str(n), 2, "dead", "E: x")
                for n in range(3)
            ]
        )
        store.record_consumer_logs(
            "shop",
            "workers",
            "w-1",
            [
                ConsumerLogLine("w-1", now, "INFO", "handling order [/tmp/x] 7"),
                ConsumerLogLine("w-1", now, "WARNING", "consumer workers dead-lettered a message"),
            ],
        )
    return flow, state


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_status_counts_dead_letters_per_consumer(project: tuple[Path, str]) -> None:
    flow, state = project
    code, output = invoke("status", str(flow), "--state", state)
    assert code == 0, output
    (line,) = [line.split() for line in output.splitlines() if line.split()[:1] == ["workers"]]
    assert line[:3] == ["workers", "0", "3"] and line[-2:] == ["3", "dead"]
    code, output = invoke("status", str(flow), "--state", state, "--format", "json")
    (consumer,) = json.loads(output)["flows"][0]["consumers"]
    assert consumer["dead_lettered"] == consumer["dead_lettered_total"] == 3
    assert consumer["dead_letter"] == "dead"


def test_explain_says_how_many_left_the_backlog_dead_lettered(project: tuple[Path, str]) -> None:
    flow, state = project
    code, output = invoke("explain", str(flow), "workers", "--state", state)
    assert code == 0, output
    assert "3 message(s) dead-lettered so far" in output
    code, output = invoke("explain", str(flow), "workers", "--state", state, "--format", "json")
    assert json.loads(output)["dead_lettered"] == 3


def test_logs_of_a_consumer_show_its_instances_lines_as_written(
    project: tuple[Path, str],
) -> None:
    _, state = project
    code, output = invoke("logs", "--consumer", "workers", "--state", state)
    assert code == 0, output
    assert "INFO    [w-1] handling order [/tmp/x] 7" in output
    assert "WARNING [w-1] consumer workers dead-lettered a message" in output
    code, output = invoke("logs", "--consumer", "nobody", "--state", state)
    assert code == 0 and 'consumer "nobody" has logged nothing yet' in output
    code, output = invoke("logs", "--consumer", "workers", "7", "--state", state)
    assert code == 2 and "give a RUN or --consumer, not both" in output
    code, output = invoke("logs", "--state", state)
    assert code == 2 and "--consumer NAME" in output


def test_dlq_list_then_replay_by_ref(project: tuple[Path, str]) -> None:
    flow_path, _ = project
    result = compile_flow(flow_path)
    assert result.ir is not None
    flow = result.ir
    consumer = flow.consumers["workers"]

    async def dead_letter() -> None:
        async with open_topic_broker(flow, "orders") as broker:
            await broker.ensure_topic("orders", [consumer.group])
        async with open_topic_broker(flow, "dead") as broker:
            await broker.ensure_topic("dead", [dead_letter_group(consumer)])
            headers = {
                "tideflow-consumer": "workers",
                "tideflow-error-type": "ValueError",
                "tideflow-error-message": "bad [bold]order[/bold]",
                "tideflow-failures": "2",
                "tideflow-original-topic": "orders",
                "tideflow-original-partition": "1",
                "tideflow-original-id": "41",
            }
            await broker.publish("dead", [OutgoingMessage(b'{"id": 41}', b"k", headers)])

    asyncio.run(dead_letter())
    code, output = invoke("dlq", "list", str(flow_path), "workers")
    assert code == 0, output
    assert "1 dead letter(s)" in output
    assert "orders 1:41" in output and "ValueError: bad [bold]order[/bold]" in output
    code, output = invoke("dlq", "list", str(flow_path), "workers", "--format", "json")
    (listed,) = json.loads(output)["messages"]
    assert (listed["value"], listed["failures"], listed["original_id"]) == ('{"id": 41}', 2, "41")

    code, output = invoke("dlq", "replay", str(flow_path), "workers", "--id", "0:99")
    assert code == 2 and "no dead letter `0:99`" in output
    code, output = invoke("dlq", "replay", str(flow_path), "workers")
    assert code == 2 and "--all" in output
    code, output = invoke("dlq", "replay", str(flow_path), "workers", "--id", listed["ref"])
    assert code == 0, output
    assert 'replayed 1 message of consumer "workers" to topic "orders"' in output
    code, output = invoke("dlq", "list", str(flow_path), "workers")
    assert code == 0 and "no dead letters" in output

    async def replayed() -> list[bytes]:
        async with open_topic_broker(flow, "orders") as broker:
            batch = await broker.consume("orders", consumer.group, wait=1.0)
            await broker.ack(batch)
            assert all("tideflow-consumer" not in m.headers for m in batch)
            return [m.value for m in batch]

    assert asyncio.run(replayed()) == [b'{"id": 41}']


def test_dlq_of_a_consumer_without_a_dead_letter_topic_or_unknown(tmp_path: Path) -> None:
    flow = tmp_path / "f.flow"
    flow.write_text(FLOW.replace("  dead_letter  = topic.dead\n", ""))
    code, output = invoke("dlq", "list", str(flow), "workers")
    assert code == 2 and "has no `dead_letter` topic" in output
    code, output = invoke("dlq", "list", str(flow), "worker")
    assert code == 2 and "did you mean `workers`?" in output


def test_dlq_with_a_broker_that_cannot_be_reached_says_so(tmp_path: Path) -> None:
    flow = tmp_path / "f.flow"
    flow.write_text(
        FLOW.replace(
            'broker "b" { kind = "embedded"  path = "broker.db" }',
            'broker "b" { kind = "nats"  servers = ["nats://127.0.0.1:1"]  timeout = 1s }',
        )
    )
    code, output = invoke("dlq", "list", str(flow), "workers")
    assert code == 1
    assert 'error: cannot read dead-letter topic "dead": BackendError: could not connect' in output
    assert "Traceback" not in output
    code, output = invoke("dlq", "replay", str(flow), "workers", "--all", "--timeout", "2x")
    assert code == 2 and "Invalid value for '--timeout'" in output
