"""The IR builder: typed records, typed edges, defaults, env()/secret() references, spans."""

from __future__ import annotations

import textwrap

import pytest
from tideflow.compiler import compile_source
from tideflow.compiler.build import build_ir
from tideflow.compiler.checks import check_flow
from tideflow.compiler.ir import (
    Backoff,
    EdgeKind,
    EnvRef,
    FlowIR,
    Resources,
    RetryPolicy,
    ScaleRule,
    Schedule,
    SecretRef,
)
from tideflow.dsl.loader import load_source
from tideflow.plugins.manager import default_catalog

ORDERS = """
flow "orders" {
  timezone    = "Europe/Lisbon"
  description = "nightly export"
  timeout     = 1h
  concurrency = 8
  retry { attempts = 2  backoff = fixed(30s) }
}

broker "main" {
  kind          = "kafka"
  bootstrap     = env("KAFKA_BOOTSTRAP", "localhost:9092")
  sasl_password = secret("KAFKA_PASSWORD")
}

topic "orders" {
  broker     = broker.main
  partitions = 12
  retention  = 7d
}
topic "orders_dlq" { partitions = 12 }

pool "warehouse_db" { slots = 4 }

job "extract" {
  schedule  = cron("0 3 * * *")
  run       = "shop.jobs:extract"
  publishes = topic.orders
  pool      = pool.warehouse_db
  timeout   = 15m
  retry { attempts = 3  backoff = exponential(10s, 5m, factor = 3) }
  resources { cpu = 2  memory = 512Mi }
  params    = { region = "eu", sizes = [1, 2Ki], every = 10m, on = true }
  env       = { TOKEN = secret("API_TOKEN"), MODE = env("MODE") }
}

job "report" {
  command = ["python", "-m", "shop.report", env("REPORT_DAY", "today")]
  after   = [job.extract]
  trigger = all_done
  retry { jitter = true }
}

consumer "order_workers" {
  consumes    = topic.orders
  run         = "shop.workers:handle"
  dead_letter = topic.orders_dlq
  scale {
    max              = 12
    lag_per_instance = 500
    poll             = 2s
    backend          = "kubernetes"
    name             = "order-workers"
  }
}

consumer "dlq" {
  consumes = topic.orders_dlq
  group    = "dlq-readers"
  run      = "shop.workers:park"
}

notify "ops" {
  kind = "webhook"
  url  = secret("OPS_WEBHOOK")
  jobs = job.extract
}
"""


@pytest.fixture(scope="module")
def ir() -> FlowIR:
    result = compile_source(textwrap.dedent(ORDERS), "orders.flow")
    assert result.ok and result.diagnostics == (), result.diagnostics
    assert result.ir is not None
    return result.ir


def test_flow_info(ir: FlowIR) -> None:
    info = ir.info
    assert (info.name, info.source, info.description) == ("orders", "orders.flow", "nightly export")
    assert (info.timezone, info.timeout, info.concurrency) == ("Europe/Lisbon", 3600.0, 8)
    assert info.retry == RetryPolicy(2, Backoff("fixed", 30.0), False)


def test_nodes_are_keyed_by_kind_and_name(ir: FlowIR) -> None:
    assert list(ir.graph.nodes) == [
        "broker:main",
        "topic:orders",
        "topic:orders_dlq",
        "pool:warehouse_db",
        "job:extract",
        "job:report",
        "consumer:order_workers",
        "consumer:dlq",
        "notify:ops",
    ]
    assert all(data["kind"] == key.split(":")[0] for key, data in ir.graph.nodes(data=True))


def test_edges_are_typed(ir: FlowIR) -> None:
    assert sorted((s, t, str(k)) for s, t, k in ir.graph.edges(data="kind")) == [
        ("consumer:dlq", "topic:orders_dlq", "consumes"),
        ("consumer:order_workers", "topic:orders", "consumes"),
        ("consumer:order_workers", "topic:orders_dlq", "dead_letters"),
        ("job:extract", "pool:warehouse_db", "uses_pool"),
        ("job:extract", "topic:orders", "publishes"),
        ("job:report", "job:extract", "depends_on"),
        ("topic:orders", "broker:main", "uses_broker"),
        ("topic:orders_dlq", "broker:main", "uses_broker"),
    ]
    assert all(isinstance(k, EdgeKind) for _, _, k in ir.graph.edges(data="kind"))
    assert list(ir.dependency_graph().edges) == [("extract", "report")]


def test_job_values_are_converted(ir: FlowIR) -> None:
    job = ir.jobs["extract"]
    assert job.schedule == Schedule("cron", "Europe/Lisbon", "0 3 * * *")
    assert job.run == "shop.jobs:extract"
    assert (job.publishes, job.pool, job.timeout) == (("orders",), "warehouse_db", 900.0)
    assert job.retry == RetryPolicy(3, Backoff("exponential", 10.0, 300.0, 3.0), False)
    assert job.resources == Resources(2.0, 512 * 1024**2)
    assert job.params == {"region": "eu", "sizes": (1, 2048), "every": 600.0, "on": True}


def test_env_and_secret_stay_references(ir: FlowIR) -> None:
    assert ir.jobs["extract"].env == {"TOKEN": SecretRef("API_TOKEN"), "MODE": EnvRef("MODE")}
    assert ir.jobs["report"].command == (
        "python",
        "-m",
        "shop.report",
        EnvRef("REPORT_DAY", "today"),
    )
    options = ir.brokers["main"].options
    assert options["bootstrap"] == EnvRef("KAFKA_BOOTSTRAP", "localhost:9092")
    assert options["sasl_password"] == SecretRef("KAFKA_PASSWORD")
    assert ir.notifiers["ops"].options["url"] == SecretRef("OPS_WEBHOOK")


def test_job_defaults_come_from_the_schema_and_the_flow(ir: FlowIR) -> None:
    job = ir.jobs["report"]
    assert (job.schedule, job.run, job.catch_up, job.overlap) == (None, None, "latest", "skip")
    assert (job.trigger, job.after, job.pool_slots, job.shell) == (
        "all_done",
        ("extract",),
        1,
        False,
    )
    # the flow's timeout; each retry setting the job leaves out comes from the flow's
    assert job.timeout == 3600.0
    assert job.retry == RetryPolicy(2, Backoff("fixed", 30.0), True)


def test_without_a_flow_block_jobs_get_the_schema_defaults() -> None:
    result = compile_source('job "a" { run = "m:f" }', "plain.flow")
    assert result.ir is not None
    job = result.ir.jobs["a"]
    assert (job.retry, job.timeout, job.resources) == (RetryPolicy(), None, Resources())
    assert result.ir.info.timezone == "UTC" and result.ir.info.concurrency == 16


def test_schedule_takes_the_zone_of_job_then_flow() -> None:
    text = textwrap.dedent(
        """
        flow "f" { timezone = "Asia/Tokyo" }
        job "flow_zone" {
          run = "m:f"
          schedule = cron("0 3 * * *")
        }
        job "job_zone" {
          run = "m:f"
          timezone = "America/Chicago"
          schedule = every(10m)
        }
        job "cron_zone" {
          run = "m:f"
          schedule = cron("0 3 * * *", timezone = "Europe/Paris")
        }
        """
    )
    result = compile_source(text)
    assert result.ir is not None
    zones = {name: job.schedule.timezone for name, job in result.ir.jobs.items() if job.schedule}
    assert zones == {
        "flow_zone": "Asia/Tokyo",
        "job_zone": "America/Chicago",
        "cron_zone": "Europe/Paris",
    }
    assert result.ir.jobs["job_zone"].schedule == Schedule("every", "America/Chicago", None, 600.0)


def test_topic_defaults_and_implied_broker(ir: FlowIR) -> None:
    orders, dlq = ir.topics["orders"], ir.topics["orders_dlq"]
    assert (orders.broker, orders.partitions, orders.retention, orders.subjects) == (
        "main",
        12,
        7 * 86400.0,
        (),
    )
    assert dlq.broker == "main"  # the only broker


def test_consumer_group_and_scale(ir: FlowIR) -> None:
    workers, dlq = ir.consumers["order_workers"], ir.consumers["dlq"]
    assert (workers.group, dlq.group) == ("order_workers", "dlq-readers")
    assert (workers.dead_letter, workers.batch_size, workers.max_failures) == ("orders_dlq", 10, 5)
    assert dlq.scale is None
    assert workers.scale == ScaleRule(
        max=12,
        backend="kubernetes",
        lag_per_instance=500,
        poll=2.0,
        options={"name": "order-workers", "resource": "deployment", "namespace": "default"},
    )


def test_backend_options_get_their_defaults(ir: FlowIR) -> None:
    options = ir.brokers["main"].options
    assert (options["client_id"], options["offset_reset"], options["session_timeout"]) == (
        "tideflow",
        "latest",
        10.0,
    )
    assert "sasl_mechanism" not in options  # no default, not written
    notify = ir.notifiers["ops"]
    assert (notify.kind, notify.on, notify.jobs) == (
        "webhook",
        ("failure", "retries_exhausted"),
        ("extract",),
    )
    assert notify.options["timeout"] == 10.0


def test_every_node_keeps_its_block_span(ir: FlowIR) -> None:
    lines = textwrap.dedent(ORDERS).splitlines()
    for key, data in ir.graph.nodes(data=True):
        span = data["span"]
        kind, name = key.split(":")
        assert span.path == "orders.flow"
        assert lines[span.line - 1].startswith(f'{kind} "{name}"')
        assert ir.span_of(kind, name) == span
        # the record itself carries no position
        assert not hasattr(data["record"], "span")
    assert ir.span_of("job", "nothere") is None


def test_build_refuses_a_flow_with_errors() -> None:
    checked = check_flow(load_source('job "a" {}'), default_catalog())
    assert not checked.ok
    with pytest.raises(ValueError, match="errors"):
        build_ir(checked)
