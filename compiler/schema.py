"""The language's schema: which blocks exist, their attributes, types, defaults and docs.

This module is data. `compiler.checks` interprets it; `docs/language.md` describes
it (a test keeps the two in step); backends (brokers, scalers, notifiers) declare
their own options with the same `Field` and type classes, and the compiler checks
a `broker`, `scale` or `notify` block against the options of the backend it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# --- value types ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringType:
    """A string literal. With `secretable`, also `env("VAR", default)` or `secret("VAR")`."""

    secretable: bool = False
    choices: tuple[str, ...] = ()  # when set, the string must be one of these
    pattern: str | None = None  # a regular expression the whole string must match
    pattern_doc: str = ""  # how a message describes `pattern`

    def describe(self) -> str:
        return "string, env() or secret()" if self.secretable else "string"


@dataclass(frozen=True, slots=True)
class IntType:
    minimum: int | None = None

    def describe(self) -> str:
        return "integer" if self.minimum is None else f"integer ≥ {self.minimum}"


@dataclass(frozen=True, slots=True)
class NumberType:
    """An integer or a decimal number; `positive` excludes zero."""

    positive: bool = False

    def describe(self) -> str:
        return "positive number" if self.positive else "number"


@dataclass(frozen=True, slots=True)
class BoolType:
    def describe(self) -> str:
        return "boolean"


@dataclass(frozen=True, slots=True)
class DurationType:
    """A duration literal (`500ms`, `10s`, `1h30m`), converted to seconds."""

    positive: bool = True

    def describe(self) -> str:
        return "duration"


@dataclass(frozen=True, slots=True)
class SizeType:
    """A byte size (`512Mi`, `2Gi`, `1GB`); a plain integer counts bytes."""

    def describe(self) -> str:
        return "size"


@dataclass(frozen=True, slots=True)
class EnumType:
    """One of a fixed set of words, written bare (`latest`) or quoted (`"latest"`)."""

    choices: tuple[str, ...]

    def describe(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True, slots=True)
class ListType:
    """A list; with `allow_single`, one item may be written without brackets."""

    item: ValueType
    allow_single: bool = False
    min_items: int = 0

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True, slots=True)
class MapType:
    """A map literal `{ KEY = value, ... }` with values of one type."""

    value: ValueType

    def describe(self) -> str:
        return f"map of {self.value.describe()}"


@dataclass(frozen=True, slots=True)
class RefType:
    """A reference to a declared block, such as `topic.orders`."""

    kind: str

    def describe(self) -> str:
        return f"{self.kind} reference ({self.kind}.NAME)"


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A nested structure, written as a block (`retry { ... }`) or a map (`retry = { ... }`)."""

    schema: BlockSchema

    def describe(self) -> str:
        return f"{self.schema.type} block"


@dataclass(frozen=True, slots=True)
class ScheduleType:
    """`cron("expr")` (5 or 6 fields, or an `@alias`; optional `timezone = "Zone"`) or
    `every(10m)`."""

    def describe(self) -> str:
        return "cron(...) or every(...)"


@dataclass(frozen=True, slots=True)
class BackoffType:
    """`fixed(10s)` or `exponential(10s, 5m)` (initial delay, cap; optional `factor = 2`)."""

    def describe(self) -> str:
        return "fixed(...) or exponential(...)"


@dataclass(frozen=True, slots=True)
class CallableType:
    """A Python callable as `"package.module:function"`."""

    def describe(self) -> str:
        return 'callable ("package.module:function")'


@dataclass(frozen=True, slots=True)
class LiteralType:
    """Any literal value (string, number, boolean, duration, size, list or map of those)."""

    def describe(self) -> str:
        return "literal value"


ValueType: TypeAlias = (
    StringType
    | IntType
    | NumberType
    | BoolType
    | DurationType
    | SizeType
    | EnumType
    | ListType
    | MapType
    | RefType
    | ObjectType
    | ScheduleType
    | BackoffType
    | CallableType
    | LiteralType
)


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute of a block, or one option of a backend."""

    name: str
    type: ValueType
    doc: str
    required: bool = False
    default: Any = None  # the value after conversion (seconds for durations)
    example: str | None = None  # as it would be written in a .flow file


@dataclass(frozen=True, slots=True)
class BlockSchema:
    """The attributes a block (or nested block) accepts.

    `backend_kind` names the catalog ("broker", "scaler", "notifier") whose backend,
    chosen by the `backend_field` attribute, contributes further options.
    """

    type: str
    doc: str
    fields: tuple[Field, ...]
    label: bool = True  # top-level blocks carry a name: `job "extract" { ... }`
    backend_kind: str | None = None
    backend_field: str | None = None

    @property
    def by_name(self) -> Mapping[str, Field]:
        return {f.name: f for f in self.fields}


# --- the language -------------------------------------------------------------------

TRIGGER_RULES = ("all_success", "all_done", "one_failed", "one_success", "none_failed", "always")
CATCH_UP_POLICIES = ("skip", "latest", "all")
OVERLAP_POLICIES = ("skip", "queue", "allow")
NOTIFY_EVENTS = (
    "success",
    "failure",
    "retry",
    "retries_exhausted",
    "timeout",
    "lost",
    "crash_loop",
    "dead_letter",
)

RETRY = BlockSchema(
    "retry",
    "How a failed attempt is retried.",
    (
        Field(
            "attempts",
            IntType(minimum=1),
            "Total attempts, the first included.",
            default=1,
            example="3",
        ),
        Field(
            "backoff",
            BackoffType(),
            "Delay between attempts.",
            default=None,
            example="exponential(10s, 5m)",
        ),
        Field(
            "jitter",
            BoolType(),
            "Randomise each delay by up to ±50% to spread retries.",
            default=False,
            example="true",
        ),
    ),
    label=False,
)

RESOURCES = BlockSchema(
    "resources",
    "What one attempt needs; attempts wait until the machine has it free.",
    (
        Field("cpu", NumberType(positive=True), "CPU cores.", example="0.5"),
        Field("memory", SizeType(), "Memory.", example="512Mi"),
    ),
    label=False,
)

SCALE = BlockSchema(
    "scale",
    "How many consumer instances run, driven by the topic's backlog.",
    (
        Field(
            "backend",
            StringType(),
            "Scaler backend that starts and stops instances.",
            default="local",
            example='"local"',
        ),
        Field("min", IntType(minimum=0), "Fewest instances.", default=0, example="0"),
        Field("max", IntType(minimum=0), "Most instances.", required=True, example="12"),
        Field(
            "lag_per_instance",
            IntType(minimum=1),
            "Backlog one instance is expected to keep up with; "
            "desired = ceil(backlog / lag_per_instance).",
            default=100,
            example="500",
        ),
        Field(
            "activation_lag",
            IntType(minimum=0),
            "Backlog above which the consumer scales from zero to one instance.",
            default=0,
            example="1",
        ),
        Field("poll", DurationType(), "How often the backlog is read.", default=5.0, example="2s"),
        Field(
            "cooldown",
            DurationType(),
            "Time after the last activity before scaling to "
            "zero, and the least time between two scale-downs.",
            default=60.0,
            example="60s",
        ),
        Field(
            "scale_up_window",
            DurationType(positive=False),
            "Stabilization window for scale-up (lowest recommendation in the window wins).",
            default=0.0,
            example="0s",
        ),
        Field(
            "scale_down_window",
            DurationType(positive=False),
            "Stabilization window for scale-down (highest recommendation in the window wins).",
            default=60.0,
            example="5m",
        ),
        Field(
            "max_step",
            IntType(minimum=1),
            "Most instances added or removed per decision (unlimited when absent).",
            example="4",
        ),
        Field(
            "tolerance",
            NumberType(),
            "Relative change below which no scaling happens.",
            default=0.1,
            example="0.1",
        ),
        Field(
            "fallback",
            IntType(minimum=0),
            "Instances to run while the backlog cannot be "
            "read (otherwise the current count holds).",
            example="2",
        ),
        Field(
            "drain_timeout",
            DurationType(),
            "Time an instance gets to finish in-flight messages when stopped, before it is killed.",
            default=30.0,
            example="30s",
        ),
    ),
    label=False,
    backend_kind="scaler",
    backend_field="backend",
)

FLOW = BlockSchema(
    "flow",
    "The flow's metadata and defaults; at most one per flow.",
    (
        Field("description", StringType(), "What the flow does.", example='"Nightly export"'),
        Field(
            "timezone",
            StringType(),
            "Default IANA time zone of schedules.",
            default="UTC",
            example='"Europe/Lisbon"',
        ),
        Field("timeout", DurationType(), "Default timeout of each job attempt.", example="1h"),
        Field(
            "retry",
            ObjectType(RETRY),
            "Default retry policy of jobs.",
            example="{ attempts = 3  backoff = exponential(10s, 5m) }",
        ),
        Field(
            "concurrency",
            IntType(minimum=1),
            "Most job attempts running at once.",
            default=16,
            example="8",
        ),
    ),
)

BROKER = BlockSchema(
    "broker",
    "A messaging platform that carries what jobs publish.",
    (
        Field("kind", StringType(), "Broker backend.", required=True, example='"kafka"'),
        Field("description", StringType(), "What this broker is for.", example='"main cluster"'),
    ),
    backend_kind="broker",
    backend_field="kind",
)

TOPIC = BlockSchema(
    "topic",
    "A topic (Kafka), stream (NATS) or queue on a broker.",
    (
        Field(
            "broker",
            RefType("broker"),
            "The broker that carries it; may be left out when "
            "the flow declares exactly one broker.",
            example="broker.main",
        ),
        Field(
            "partitions",
            IntType(minimum=1),
            "Partitions (Kafka, embedded).",
            default=1,
            example="12",
        ),
        Field(
            "subjects",
            ListType(StringType(), allow_single=True, min_items=1),
            "Subjects the stream captures (NATS); defaults to the topic's name.",
            example='["orders.>"]',
        ),
        Field("retention", DurationType(), "How long messages are kept.", example="7d"),
        Field("description", StringType(), "What flows through it.", example='"new orders"'),
    ),
)

POOL = BlockSchema(
    "pool",
    "A limited resource shared by jobs, such as connections to a database.",
    (
        Field(
            "slots",
            IntType(minimum=1),
            "How many attempts may hold a slot at once.",
            required=True,
            example="4",
        ),
        Field("description", StringType(), "What the pool guards.", example='"warehouse db"'),
    ),
)

JOB = BlockSchema(
    "job",
    "A unit of work: a Python callable or a command, run on a schedule or after other jobs.",
    (
        Field("description", StringType(), "What the job does.", example='"export orders"'),
        Field(
            "schedule",
            ScheduleType(),
            "When the job starts by itself.",
            example='cron("0 2 * * *")',
        ),
        Field(
            "timezone",
            StringType(),
            "IANA time zone of the schedule (default: the flow's).",
            example='"America/New_York"',
        ),
        Field(
            "catch_up",
            EnumType(CATCH_UP_POLICIES),
            "Instants missed while the orchestrator "
            "was down: skip them, run the latest once, or run all.",
            default="latest",
            example="all",
        ),
        Field(
            "overlap",
            EnumType(OVERLAP_POLICIES),
            "When an instant comes while the previous "
            "run is still going: skip it, queue it, or run both.",
            default="skip",
            example="queue",
        ),
        Field("run", CallableType(), "Python callable to run.", example='"shop.jobs:extract"'),
        Field(
            "command",
            ListType(StringType(secretable=True), min_items=1),
            "Program and arguments (argv; no shell). A string with `shell = true`.",
            example='["python", "-m", "shop.report"]',
        ),
        Field(
            "shell",
            BoolType(),
            "Run `command`, a string, through /bin/sh.",
            default=False,
            example="true",
        ),
        Field(
            "publishes",
            ListType(RefType("topic"), allow_single=True),
            "Topics the job publishes to.",
            example="topic.orders",
        ),
        Field(
            "publish_stdout",
            BoolType(),
            "Publish each line a command prints to its (single) `publishes` topic.",
            default=False,
            example="true",
        ),
        Field(
            "after",
            ListType(RefType("job"), allow_single=True),
            "Jobs this one depends on; `flow.FLOW.job.NAME` names a job of another flow.",
            example="[job.extract]",
        ),
        Field(
            "trigger",
            EnumType(TRIGGER_RULES),
            "When the dependencies let the job start.",
            default="all_success",
            example="all_done",
        ),
        Field(
            "retry",
            ObjectType(RETRY),
            "Retry policy (default: the flow's).",
            example="{ attempts = 3 }",
        ),
        Field(
            "timeout",
            DurationType(),
            "Longest an attempt may run (default: the flow's).",
            example="15m",
        ),
        Field(
            "pool", RefType("pool"), "Pool the job takes slots from.", example="pool.warehouse_db"
        ),
        Field("pool_slots", IntType(minimum=1), "Slots one attempt takes.", default=1, example="2"),
        Field(
            "resources",
            ObjectType(RESOURCES),
            "CPU and memory one attempt needs.",
            example="{ cpu = 2  memory = 4Gi }",
        ),
        Field(
            "params",
            MapType(LiteralType()),
            "Parameters passed to the job.",
            example='{ region = "eu" }',
        ),
        Field(
            "env",
            MapType(StringType(secretable=True)),
            "Environment of the job.",
            example='{ DB_URL = secret("DB_URL") }',
        ),
    ),
)

CONSUMER = BlockSchema(
    "consumer",
    "A group of instances that drain a topic through a handler.",
    (
        Field("description", StringType(), "What the consumer does.", example='"order workers"'),
        Field(
            "consumes", RefType("topic"), "Topic to drain.", required=True, example="topic.orders"
        ),
        Field(
            "group",
            StringType(),
            "Consumer group (default: the consumer's name).",
            example='"order-workers"',
        ),
        Field(
            "run",
            CallableType(),
            "Handler called with each message.",
            required=True,
            example='"shop.workers:handle"',
        ),
        Field(
            "batch_size",
            IntType(minimum=1),
            "Most messages one fetch asks for (never more than the free in-flight slots).",
            default=10,
            example="500",
        ),
        Field(
            "max_in_flight",
            IntType(minimum=1),
            "Most messages one instance holds (fetched, not yet acknowledged) and handles at once.",
            default=10,
            example="1000",
        ),
        Field(
            "dead_letter",
            RefType("topic"),
            "Where a message goes after `max_failures` handler failures.",
            example="topic.orders_dlq",
        ),
        Field(
            "max_failures",
            IntType(minimum=1),
            "Handler failures of one message before it is "
            "dead-lettered (or dropped with an error when there is no dead-letter topic).",
            default=5,
            example="3",
        ),
        Field(
            "env",
            MapType(StringType(secretable=True)),
            "Environment of each instance.",
            example='{ API_KEY = secret("API_KEY") }',
        ),
        Field(
            "params",
            MapType(LiteralType()),
            "Parameters passed to the handler.",
            example='{ mode = "fast" }',
        ),
        Field(
            "scale",
            ObjectType(SCALE),
            "Backlog-driven scaling of instances.",
            example="{ max = 12  lag_per_instance = 500 }",
        ),
    ),
)

NOTIFY = BlockSchema(
    "notify",
    "Where events (failures, retries, ...) are sent.",
    (
        Field("kind", StringType(), "Notifier backend.", required=True, example='"webhook"'),
        Field(
            "on",
            ListType(EnumType(NOTIFY_EVENTS), allow_single=True, min_items=1),
            "Events that trigger it.",
            default=("failure", "retries_exhausted"),
            example="[failure, retries_exhausted]",
        ),
        Field(
            "jobs",
            ListType(RefType("job"), allow_single=True),
            "Only events of these jobs (default: all).",
            example="[job.extract]",
        ),
    ),
    backend_kind="notifier",
    backend_field="kind",
)

BLOCKS: Mapping[str, BlockSchema] = {
    s.type: s for s in (FLOW, BROKER, TOPIC, POOL, JOB, CONSUMER, NOTIFY)
}

# Functions that may appear as values, with where they are meaningful.
FUNCTIONS: Mapping[str, str] = {
    "cron": 'cron("MIN HOUR DOM MON DOW", timezone = "Zone"): a cron schedule',
    "every": "every(DURATION): a fixed-interval schedule",
    "env": 'env("VAR", "default"): an environment variable, read at run time',
    "secret": 'secret("VAR"): a secret from the environment, never printed or stored',
    "fixed": "fixed(DELAY): the same delay between attempts",
    "exponential": "exponential(INITIAL, CAP, factor = 2): doubling delays up to CAP",
}

# Attribute names that hold credentials: a literal value there gets W407.
CREDENTIAL_WORDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "credentials",
    "private_key",
    "access_key",
)


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """What the compiler needs to know of one backend: its name and its options."""

    name: str
    options: tuple[Field, ...]
    doc: str = ""
    partitioned: bool = False  # brokers: instances beyond the partition count idle
    subject_routed: bool = False  # brokers: topics' `subjects` decide where a message goes


@dataclass(frozen=True)
class Catalog:
    """Backends the compiler may name, by kind ("broker", "scaler", "notifier").

    `tideflow.plugins` builds the real catalog from installed plugins; the
    compiler only reads it.
    """

    backends: Mapping[str, Mapping[str, BackendSpec]] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> BackendSpec | None:
        return self.backends.get(kind, {}).get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.backends.get(kind, {}))
