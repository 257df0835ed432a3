"""The intermediate representation: typed node records joined by typed edges.

The runtime reads this, never the AST. Nodes are keyed `"<kind>:<name>"` (for
example `"job:extract"`) and carry `kind` and `record` attributes; edges carry
`kind` (an `EdgeKind`) and read as sentences: `job:report --depends_on--> job:extract`,
`job:extract --publishes--> topic:orders`, `consumer:w --consumes--> topic:orders`,
`topic:orders --uses_broker--> broker:main`, `job:extract --uses_pool--> pool:db`,
`consumer:w --dead_letters--> topic:dlq`, `job:train --runs_on--> executor:cluster` (a job
on the built-in local executor has no `runs_on` edge).

`env()` and `secret()` values are kept as `EnvRef` / `SecretRef`: resolved at run
time, never stored or printed as values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from tideflow.dsl.ast import Span
from tideflow.plugins.api.backends import DEFAULT_DRAIN_TIMEOUT
from tideflow.plugins.api.options import EnvRef as EnvRef  # re-exported: IR values
from tideflow.plugins.api.options import SecretRef as SecretRef

if TYPE_CHECKING:
    import networkx as nx

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
    gpu: int | None = None
    # the executor's own entries (its `resource_options`), as written
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlowInfo:
    name: str
    source: str  # path of the root .flow file
    description: str | None = None
    timezone: str = "UTC"
    timeout: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    concurrency: int = 16
    executor: str | None = None  # the default executor block's name; None: local


@dataclass(frozen=True, slots=True)
class BrokerNode:
    name: str
    kind: str
    options: Mapping[str, Any]  # validated against the backend's option schema
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutorNode:
    """An `executor "NAME" { kind = ... }` block: where the jobs naming it run."""

    name: str
    kind: str
    options: Mapping[str, Any]  # validated against the executor's option schema
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
    # the executor block it runs on (its own or the flow's); None: the built-in local
    executor: str | None = None


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
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
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


NodeRecord: TypeAlias = (
    BrokerNode | TopicNode | PoolNode | JobNode | ConsumerNode | NotifyNode | ExecutorNode
)

NODE_KINDS: Mapping[type, str] = {
    BrokerNode: "broker",
    TopicNode: "topic",
    PoolNode: "pool",
    JobNode: "job",
    ConsumerNode: "consumer",
    NotifyNode: "notify",
    ExecutorNode: "executor",
}


class EdgeKind(enum.StrEnum):
    DEPENDS_ON = "depends_on"
    PUBLISHES = "publishes"
    CONSUMES = "consumes"
    USES_BROKER = "uses_broker"
    USES_POOL = "uses_pool"
    RUNS_ON = "runs_on"
    DEAD_LETTERS = "dead_letters"


def node_id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


class _Node(NamedTuple):
    kind: str
    record: NodeRecord
    span: Span | None


@dataclass(eq=False)
class FlowIR:
    """A compiled flow: its metadata, its node records and the typed edges between them.

    The records are kept in plain dicts, so that reading an IR (a consumer instance,
    a job worker) never loads networkx. `graph` builds the `networkx.DiGraph` the
    first time it is asked for (compiling, drawing, driving a DAG); from then on the
    graph holds the nodes and edges, and what is done to it is done to the IR.
    """

    info: FlowInfo
    # the nodes, and source -> target -> kind in the order networkx's adjacency keeps;
    # both are handed to the graph when it is built (see `graph`)
    _nodes: dict[str, _Node] = field(default_factory=dict, repr=False)
    _successors: dict[str, dict[str, EdgeKind]] = field(default_factory=dict, repr=False)
    _graph: nx.DiGraph | None = field(default=None, repr=False)

    @property
    def graph(self) -> nx.DiGraph:
        """The nodes (attributes `kind`, `record`, `span`) and edges (`kind`) as a
        `networkx.DiGraph`, built on first use."""
        if self._graph is None:
            # lazy: networkx is heavy (about 17 MB resident) and only compiling,
            # drawing and driving a DAG need a graph; reading an IR does not
            import networkx as nx

            graph = nx.DiGraph()
            graph.add_nodes_from(
                (key, {"kind": node.kind, "record": node.record, "span": node.span})
                for key, node in self._nodes.items()
            )
            graph.add_edges_from(
                (source, target, {"kind": kind}) for source, target, kind in self.edges()
            )
            self._graph = graph
            self._nodes, self._successors = {}, {}
        return self._graph

    def add(self, record: NodeRecord, span: Span | None = None) -> str:
        """Add a node for `record`; `span` is where its block is written (kept beside it)."""
        kind = NODE_KINDS[type(record)]
        key = node_id(kind, record.name)
        if self._graph is None:
            self._nodes[key] = _Node(kind, record, span)
        else:
            self._graph.add_node(key, kind=kind, record=record, span=span)
        return key

    def __contains__(self, key: object) -> bool:
        """Whether a node is keyed `key` (`"job:extract"`)."""
        return key in (self._nodes if self._graph is None else self._graph)

    def span_of(self, kind: str, name: str) -> Span | None:
        """Where the block of node `kind:name` is written, when known."""
        key = node_id(kind, name)
        if self._graph is None:
            node = self._nodes.get(key)
            return None if node is None else node.span
        data = self._graph.nodes.get(key)
        return None if data is None else data.get("span")

    def connect(self, source: str, target: str, kind: EdgeKind) -> None:
        if self._graph is None and source in self._nodes and target in self._nodes:
            self._successors.setdefault(source, {})[target] = kind
        else:
            # an end that is no node yet: networkx adds it bare, as it always did
            self.graph.add_edge(source, target, kind=kind)

    def nodes(self) -> Iterator[tuple[str, str, Any, Span | None]]:
        """Each node as (key, kind, record, span), in the order they were added."""
        if self._graph is None:
            for key, node in self._nodes.items():
                yield key, node.kind, node.record, node.span
        else:
            for key, data in self._graph.nodes(data=True):
                yield key, data["kind"], data["record"], data.get("span")

    def edges(self) -> Iterator[tuple[str, str, EdgeKind]]:
        """Each edge as (source, target, kind), in the graph's order (by source node)."""
        if self._graph is None:
            for source in self._nodes:
                for target, kind in self._successors.get(source, {}).items():
                    yield source, target, kind
        else:
            yield from self._graph.edges(data="kind")

    def records(self, kind: str | None = None) -> Iterator[Any]:
        """The records of the nodes of `kind` (of every kind when None), in node order."""
        for _, node_kind, record, _ in self.nodes():
            if kind is None or node_kind == kind:
                yield record

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

    @property
    def executors(self) -> dict[str, ExecutorNode]:
        return {r.name: r for r in self.records("executor")}

    def dependency_graph(self) -> nx.DiGraph:
        """Jobs only, with edges from each dependency to its dependent (execution order)."""
        # lazy: see `graph`; only the orchestrator drives a DAG
        import networkx as nx

        order = nx.DiGraph()
        order.add_nodes_from(self.jobs)
        for source, target, kind in self.edges():
            if kind is EdgeKind.DEPENDS_ON:
                order.add_edge(target.split(":", 1)[1], source.split(":", 1)[1])
        return order
