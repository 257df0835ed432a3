"""The IR builder: checked declarations in, a `FlowIR` out.

Only called when the checks found no error, so every value here is valid and
every reference resolves. Defaults come from the schema (and from each
backend's option fields), never from constants repeated here. Nodes are added
kind by kind in the schema's order and, within a kind, in source order; edges
follow once every node exists.
"""

from __future__ import annotations

from typing import Any

from tideflow.plugins.api import options as o

from . import schema as s
from .checks import (
    CheckedFlow,
    Declaration,
    OtherFlowsJob,
    ScheduleSpec,
    Section,
    with_defaults,
)
from .ir import (
    BrokerNode,
    ConsumerNode,
    EdgeKind,
    ExecutorNode,
    FlowInfo,
    FlowIR,
    JobNode,
    NotifyNode,
    PoolNode,
    Resources,
    RetryPolicy,
    ScaleRule,
    Schedule,
    TopicNode,
    node_id,
)

__all__ = ["build_ir"]


def _defaults(fields: tuple[o.Field, ...], *leave_out: str) -> dict[str, Any]:
    """The schema's defaults, for the fields that have one."""
    return {f.name: f.default for f in fields if f.default is not None and f.name not in leave_out}


# Attributes of the language that are not fields of a record of the same name.
_JOB_DEFAULTS = _defaults(s.JOB.fields, "timezone", "retry", "timeout")
_SCALE_DEFAULTS = _defaults(s.SCALE.fields)
_CONSUMER_DEFAULTS = _defaults(s.CONSUMER.fields)
_TOPIC_DEFAULTS = _defaults(s.TOPIC.fields)
_NOTIFY_DEFAULTS = _defaults(s.NOTIFY.fields)
_RETRY_FIELDS = tuple(f.name for f in s.RETRY.fields)


def build_ir(checked: CheckedFlow) -> FlowIR:
    """Turn error-free checked declarations into the IR graph."""
    if not checked.ok:
        raise ValueError("cannot build IR from a flow with errors")
    flow_values = checked.flow.section.values if checked.flow is not None else {}
    flow_retry = _retry(flow_values.get("retry"), RetryPolicy())
    info = FlowInfo(
        name=checked.name,
        source=checked.source,
        description=flow_values.get("description"),
        timezone=flow_values.get("timezone", s.FLOW.by_name["timezone"].default),
        timeout=flow_values.get("timeout"),
        retry=flow_retry,
        concurrency=flow_values.get("concurrency", s.FLOW.by_name["concurrency"].default),
        executor=flow_values.get("executor"),
    )
    ir = FlowIR(info)
    declared = checked.declarations
    for broker in declared["broker"].values():
        values = broker.section.values
        record = BrokerNode(
            broker.name,
            values["kind"],
            with_defaults(broker.section),
            values.get("description"),
        )
        ir.add(record, broker.block.span)
    for topic in declared["topic"].values():
        ir.add(TopicNode(topic.name, **(_TOPIC_DEFAULTS | topic.section.values)), topic.block.span)
    for pool in declared["pool"].values():
        ir.add(PoolNode(pool.name, **pool.section.values), pool.block.span)
    for job in declared["job"].values():
        ir.add(_job(job, checked.timezones[job.name], flow_retry, info), job.block.span)
    for consumer in declared["consumer"].values():
        ir.add(_consumer(consumer), consumer.block.span)
    for notify in declared["notify"].values():
        values = _NOTIFY_DEFAULTS | notify.section.values
        notifier = NotifyNode(
            notify.name,
            values["kind"],
            tuple(values["on"]),
            tuple(values.get("jobs", ())),
            with_defaults(notify.section),
        )
        ir.add(notifier, notify.block.span)
    for executor in declared["executor"].values():
        values = executor.section.values
        node = ExecutorNode(
            executor.name,
            values["kind"],
            with_defaults(executor.section),
            values.get("description"),
        )
        ir.add(node, executor.block.span)
    _connect(ir)
    return ir


def _job(job: Declaration, zone: str, flow_retry: RetryPolicy, info: FlowInfo) -> JobNode:
    values = job.section.values
    fields = _JOB_DEFAULTS | values
    fields.pop("timezone", None)
    schedule = values.get("schedule")
    if isinstance(schedule, ScheduleSpec):
        fields["schedule"] = Schedule(schedule.kind, zone, schedule.cron, schedule.interval)
    after = values.get("after", ())
    fields["after"] = tuple(d for d in after if isinstance(d, str))
    fields["after_flows"] = tuple((d.flow, d.job) for d in after if isinstance(d, OtherFlowsJob))
    fields["retry"] = _retry(values.get("retry"), flow_retry)
    fields["timeout"] = values.get("timeout", info.timeout)
    fields["executor"] = values.get("executor", info.executor)
    resources = values.get("resources")
    if isinstance(resources, Section):
        given = resources.values
        cpu = given.get("cpu")
        fields["resources"] = Resources(
            None if cpu is None else float(cpu),
            given.get("memory"),
            given.get("gpu"),
            dict(resources.options),  # the executor's own entries (`checks.placement`)
        )
    return JobNode(job.name, **fields)


def _retry(section: Section | None, base: RetryPolicy) -> RetryPolicy:
    """A retry block over `base`: what the block leaves out comes from `base`."""
    if section is None:
        return base
    given = section.values
    return RetryPolicy(**{name: given.get(name, getattr(base, name)) for name in _RETRY_FIELDS})


def _consumer(consumer: Declaration) -> ConsumerNode:
    fields = _CONSUMER_DEFAULTS | consumer.section.values
    fields.setdefault("group", consumer.name)
    scale = fields.get("scale")
    if isinstance(scale, Section):
        options = with_defaults(scale)
        fields["scale"] = ScaleRule(**(_SCALE_DEFAULTS | scale.values), options=options)
    return ConsumerNode(consumer.name, **fields)


def _connect(ir: FlowIR) -> None:
    edges: list[tuple[str, str, EdgeKind]] = []
    for key, data in ir.graph.nodes(data=True):
        record = data["record"]
        kind = data["kind"]
        if kind == "job":
            edges.extend((key, node_id("job", d), EdgeKind.DEPENDS_ON) for d in record.after)
            edges.extend((key, node_id("topic", t), EdgeKind.PUBLISHES) for t in record.publishes)
            if record.pool is not None:
                edges.append((key, node_id("pool", record.pool), EdgeKind.USES_POOL))
            if record.executor is not None:
                edges.append((key, node_id("executor", record.executor), EdgeKind.RUNS_ON))
        elif kind == "topic":
            edges.append((key, node_id("broker", record.broker), EdgeKind.USES_BROKER))
        elif kind == "consumer":
            edges.append((key, node_id("topic", record.consumes), EdgeKind.CONSUMES))
            if record.dead_letter is not None:
                edges.append((key, node_id("topic", record.dead_letter), EdgeKind.DEAD_LETTERS))
    ir.graph.add_edges_from((source, target, {"kind": kind}) for source, target, kind in edges)
