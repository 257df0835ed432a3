"""The intermediate representation: a `networkx.DiGraph` of typed node records.

The runtime reads this, never the AST. Nodes are keyed `"<kind>:<name>"` (for
example `"job:extract"`) and carry `kind` and `record` attributes; edges carry
`kind` (an `EdgeKind`) and read as sentences: `job:report --depends_on--> job:extract`,
`job:extract --publishes--> topic:orders`, `consumer:w --consumes--> topic:orders`,
`topic:orders --uses_broker--> broker:main`, `job:extract --uses_pool--> pool:db`,
`consumer:w --dead_letters--> topic:dlq`.

`env()` and `secret()` values are kept as `EnvRef` / `SecretRef`: resolved at run
time, never stored or printed as values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import networkx as nx
from tideflow.dsl.ast import Span
from tideflow.plugins.api.options import EnvRef as EnvRef  # re-exported: IR values
from tideflow.plugins.api.options import SecretRef as SecretRef

FORMAT_VERSION = 1

TextValue: TypeAlias = str | EnvRef | SecretRef


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # "cron" | "every"
    timezone: str
    cron: str | None = None  # as written, aliases such as "@daily" included
    interval: float | None = None  # seconds, for "every"


@dataclass(frozen=True, slots=True)
class Backoff:
    kind: str  # "fixed" | "exponential"
    initial: float  # seconds
    cap: float | None = None  # seconds; exponential only
    factor: float = 2.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 1
    backoff: Backoff | None = None
    jitter: bool = False


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: float | None = None
    memory: int | None = None  # bytes


@dataclass(frozen=True, slots=True)
class FlowInfo:
    name: str
    source: str  # path of the root .flow file
    description: str | None = None
    timezone: str = "UTC"
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 16


@dataclass(frozen=True, slots=True)
class BrokerNode:
    name: str
    kind: str
    options: Mapping[str, Any]  # validated against the backend's option schema
    description: str | None = None


@dataclass(frozen=True, slots=True)
class TopicNode:
    """A topic on a broker. Empty `subjects` means the single subject named like the topic."""

    name: str
    broker: str
    partitions: int = 1
    subjects: tuple[str, ...] = ()
    retention: float | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class PoolNode:
    name: str
    slots: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class JobNode:
    """A job. `retry` and `timeout` are already resolved against the flow's defaults:
    each retry setting the job leaves out comes from the flow's `retry`."""

    name: str
    description: str | None = None
    schedule: Schedule | None = None
    catch_up: str = "latest"
    overlap: str = "skip"
    run: str | None = None  # "package.module:function"
    command: tuple[TextValue, ...] | str | None = None  # a str only with shell
    shell: bool = False
    publishes: tuple[str, ...] = ()
    publish_stdout: bool = False
    after: tuple[str, ...] = ()
    # jobs of other flows this one runs after, as (flow, job): `flow.billing.job.close`
    after_flows: tuple[tuple[str, str], ...] = ()
    trigger: str = "all_success"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    pool: str | None = None
    pool_slots: int = 1
    resources: Resources = field(default_factory=Resources)
    params: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, TextValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScaleRule:
    max: int
    backend: str = "local"
    min: int = 0
    lag_per_instance: int = 100
    activation_lag: int = 0
    poll: float = 5.0
    cooldown: float = 60.0
    scale_up_window: float = 0.0
    scale_down_window: float = 60.0
    max_step: int | None = None
    tolerance: float = 0.1
    fallback: int | None = None
    drain_timeout: float = 30.0
    options: Mapping[str, Any] = field(default_factory=dict)  # the backend's own options


@dataclass(frozen=True, slots=True)
class ConsumerNode:
    """A consumer; `group` is already resolved (the consumer's name when not written)."""

    name: str
    consumes: str
    group: str
    run: str
    description: str | None = None
    batch_size: int = 10
    max_in_flight: int = 10
    dead_letter: str | None = None
    max_failures: int = 5
    env: Mapping[str, TextValue] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    scale: ScaleRule | None = None


@dataclass(frozen=True, slots=True)
class NotifyNode:
    name: str
    kind: str
    on: tuple[str, ...]
    jobs: tuple[str, ...] = ()  # empty: every job
    options: Mapping[str, Any] = field(default_factory=dict)


NodeRecord: TypeAlias = BrokerNode | TopicNode | PoolNode | JobNode | ConsumerNode | NotifyNode

NODE_KINDS: Mapping[type, str] = {
    BrokerNode: "broker",
    TopicNode: "topic",
    PoolNode: "pool",
    JobNode: "job",
    ConsumerNode: "consumer",
    NotifyNode: "notify",
}


class EdgeKind(enum.StrEnum):
    DEPENDS_ON = "depends_on"
    PUBLISHES = "publishes"
    CONSUMES = "consumes"
    USES_BROKER = "uses_broker"
    USES_POOL = "uses_pool"
    DEAD_LETTERS = "dead_letters"


def node_id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


@dataclass
class FlowIR:
    """A compiled flow: its metadata and its graph."""

    info: FlowInfo
    graph: nx.DiGraph = field(default_factory=nx.DiGraph)

    def add(self, record: NodeRecord, span: Span | None = None) -> str:
        """Add a node for `record`; `span` is where its block is written (kept beside it)."""
        kind = NODE_KINDS[type(record)]
        key = node_id(kind, record.name)
        self.graph.add_node(key, kind=kind, record=record, span=span)
        return key

    def span_of(self, kind: str, name: str) -> Span | None:
        """Where the block of node `kind:name` is written, when known."""
        data = self.graph.nodes.get(node_id(kind, name))
        return None if data is None else data.get("span")

    def connect(self, source: str, target: str, kind: EdgeKind) -> None:
        self.graph.add_edge(source, target, kind=kind)

    def records(self, kind: str) -> Iterator[Any]:
        for _, data in self.graph.nodes(data=True):
            if data["kind"] == kind:
                yield data["record"]

    @property
    def jobs(self) -> dict[str, JobNode]:
        return {r.name: r for r in self.records("job")}

    @property
    def consumers(self) -> dict[str, ConsumerNode]:
        return {r.name: r for r in self.records("consumer")}

    @property
    def topics(self) -> dict[str, TopicNode]:
        return {r.name: r for r in self.records("topic")}

    @property
    def brokers(self) -> dict[str, BrokerNode]:
        return {r.name: r for r in self.records("broker")}

    @property
    def pools(self) -> dict[str, PoolNode]:
        return {r.name: r for r in self.records("pool")}

    @property
    def notifiers(self) -> dict[str, NotifyNode]:
        return {r.name: r for r in self.records("notify")}

    def dependency_graph(self) -> nx.DiGraph:
        """Jobs only, with edges from each dependency to its dependent (execution order)."""
        order = nx.DiGraph()
        order.add_nodes_from(self.jobs)
        for source, target, kind in self.graph.edges(data="kind"):
            if kind is EdgeKind.DEPENDS_ON:
                order.add_edge(target.split(":", 1)[1], source.split(":", 1)[1])
        return order
