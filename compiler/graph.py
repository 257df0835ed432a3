"""A picture of a compiled flow: the IR as a graphviz graph a person wants to look at.

Jobs, topics, consumers, brokers, pools, notifiers and executors have their own
shapes and colours; schedules, retries, timeouts and scale rules are written in the nodes.
Edges read left to right in the order things happen: dependencies are solid
(labelled with a trigger rule other than `all_success`), messages are dashed
(a job publishes, a consumer consumes, a consumer dead-letters), and the use of a
broker or a pool, and where a job runs (its executor; none for the built-in local
one), is dotted and light, so the flow of work stands out.

`flow_graph` builds the graph; `to_dot` and `render` need nothing but it
(`render` needs graphviz's `dot` program, and raises `graphviz.ExecutableNotFound`
without it).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Final

import graphviz
from tideflow.compiler.describe import describe_schedule
from tideflow.compiler.ir import (
    Backoff,
    BrokerNode,
    ConsumerNode,
    EdgeKind,
    ExecutorNode,
    FlowIR,
    JobNode,
    NotifyNode,
    PoolNode,
    RetryPolicy,
    TopicNode,
)
from tideflow.dsl.durations import format_duration

__all__ = ["FORMATS", "flow_graph", "render", "to_dot"]

FORMATS: Final = ("dot", "svg", "png", "pdf")
"""Output formats `render` accepts (`dot` is the graph's source text)."""

_FONT: Final = "Helvetica"
_DETAIL_COLOR: Final = "#475569"
_DETAIL_SIZE: Final = "10"


@dataclass(frozen=True, slots=True)
class _Look:
    """How one kind of node is drawn."""

    shape: str
    fill: str
    border: str
    style: str = "filled"


_LOOKS: Final = {
    "job": _Look("box", "#dbeafe", "#2563eb", "rounded,filled"),
    "topic": _Look("cylinder", "#fef3c7", "#d97706"),
    "consumer": _Look("component", "#dcfce7", "#16a34a"),
    "broker": _Look("box3d", "#ede9fe", "#7c3aed"),
    "pool": _Look("hexagon", "#f1f5f9", "#64748b"),
    "notify": _Look("note", "#fce7f3", "#db2777"),
    "executor": _Look("tab", "#ccfbf1", "#0d9488"),
}
_SCHEDULED_FILL: Final = "#bfdbfe"  # jobs that start by themselves stand out a little
_OTHER_LOOK: Final = _Look("ellipse", "#f8fafc", "#94a3b8")  # a kind this module predates


@dataclass(frozen=True, slots=True)
class _Line:
    """How one kind of edge is drawn."""

    style: str
    color: str
    penwidth: str = "1.2"
    arrowhead: str = "normal"


_LINES: Final = {
    EdgeKind.DEPENDS_ON: _Line("solid", "#1e293b", penwidth="1.6"),
    EdgeKind.PUBLISHES: _Line("dashed", "#d97706"),
    EdgeKind.CONSUMES: _Line("dashed", "#16a34a"),
    EdgeKind.DEAD_LETTERS: _Line("dashed", "#dc2626"),
    # uses are context, not flow: light and without arrows. They keep their say in the
    # layout's ranks: without it a pool or broker drifts to the far left, and every
    # dotted line crosses the whole picture
    EdgeKind.USES_BROKER: _Line("dotted", "#a78bfa", penwidth="1", arrowhead="none"),
    EdgeKind.USES_POOL: _Line("dotted", "#94a3b8", penwidth="1", arrowhead="none"),
    EdgeKind.RUNS_ON: _Line("dotted", "#14b8a6", penwidth="1", arrowhead="none"),
}
_NOTIFY_LINE: Final = _Line("dotted", "#f472b6", penwidth="1", arrowhead="none")
_OTHER_LINE: Final = _Line("dotted", "#94a3b8", penwidth="1")


def to_dot(ir: FlowIR, *, legend: bool = True) -> str:
    """The flow's picture as DOT source text."""
    source: str = flow_graph(ir, legend=legend).source
    return source


def render(ir: FlowIR, output_format: str, *, legend: bool = True) -> bytes:
    """The flow's picture in `output_format` (one of `FORMATS`), drawn by graphviz's `dot`."""
    if output_format not in FORMATS:
        raise ValueError(f"unknown graph format {output_format!r}; use one of {FORMATS}")
    graph = flow_graph(ir, legend=legend)
    if output_format == "dot":
        source: str = graph.source
        return source.encode("utf-8")
    data: bytes = graph.pipe(format=output_format, quiet=True)
    return data


def flow_graph(ir: FlowIR, *, legend: bool = True) -> graphviz.Digraph:
    """The flow as a left-to-right `graphviz.Digraph`, with a legend unless told not to."""
    info = ir.info
    graph = graphviz.Digraph(name=_graph_name(info.name))
    graph.attr(
        "graph",
        rankdir="LR",
        label=_title(ir, legend),
        labelloc="t",
        labeljust="l",
        fontname=_FONT,
        fontsize="16",
        nodesep="0.25",
        ranksep="0.55",
        newrank="true",
        pad="0.3",
        bgcolor="white",
    )
    graph.attr("node", fontname=_FONT, fontsize="12", margin="0.15,0.06")
    graph.attr("edge", fontname=_FONT, fontsize="10", arrowsize="0.7")

    for key, data in sorted(ir.graph.nodes(data=True), key=lambda item: _node_order(item[0])):
        record = data["record"]
        kind: str = data["kind"]
        look = _LOOKS.get(kind, _OTHER_LOOK)
        fill = look.fill
        penwidth = "1.2"
        if isinstance(record, JobNode) and record.schedule is not None:
            fill, penwidth = _SCHEDULED_FILL, "2"
        graph.node(
            _dot_id(key),
            label=_html(_node_lines(record, ir)),
            shape=look.shape,
            style=look.style,
            fillcolor=fill,
            color=look.border,
            penwidth=penwidth,
            tooltip=_tooltip(kind, record),
        )

    edges: list[tuple[str, str, EdgeKind]] = list(ir.graph.edges(data="kind"))
    for source, target, kind in sorted(edges, key=_edge_order):
        _edge(graph, ir, source, target, kind)

    for notifier in sorted(ir.notifiers.values(), key=lambda n: n.name):
        for job in notifier.jobs:
            if f"job:{job}" not in ir.graph:
                continue
            _draw_edge(
                graph, _dot_id(f"notify:{notifier.name}"), _dot_id(f"job:{job}"), _NOTIFY_LINE
            )

    return graph


# --- nodes ----------------------------------------------------------------------------


def _node_lines(record: object, ir: FlowIR) -> list[str]:
    """The node's name, then a few short detail lines."""
    match record:
        case JobNode():
            return [record.name, *_job_details(record, ir)]
        case TopicNode():
            details = []
            if record.partitions > 1:
                details.append(f"{record.partitions} partitions")
            if record.retention is not None:
                details.append(f"kept {_written(record.retention)}")
            return [record.name, " · ".join(details)] if details else [record.name]
        case ConsumerNode():
            return [record.name, *_consumer_details(record)]
        case BrokerNode():
            return [record.name, record.kind]
        case PoolNode():
            return [record.name, _plural(record.slots, "slot")]
        case NotifyNode():
            return [record.name, record.kind, "on " + ", ".join(record.on)]
        case ExecutorNode():
            return [record.name, record.kind]
    return [str(getattr(record, "name", "?"))]


def _job_details(job: JobNode, ir: FlowIR) -> list[str]:
    details = []
    if job.schedule is not None:
        details.append(describe_schedule(job.schedule, interval=_written, zone=" · {}"))
    # the flow's defaults are in the title; a job repeats them only when it differs
    policy = []
    if job.retry != ir.info.retry:
        policy.append(_retry(job.retry) if job.retry.attempts > 1 else "no retry")
    if job.timeout is not None and job.timeout != ir.info.timeout:
        policy.append(f"timeout {_written(job.timeout)}")
    if policy:
        details.append(" · ".join(policy))
    return details


def _consumer_details(consumer: ConsumerNode) -> list[str]:
    details = []
    if consumer.group != consumer.name:
        details.append(f"group {consumer.group}")
    rule = consumer.scale
    if rule is not None:
        where = "" if rule.backend == "local" else f" on {rule.backend}"
        details.append(f"scale {rule.min}..{rule.max}{where}")
        details.append(
            f"{rule.lag_per_instance} msgs/instance · poll {_written(rule.poll)}"
            f" · cooldown {_written(rule.cooldown)}"
        )
    return details


def _retry(policy: RetryPolicy) -> str:
    text = f"retry ×{policy.attempts}"
    if policy.backoff is not None:
        text += f" {_backoff(policy.backoff)}"
    if policy.jitter:
        text += " ±jitter"
    return text


def _backoff(backoff: Backoff) -> str:
    if backoff.kind == "exponential":
        cap = f"→{_written(backoff.cap)}" if backoff.cap is not None else ""
        return f"exp {_written(backoff.initial)}{cap}"
    return f"fixed {_written(backoff.initial)}"


def _title(ir: FlowIR, legend: bool) -> str:
    """The graph's label: the flow's name, description and defaults, then the key."""
    info = ir.info
    rows = [f'<FONT POINT-SIZE="16"><B>flow "{_escape(info.name)}"</B></FONT>']
    if info.description:
        rows.append(_detail(info.description))
    defaults = [f"zone {info.timezone}"]
    if info.retry.attempts > 1:
        defaults.append(_retry(info.retry))
    if info.timeout is not None:
        defaults.append(f"timeout {_written(info.timeout)}")
    defaults.append(f"concurrency {info.concurrency}")
    if info.executor is not None:
        defaults.append(f"executor {info.executor}")
    rows.append(_detail("defaults: " + " · ".join(defaults)))
    key = _legend(ir) if legend else ""
    if key:
        rows.append(key)
    cells = "".join(f'<TR><TD ALIGN="LEFT">{row}</TD></TR>' for row in rows)
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">{cells}</TABLE>>'


def _tooltip(kind: str, record: object) -> str:
    name = getattr(record, "name", "")
    description = getattr(record, "description", None)
    lines = [f'{kind} "{name}"']
    if isinstance(record, JobNode | ConsumerNode) and record.run:
        lines.append(f"run {record.run}")
    if description:
        lines.append(description)
    # graphviz's own line break escape keeps each DOT statement on one line
    return "\\n".join(line.replace("\\", "\\\\").replace("\n", " ") for line in lines)


def _html(lines: list[str]) -> str:
    """An HTML-like label: the name in bold, details smaller and grey."""
    name, *details = lines
    rows = [f"<B>{_escape(name)}</B>", *(_detail(d) for d in details if d)]
    return "<" + "<BR/>".join(rows) + ">"


def _detail(text: str) -> str:
    return f'<FONT POINT-SIZE="{_DETAIL_SIZE}" COLOR="{_DETAIL_COLOR}">{_escape(text)}</FONT>'


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


# --- edges ------------------------------------------------------------------------------


def _edge(graph: graphviz.Digraph, ir: FlowIR, source: str, target: str, kind: EdgeKind) -> None:
    line = _LINES.get(kind, _OTHER_LINE)
    label = None
    # draw in the direction work and messages travel, whatever way the IR edge reads
    if kind is EdgeKind.DEPENDS_ON:
        source, target = target, source
        trigger = ir.graph.nodes[target]["record"].trigger
        if trigger != "all_success":
            label = trigger
    elif kind is EdgeKind.CONSUMES:
        source, target = target, source
    elif kind is EdgeKind.DEAD_LETTERS:
        label = "dead letters"
    elif kind is EdgeKind.USES_POOL:
        slots = ir.graph.nodes[source]["record"].pool_slots
        if slots > 1:
            label = _plural(slots, "slot")
    _draw_edge(graph, _dot_id(source), _dot_id(target), line, label)


def _draw_edge(
    graph: graphviz.Digraph, tail: str, head: str, line: _Line, label: str | None = None
) -> None:
    attrs = {
        "style": line.style,
        "color": line.color,
        "penwidth": line.penwidth,
        "arrowhead": line.arrowhead,
    }
    if label:
        attrs["label"] = f" {label} "
        attrs["fontcolor"] = line.color
    graph.edge(tail, head, **attrs)


# --- legend -------------------------------------------------------------------------------

_EDGE_GLYPHS: Final = {"solid": "━━━▶", "dashed": "╍╍╍▶", "dotted": "┈┈┈┈"}
_LEGEND_EDGES: Final = (
    ((EdgeKind.DEPENDS_ON,), "depends on (trigger rule)"),
    ((EdgeKind.PUBLISHES, EdgeKind.CONSUMES), "publishes, consumes"),
    ((EdgeKind.DEAD_LETTERS,), "dead letters"),
    ((EdgeKind.USES_BROKER, EdgeKind.USES_POOL), "uses broker, pool"),
    ((EdgeKind.RUNS_ON,), "runs on"),
)
_LEGEND_SINGLE: Final = {
    EdgeKind.PUBLISHES: "publishes",
    EdgeKind.CONSUMES: "consumes",
    EdgeKind.USES_BROKER: "uses broker",
    EdgeKind.USES_POOL: "uses pool",
}


def _legend(ir: FlowIR) -> str:
    """A key to the kinds of node and edge that this picture has, as an HTML-like table.

    It sits in the graph's label rather than among the nodes, so it never changes the
    layout of the flow itself.
    """
    kinds = {kind for _, kind in ir.graph.nodes(data="kind")}
    edge_kinds = {kind for _, _, kind in ir.graph.edges(data="kind")}
    scheduled = any(job.schedule is not None for job in ir.jobs.values())
    samples = [("scheduled job", _LOOKS["job"], _SCHEDULED_FILL, 2)] if scheduled else []
    if not any(job.schedule is None for job in ir.jobs.values()):
        kinds.discard("job")  # every job is scheduled: the sample above covers them
    samples += [(kind, _LOOKS[kind], _LOOKS[kind].fill, 1) for kind in _LOOKS if kind in kinds]
    cells = [
        f'<TD BGCOLOR="{fill}" COLOR="{look.border}" BORDER="{border}">'
        f'<FONT POINT-SIZE="{_DETAIL_SIZE}">{_escape(text)}</FONT></TD>'
        for text, look, fill, border in samples
    ]
    for edge_kinds_shown, text in _LEGEND_EDGES:
        present = [kind for kind in edge_kinds_shown if kind in edge_kinds]
        if not present:
            continue
        if len(present) < len(edge_kinds_shown):
            text = _LEGEND_SINGLE[present[0]]
        line = _LINES[edge_kinds_shown[0]]
        cells.append(
            f'<TD BORDER="0"><FONT POINT-SIZE="{_DETAIL_SIZE}" COLOR="{line.color}">'
            f"{_EDGE_GLYPHS[line.style]} {_escape(text)}</FONT></TD>"
        )
    if not cells:
        return ""
    return (
        '<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="4" CELLPADDING="3"><TR>'
        + "".join(cells)
        + "</TR></TABLE>"
    )


# --- helpers ------------------------------------------------------------------------------

_KIND_ORDER: Final = {
    "job": 0,
    "topic": 1,
    "consumer": 2,
    "broker": 3,
    "pool": 4,
    "notify": 5,
    "executor": 6,
}


def _node_order(key: str) -> tuple[int, str]:
    kind, _, name = key.partition(":")
    return (_KIND_ORDER.get(kind, 9), name)


def _edge_order(edge: tuple[str, str, EdgeKind]) -> tuple[str, str, str]:
    source, target, kind = edge
    return (str(kind), source, target)


def _dot_id(key: str) -> str:
    # `job:extract` would read as node `job`, port `extract` in DOT
    return key.replace(":", ".", 1)


def _graph_name(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name) or "flow"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _written(seconds: float) -> str:
    # the graph (and the dashboard beside it) has always shown a zero duration as `0ms`
    return format_duration(seconds, zero="0ms")
