"""IR JSON: a stable document that round-trips, with references instead of secret values."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler import compile_source
from tideflow.compiler.ir import FORMAT_VERSION, FlowIR
from tideflow.compiler.irjson import from_json, to_json

FLOW = textwrap.dedent(
    """
    flow "orders" {
      timezone = "Europe/Lisbon"
      retry { attempts = 2  backoff = exponential(1s, 1m) }
    }
    broker "main" {
      kind          = "kafka"
      bootstrap     = env("KAFKA_BOOTSTRAP", "localhost:9092")
      sasl_password = secret("KAFKA_PASSWORD")
      config        = { "linger.ms" = "5" }
    }
    topic "orders" { partitions = 3 }
    pool "db" { slots = 2 }
    job "extract" {
      schedule  = cron("0 3 * * *")
      run       = "shop.jobs:extract"
      publishes = topic.orders
      pool      = pool.db
      resources { memory = 1Gi }
      params    = { "$secret" = "not a secret", nested = { list = [1, "two", 3s] } }
      env       = { DB = secret("DB_URL"), MODE = env("MODE") }
    }
    job "shell" {
      command = "ls | wc -l"
      shell   = true
      after   = job.extract
    }
    consumer "w" {
      consumes = topic.orders
      run      = "shop.workers:handle"
      scale { max = 3  poll = 1s }
    }
    notify "ops" {
      kind    = "command"
      command = ["notify", secret("OPS")]
      on      = failure
    }
    """
)


@pytest.fixture(scope="module")
def ir() -> FlowIR:
    result = compile_source(FLOW, "orders.flow")
    assert result.ir is not None, result.diagnostics
    return result.ir


def records(ir: FlowIR) -> list[tuple[str, Any, Any]]:
    return [(key, data["kind"], data["record"]) for key, data in ir.graph.nodes(data=True)]


def test_round_trip_gives_equal_records_and_edges(ir: FlowIR) -> None:
    back = from_json(json.loads(json.dumps(to_json(ir))))
    assert back.info == ir.info
    assert records(back) == records(ir)
    assert list(back.graph.edges(data="kind")) == list(ir.graph.edges(data="kind"))


def test_round_trip_keeps_the_start_of_each_span(ir: FlowIR) -> None:
    back = from_json(to_json(ir))
    for kind, name in [("job", "extract"), ("consumer", "w"), ("notify", "ops")]:
        before, after = ir.span_of(kind, name), back.span_of(kind, name)
        assert before is not None and after is not None
        assert (after.path, after.line, after.column) == (before.path, before.line, before.column)


def test_document_layout(ir: FlowIR) -> None:
    document = to_json(ir)
    assert list(document) == ["format_version", "flow", "nodes", "edges"]
    assert document["format_version"] == FORMAT_VERSION
    node = document["nodes"][0]
    assert list(node) == ["id", "kind", "span", "record"]
    assert node["id"] == "broker:main"
    assert node["span"] == {"path": "orders.flow", "line": 6, "column": 1}
    # record keys in field order
    assert list(document["nodes"][3]["record"])[:4] == [
        "name",
        "description",
        "schedule",
        "catch_up",
    ]
    assert {"source": "job:shell", "target": "job:extract", "kind": "depends_on"} in document[
        "edges"
    ]


def test_the_same_flow_gives_the_same_text() -> None:
    first = compile_source(FLOW, "orders.flow").ir
    second = compile_source(FLOW, "orders.flow").ir
    assert first is not None and second is not None
    assert json.dumps(to_json(first)) == json.dumps(to_json(second))


def test_secrets_and_env_are_written_as_references(ir: FlowIR) -> None:
    document = to_json(ir)
    broker = document["nodes"][0]["record"]
    assert broker["options"]["sasl_password"] == {"$secret": "KAFKA_PASSWORD"}
    assert broker["options"]["bootstrap"] == {
        "$env": "KAFKA_BOOTSTRAP",
        "default": "localhost:9092",
    }
    job = next(n for n in document["nodes"] if n["id"] == "job:extract")["record"]
    assert job["env"] == {"DB": {"$secret": "DB_URL"}, "MODE": {"$env": "MODE", "default": None}}
    notify = next(n for n in document["nodes"] if n["id"] == "notify:ops")["record"]
    assert notify["options"]["command"] == ["notify", {"$secret": "OPS"}]


def test_a_map_with_a_dollar_key_is_not_mistaken_for_a_reference(ir: FlowIR) -> None:
    document = to_json(ir)
    job = next(n for n in document["nodes"] if n["id"] == "job:extract")["record"]
    assert job["params"] == {
        "$map": {"$secret": "not a secret", "nested": {"list": [1, "two", 3.0]}}
    }
    back = from_json(document)
    assert back.jobs["extract"].params == {
        "$secret": "not a secret",
        "nested": {"list": (1, "two", 3.0)},
    }


def test_secret_values_never_reach_the_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ir: FlowIR
) -> None:
    monkeypatch.setenv("KAFKA_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("DB_URL", "postgres://user:pw@db/x")
    text = json.dumps(to_json(ir))
    assert "hunter2" not in text and "postgres://" not in text


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "not a tideflow IR document: it has no `format_version`"),
        ([], "not a tideflow IR document: it has no `format_version`"),
        ({"format_version": "1"}, "invalid IR format_version '1': expected an integer"),
        ({"format_version": 0}, "unknown IR format version 0"),
        (
            {"format_version": FORMAT_VERSION + 1},
            f"IR format version {FORMAT_VERSION + 1} is newer than this tideflow reads "
            f"(up to {FORMAT_VERSION}): upgrade tideflow, or compile the flow again",
        ),
        ({"format_version": 1, "flow": {"name": "x", "source": "x.flow"}}, "malformed IR document"),
        (
            {"format_version": 1, "flow": {"name": "x", "source": "x.flow", "colour": 1}},
            "unknown fields of FlowInfo: colour",
        ),
    ],
)
def test_documents_it_cannot_read_raise_a_clear_value_error(document: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        from_json(document)
    assert str(caught.value).startswith(message)


def test_edges_to_unknown_nodes_are_refused(ir: FlowIR) -> None:
    document = to_json(ir)
    document["edges"].append({"source": "job:extract", "target": "job:ghost", "kind": "depends_on"})
    with pytest.raises(ValueError, match="unknown node 'job:ghost'"):
        from_json(document)


def test_node_ids_must_match_their_records(ir: FlowIR) -> None:
    document = to_json(ir)
    document["nodes"][0]["id"] = "broker:other"
    with pytest.raises(ValueError, match="does not match its record"):
        from_json(document)


def test_many_jobs_round_trip() -> None:
    def job(i: int) -> str:
        after = ", ".join(f"job.j{d}" for d in range(max(0, i - 3), i))
        return f'job "j{i}" {{\n  run = "m:f"\n  after = [{after}]\n}}'

    jobs = "\n".join(job(i) for i in range(300))
    result = compile_source(jobs, "big.flow")
    assert result.ir is not None, result.errors
    assert result.ir.graph.number_of_edges() == 3 * 300 - 6
    back = from_json(json.loads(json.dumps(to_json(result.ir))))
    assert records(back) == records(result.ir)
    assert list(back.graph.edges(data="kind")) == list(result.ir.graph.edges(data="kind"))
