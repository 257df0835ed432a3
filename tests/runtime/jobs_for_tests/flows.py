"""Building small flows (IR) by hand for the executor's tests."""

from __future__ import annotations

from collections.abc import Iterable

from tideflow.compiler.ir import (
    BrokerNode,
    EdgeKind,
    FlowInfo,
    FlowIR,
    JobNode,
    PoolNode,
    TopicNode,
    node_id,
)


def make_flow(
    jobs: Iterable[JobNode],
    *,
    name: str = "tests",
    pools: Iterable[PoolNode] = (),
    topics: Iterable[TopicNode] = (),
    brokers: Iterable[BrokerNode] = (),
    concurrency: int = 16,
    source: str = "",
) -> FlowIR:
    """A flow of these records, with `depends_on` edges from each job's `after`."""
    flow = FlowIR(FlowInfo(name=name, source=source, concurrency=concurrency))
    for record in [*brokers, *topics, *pools]:
        flow.add(record)
    job_list = list(jobs)
    for job in job_list:
        flow.add(job)
    for job in job_list:
        for parent in job.after:
            flow.connect(node_id("job", job.name), node_id("job", parent), EdgeKind.DEPENDS_ON)
    return flow


def file_broker(path: str, name: str = "files") -> BrokerNode:
    """A broker record that `publishers.make_file_publisher` writes to `path`."""
    return BrokerNode(name=name, kind="file", options={"path": path})
