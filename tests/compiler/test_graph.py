"""The flow's picture: which nodes and edges the DOT text has, how they look, and that
graphviz draws it."""

from __future__ import annotations

import re
import shutil

import graphviz
import pytest
from tideflow.compiler.graph import FORMATS, flow_graph, render, to_dot
from tideflow.compiler.ir import (
    Backoff,
    BrokerNode,
    ConsumerNode,
    EdgeKind,
    FlowInfo,
    FlowIR,
    JobNode,
    NotifyNode,
    PoolNode,
    RetryPolicy,
    ScaleRule,
    Schedule,
    TopicNode,
)
from tideflow.dsl.durations import format_duration

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is missing")

FLOW_RETRY = RetryPolicy(3, Backoff("exponential", 10.0, 300.0), jitter=True)


def orders_ir() -> FlowIR:
    """A flow with one of everything, built by hand as the compiler would build it."""
    ir = FlowIR(
        FlowInfo(
            "orders",
            "orders.flow",
            description="Nightly export & <friends>",
            timezone="Europe/Lisbon",
            timeout=3600.0,
            retry=FLOW_RETRY,
        )
    )
    broker = ir.add(BrokerNode("main", "kafka", {}))
    orders = ir.add(TopicNode("orders", "main", partitions=12, retention=7 * 86400.0))
    dlq = ir.add(TopicNode("orders_dlq", "main"))
    pool = ir.add(PoolNode("warehouse_db", 4))
    for topic in (orders, dlq):
        ir.connect(topic, broker, EdgeKind.USES_BROKER)
    extract = ir.add(
        JobNode(
            "extract",
            schedule=Schedule("cron", "Europe/Lisbon", cron="0 2 * * *"),
            run="shop.jobs:extract",
            publishes=("orders",),
            pool="warehouse_db",
            pool_slots=2,
            retry=FLOW_RETRY,
            timeout=900.0,
        )
    )
    ir.connect(extract, orders, EdgeKind.PUBLISHES)
    ir.connect(extract, pool, EdgeKind.USES_POOL)
    tick = ir.add(
        JobNode(
            "tick",
            schedule=Schedule("every", "Europe/Lisbon", interval=600.0),
            run="shop.jobs:tick",
            retry=FLOW_RETRY,
            timeout=3600.0,
        )
    )
    report = ir.add(
        JobNode(
            "report",
            command=("python", "-m", "shop.report"),
            after=("extract",),
            retry=RetryPolicy(5, Backoff("fixed", 30.0)),
            timeout=3600.0,
        )
    )
    ir.connect(report, extract, EdgeKind.DEPENDS_ON)
    cleanup = ir.add(
        JobNode(
            "cleanup",
            run="shop.jobs:cleanup",
            after=("report", "tick"),
            trigger="all_done",
            retry=FLOW_RETRY,
            timeout=3600.0,
        )
    )
    ir.connect(cleanup, report, EdgeKind.DEPENDS_ON)
    ir.connect(cleanup, tick, EdgeKind.DEPENDS_ON)
    workers = ir.add(
        ConsumerNode(
            "order_workers",
            "orders",
            "order-workers",
            "shop.workers:handle",
            dead_letter="orders_dlq",
            scale=ScaleRule(
                12, backend="kubernetes", min=1, lag_per_instance=500, poll=2.0, cooldown=60.0
            ),
        )
    )
    ir.connect(workers, orders, EdgeKind.CONSUMES)
    ir.connect(workers, dlq, EdgeKind.DEAD_LETTERS)
    ir.add(NotifyNode("oncall", "webhook", ("failure",), jobs=("extract",)))
    return ir


def node_attrs(dot: str, node: str) -> str:
    match = re.search(rf'^\s*"{re.escape(node)}" \[(.*)\]$', dot, re.MULTILINE)
    assert match is not None, f"no node {node} in the DOT text"
    return match.group(1)


def edge_attrs(dot: str, tail: str, head: str) -> str:
    match = re.search(
        rf'^\s*"{re.escape(tail)}" -> "{re.escape(head)}" \[(.*)\]$', dot, re.MULTILINE
    )
    assert match is not None, f"no edge {tail} -> {head} in the DOT text"
    return match.group(1)


def edges(dot: str) -> set[tuple[str, str]]:
    pairs = re.findall(r'^\s*"([^"]+)" -> "([^"]+)"', dot, re.MULTILINE)
    return set(pairs)


def test_every_node_kind_has_its_own_shape() -> None:
    dot = to_dot(orders_ir())
    shapes = {
        "job.extract": "box",
        "topic.orders": "cylinder",
        "consumer.order_workers": "component",
        "broker.main": "box3d",
        "pool.warehouse_db": "hexagon",
        "notify.oncall": "note",
    }
    for node, shape in shapes.items():
        assert f"shape={shape} " in node_attrs(dot, node) + " "
    fills = {re.search(r'fillcolor="([^"]+)"', node_attrs(dot, node)) for node in shapes}
    assert len({fill.group(1) for fill in fills if fill}) == len(shapes)


def test_layout_is_left_to_right() -> None:
    assert "rankdir=LR" in to_dot(orders_ir())


def test_schedules_are_written_in_the_jobs() -> None:
    dot = to_dot(orders_ir())
    assert "cron 0 2 * * * · Europe/Lisbon" in node_attrs(dot, "job.extract")
    assert "every 10m" in node_attrs(dot, "job.tick")
    assert "cron" not in node_attrs(dot, "job.report")


def test_scheduled_jobs_stand_out() -> None:
    dot = to_dot(orders_ir())
    assert "penwidth=2" in node_attrs(dot, "job.extract")
    assert "penwidth=2" not in node_attrs(dot, "job.report")


def test_retries_and_timeouts_are_shown_where_they_differ_from_the_flow() -> None:
    dot = to_dot(orders_ir())
    assert "retry ×5 fixed 30s" in node_attrs(dot, "job.report")
    assert "timeout 15m" in node_attrs(dot, "job.extract")
    cleanup = node_attrs(dot, "job.cleanup")
    assert "retry" not in cleanup.split("tooltip")[0] and "timeout" not in cleanup
    # the flow's defaults are in the title instead
    assert "retry ×3 exp 10s→5m ±jitter" in dot
    assert "timeout 1h" in dot


def test_a_job_that_turns_retries_off_says_so() -> None:
    ir = orders_ir()
    ir.add(JobNode("once", run="a:b", retry=RetryPolicy(1), timeout=3600.0))
    assert "no retry" in node_attrs(to_dot(ir), "job.once")
    assert "no retry" not in node_attrs(to_dot(ir), "job.cleanup")


def test_a_node_kind_the_picture_does_not_know_is_still_drawn() -> None:
    # the IR may grow kinds before the picture learns them: draw them plainly, never fail
    ir = orders_ir()
    ir.graph.add_node("gate:approval", kind="gate", record=PoolNode("approval", 1))
    ir.graph.add_edge("job:report", "gate:approval", kind="waits_for")
    dot = to_dot(ir)
    assert "shape=ellipse" in node_attrs(dot, "gate.approval")
    assert "style=dotted" in edge_attrs(dot, "job.report", "gate.approval")


def test_scale_rules_are_written_in_the_consumer() -> None:
    label = node_attrs(to_dot(orders_ir()), "consumer.order_workers")
    assert "scale 1..12 on kubernetes" in label
    assert "500 msgs/instance" in label
    assert "group order-workers" in label


def test_topic_shows_partitions_and_retention() -> None:
    label = node_attrs(to_dot(orders_ir()), "topic.orders")
    assert "12 partitions · kept 7d" in label


def test_dependency_edges_run_from_the_dependency_and_name_unusual_triggers() -> None:
    dot = to_dot(orders_ir())
    plain = edge_attrs(dot, "job.extract", "job.report")
    assert "style=solid" in plain and "label" not in plain
    labelled = edge_attrs(dot, "job.report", "job.cleanup")
    assert "style=solid" in labelled and 'label=" all_done "' in labelled
    assert ("job.report", "job.extract") not in edges(dot)


def test_message_edges_are_dashed_and_follow_the_messages() -> None:
    dot = to_dot(orders_ir())
    assert "style=dashed" in edge_attrs(dot, "job.extract", "topic.orders")
    assert "style=dashed" in edge_attrs(dot, "topic.orders", "consumer.order_workers")
    dead = edge_attrs(dot, "consumer.order_workers", "topic.orders_dlq")
    assert "style=dashed" in dead and "dead letters" in dead
    colours = {
        re.search(r'color="([^"]+)"', edge_attrs(dot, *pair)).group(1)  # type: ignore[union-attr]
        for pair in [
            ("job.extract", "job.report"),
            ("job.extract", "topic.orders"),
            ("consumer.order_workers", "topic.orders_dlq"),
        ]
    }
    assert len(colours) == 3


def test_broker_and_pool_use_is_dotted_and_light() -> None:
    dot = to_dot(orders_ir())
    broker = edge_attrs(dot, "topic.orders", "broker.main")
    pool = edge_attrs(dot, "job.extract", "pool.warehouse_db")
    for attrs in (broker, pool):
        assert "style=dotted" in attrs and "arrowhead=none" in attrs
    assert "2 slots" in pool
    assert "style=dotted" in edge_attrs(dot, "notify.oncall", "job.extract")


def test_legend_lists_what_the_picture_has_and_can_be_left_out() -> None:
    dot = to_dot(orders_ir())
    for entry in ("scheduled job", "topic", "consumer", "broker", "pool", "notify"):
        assert f">{entry}</FONT>" in dot
    for entry in ("depends on", "publishes, consumes", "dead letters", "uses broker, pool"):
        assert entry in dot
    assert "scheduled job" not in to_dot(orders_ir(), legend=False)


def test_legend_leaves_out_what_the_flow_lacks() -> None:
    ir = FlowIR(FlowInfo("small", "small.flow"))
    ir.add(JobNode("only", run="a:b"))
    dot = to_dot(ir)
    assert ">job</FONT>" in dot
    for absent in ("topic", "consumer", "broker", "scheduled job", "depends on"):
        assert absent not in dot


def test_text_is_escaped_for_graphviz() -> None:
    dot = to_dot(orders_ir())
    assert "Nightly export &amp; &lt;friends&gt;" in dot
    assert "<friends>" not in dot


def test_the_graph_has_one_node_per_ir_node() -> None:
    ir = orders_ir()
    body = flow_graph(ir).body
    nodes = [line for line in body if re.match(r'\s*"[^"]+" \[', line)]
    assert len(nodes) == ir.graph.number_of_nodes()


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.5, "500ms"), (1.0, "1s"), (90.0, "1m30s"), (3600.0, "1h"), (86400.0 * 7, "7d")],
)
def test_format_duration(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


def test_render_dot_needs_no_graphviz_program(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    assert render(orders_ir(), "dot").startswith(b"digraph orders {")


def test_render_without_dot_raises_executable_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(graphviz.ExecutableNotFound):
        render(orders_ir(), "svg")


def test_render_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown graph format"):
        render(orders_ir(), "gif")


@needs_dot
@pytest.mark.parametrize("output_format", [f for f in FORMATS if f != "dot"])
def test_graphviz_draws_every_format(output_format: str) -> None:
    data = render(orders_ir(), output_format)
    magic = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}[output_format]
    assert data.startswith(magic)
    assert len(data) > 1000


@needs_dot
def test_svg_holds_every_job_and_a_tooltip() -> None:
    svg = render(orders_ir(), "svg").decode("utf-8")
    for name in ("extract", "report", "cleanup", "tick", "order_workers", "warehouse_db"):
        assert f">{name}</text>" in svg
    assert "run shop.jobs:extract" in svg


@needs_dot
def test_fifty_jobs_draw() -> None:
    ir = FlowIR(FlowInfo("big", "big.flow"))
    for number in range(50):
        key = ir.add(JobNode(f"step_{number:02d}", run="a:b"))
        if number:
            ir.connect(key, f"job:step_{(number - 1) // 2:02d}", EdgeKind.DEPENDS_ON)
    svg = render(ir, "svg").decode("utf-8")
    assert svg.count('class="node"') == 50
    assert svg.count('class="edge"') == 49
