"""The language's schema: which blocks exist, their attributes, types, defaults and docs.

This module is data. `compiler.checks` interprets it; `docs/language.md` describes
it (a test keeps the two in step). Its blocks are described with the option types
of the plugin API (`tideflow.plugins.api.options`), the same `Field` and type
classes backends (brokers, scalers, notifiers) declare their own options with; the
compiler checks a `broker`, `executor`, `scale` or `notify` block against the options
of the backend it names.

The option types used to live here: their old names still work for one release,
with a `DeprecationWarning` naming their new home.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from tideflow.plugins.api import options as o
from tideflow.plugins.api.backends import DEFAULT_DRAIN_TIMEOUT

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

RETRY = o.BlockSchema(
    "retry",
    "How a failed attempt is retried.",
    (
        o.Field(
            "attempts",
            o.IntType(minimum=1),
            "Total attempts, the first included.",
            default=1,
            example="3",
        ),
        o.Field(
            "backoff",
            o.BackoffType(),
            "Delay between attempts.",
            default=None,
            example="exponential(10s, 5m)",
        ),
        o.Field(
            "jitter",
            o.BoolType(),
            "Randomise each delay by up to ±50% to spread retries.",
            default=False,
            example="true",
        ),
    ),
    label=False,
)

RESOURCES = o.BlockSchema(
    "resources",
    "What one attempt needs; attempts wait until the machine has it free.",
    (
        o.Field("cpu", o.NumberType(positive=True), "CPU cores.", example="0.5"),
        o.Field("memory", o.SizeType(), "Memory.", example="512Mi"),
        o.Field("gpu", o.IntType(minimum=0), "GPU devices.", example="1"),
    ),
    label=False,
)
# `resources` also takes the entries the job's executor declares (its `resource_options`,
# a Dask worker resource, say): a number, a size or a string each. They are checked once
# the job's executor is known (`checks.placement`), not against this schema.

SCALE = o.BlockSchema(
    "scale",
    "How many consumer instances run, driven by the topic's backlog.",
    (
        o.Field(
            "backend",
            o.StringType(),
            "Scaler backend that starts and stops instances.",
            default="local",
            example='"local"',
        ),
        o.Field("min", o.IntType(minimum=0), "Fewest instances.", default=0, example="0"),
        o.Field("max", o.IntType(minimum=0), "Most instances.", required=True, example="12"),
        o.Field(
            "lag_per_instance",
            o.IntType(minimum=1),
            "Backlog one instance is expected to keep up with; "
            "desired = ceil(backlog / lag_per_instance).",
            default=100,
            example="500",
        ),
        o.Field(
            "activation_lag",
            o.IntType(minimum=0),
            "Backlog above which the consumer scales from zero to one instance.",
            default=0,
            example="1",
        ),
        o.Field(
            "poll", o.DurationType(), "How often the backlog is read.", default=5.0, example="2s"
        ),
        o.Field(
            "cooldown",
            o.DurationType(),
            "Time after the last activity before scaling to "
            "zero, and the least time between two scale-downs.",
            default=60.0,
            example="60s",
        ),
        o.Field(
            "scale_up_window",
            o.DurationType(positive=False),
            "Stabilization window for scale-up (lowest recommendation in the window wins).",
            default=0.0,
            example="0s",
        ),
        o.Field(
            "scale_down_window",
            o.DurationType(positive=False),
            "Stabilization window for scale-down (highest recommendation in the window wins).",
            default=60.0,
            example="5m",
        ),
        o.Field(
            "max_step",
            o.IntType(minimum=1),
            "Most instances added or removed per decision (unlimited when absent).",
            example="4",
        ),
        o.Field(
            "tolerance",
            o.NumberType(),
            "Relative change below which no scaling happens.",
            default=0.1,
            example="0.1",
        ),
        o.Field(
            "fallback",
            o.IntType(minimum=0),
            "Instances to run while the backlog cannot be "
            "read (otherwise the current count holds).",
            example="2",
        ),
        o.Field(
            "drain_timeout",
            o.DurationType(),
            "Time an instance gets to finish in-flight messages when stopped, before it is killed.",
            default=DEFAULT_DRAIN_TIMEOUT,
            example="30s",
        ),
    ),
    label=False,
    backend_kind="scaler",
    backend_field="backend",
)

FLOW = o.BlockSchema(
    "flow",
    "The flow's metadata and defaults; at most one per flow.",
    (
        o.Field("description", o.StringType(), "What the flow does.", example='"Nightly export"'),
        o.Field(
            "timezone",
            o.StringType(),
            "Default IANA time zone of schedules.",
            default="UTC",
            example='"Europe/Lisbon"',
        ),
        o.Field("timeout", o.DurationType(), "Default timeout of each job attempt.", example="1h"),
        o.Field(
            "retry",
            o.ObjectType(RETRY),
            "Default retry policy of jobs.",
            example="{ attempts = 3  backoff = exponential(10s, 5m) }",
        ),
        o.Field(
            "concurrency",
            o.IntType(minimum=1),
            "Most job attempts running at once.",
            default=16,
            example="8",
        ),
        o.Field(
            "executor",
            o.RefType("executor"),
            "Default executor of jobs (default: the built-in local one).",
            example="executor.cluster",
        ),
    ),
)

BROKER = o.BlockSchema(
    "broker",
    "A messaging platform that carries what jobs publish.",
    (
        o.Field("kind", o.StringType(), "Broker backend.", required=True, example='"kafka"'),
        o.Field(
            "description", o.StringType(), "What this broker is for.", example='"main cluster"'
        ),
    ),
    backend_kind="broker",
    backend_field="kind",
)

EXECUTOR = o.BlockSchema(
    "executor",
    "Where the attempts of the jobs that name it run: this machine, a Dask cluster, ...",
    (
        o.Field("kind", o.StringType(), "Executor backend.", required=True, example='"dask"'),
        o.Field(
            "description", o.StringType(), "What this executor is for.", example='"GPU cluster"'
        ),
    ),
    backend_kind="executor",
    backend_field="kind",
)

TOPIC = o.BlockSchema(
    "topic",
    "A topic (Kafka), stream (NATS) or queue on a broker.",
    (
        o.Field(
            "broker",
            o.RefType("broker"),
            "The broker that carries it; may be left out when "
            "the flow declares exactly one broker.",
            example="broker.main",
        ),
        o.Field(
            "partitions",
            o.IntType(minimum=1),
            "Partitions (Kafka, embedded).",
            default=1,
            example="12",
        ),
        o.Field(
            "subjects",
            o.ListType(o.StringType(), allow_single=True, min_items=1),
            "Subjects the stream captures (NATS); defaults to the topic's name.",
            example='["orders.>"]',
        ),
        o.Field("retention", o.DurationType(), "How long messages are kept.", example="7d"),
        o.Field("description", o.StringType(), "What flows through it.", example='"new orders"'),
    ),
)

POOL = o.BlockSchema(
    "pool",
    "A limited resource shared by jobs, such as connections to a database.",
    (
        o.Field(
            "slots",
            o.IntType(minimum=1),
            "How many attempts may hold a slot at once.",
            required=True,
            example="4",
        ),
        o.Field("description", o.StringType(), "What the pool guards.", example='"warehouse db"'),
    ),
)

JOB = o.BlockSchema(
    "job",
    "A unit of work: a Python callable or a command, run on a schedule or after other jobs.",
    (
        o.Field("description", o.StringType(), "What the job does.", example='"export orders"'),
        o.Field(
            "schedule",
            o.ScheduleType(),
            "When the job starts by itself.",
            example='cron("0 2 * * *")',
        ),
        o.Field(
            "timezone",
            o.StringType(),
            "IANA time zone of the schedule (default: the flow's).",
            example='"America/New_York"',
        ),
        o.Field(
            "catch_up",
            o.EnumType(CATCH_UP_POLICIES),
            "Instants missed while the orchestrator "
            "was down: skip them, run the latest once, or run all.",
            default="latest",
            example="all",
        ),
        o.Field(
            "overlap",
            o.EnumType(OVERLAP_POLICIES),
            "When an instant comes while the previous "
            "run is still going: skip it, queue it, or run both.",
            default="skip",
            example="queue",
        ),
        o.Field("run", o.CallableType(), "Python callable to run.", example='"shop.jobs:extract"'),
        o.Field(
            "command",
            o.ListType(o.StringType(secretable=True), min_items=1),
            "Program and arguments (argv; no shell). A string with `shell = true`.",
            example='["python", "-m", "shop.report"]',
        ),
        o.Field(
            "shell",
            o.BoolType(),
            "Run `command`, a string, through /bin/sh.",
            default=False,
            example="true",
        ),
        o.Field(
            "publishes",
            o.ListType(o.RefType("topic"), allow_single=True),
            "Topics the job publishes to.",
            example="topic.orders",
        ),
        o.Field(
            "publish_stdout",
            o.BoolType(),
            "Publish each line a command prints to its (single) `publishes` topic.",
            default=False,
            example="true",
        ),
        o.Field(
            "after",
            o.ListType(o.RefType("job"), allow_single=True),
            "Jobs this one depends on; `flow.FLOW.job.NAME` names a job of another flow.",
            example="[job.extract]",
        ),
        o.Field(
            "trigger",
            o.EnumType(TRIGGER_RULES),
            "When the dependencies let the job start.",
            default="all_success",
            example="all_done",
        ),
        o.Field(
            "retry",
            o.ObjectType(RETRY),
            "Retry policy (default: the flow's).",
            example="{ attempts = 3 }",
        ),
        o.Field(
            "timeout",
            o.DurationType(),
            "Longest an attempt may run (default: the flow's).",
            example="15m",
        ),
        o.Field(
            "pool", o.RefType("pool"), "Pool the job takes slots from.", example="pool.warehouse_db"
        ),
        o.Field(
            "pool_slots", o.IntType(minimum=1), "Slots one attempt takes.", default=1, example="2"
        ),
        o.Field(
            "resources",
            o.ObjectType(RESOURCES),
            "CPU, memory, GPUs (and the executor's own resources) one attempt needs.",
            example="{ cpu = 2  memory = 4Gi }",
        ),
        o.Field(
            "executor",
            o.RefType("executor"),
            "Executor that runs its attempts (default: the flow's, else the built-in local one).",
            example="executor.cluster",
        ),
        o.Field(
            "params",
            o.MapType(o.LiteralType()),
            "Parameters passed to the job.",
            example='{ region = "eu" }',
        ),
        o.Field(
            "env",
            o.MapType(o.StringType(secretable=True)),
            "Environment of the job.",
            example='{ DB_URL = secret("DB_URL") }',
        ),
    ),
)

CONSUMER = o.BlockSchema(
    "consumer",
    "A group of instances that drain a topic through a handler.",
    (
        o.Field(
            "description", o.StringType(), "What the consumer does.", example='"order workers"'
        ),
        o.Field(
            "consumes", o.RefType("topic"), "Topic to drain.", required=True, example="topic.orders"
        ),
        o.Field(
            "group",
            o.StringType(),
            "Consumer group (default: the consumer's name).",
            example='"order-workers"',
        ),
        o.Field(
            "run",
            o.CallableType(),
            "Handler called with each message.",
            required=True,
            example='"shop.workers:handle"',
        ),
        o.Field(
            "batch_size",
            o.IntType(minimum=1),
            "Most messages one fetch asks for (never more than the free in-flight slots).",
            default=10,
            example="500",
        ),
        o.Field(
            "max_in_flight",
            o.IntType(minimum=1),
            "Most messages one instance holds (fetched, not yet acknowledged) and handles at once.",
            default=10,
            example="1000",
        ),
        o.Field(
            "dead_letter",
            o.RefType("topic"),
            "Where a message goes after `max_failures` handler failures.",
            example="topic.orders_dlq",
        ),
        o.Field(
            "max_failures",
            o.IntType(minimum=1),
            "Handler failures of one message before it is "
            "dead-lettered (or dropped with an error when there is no dead-letter topic).",
            default=5,
            example="3",
        ),
        o.Field(
            "env",
            o.MapType(o.StringType(secretable=True)),
            "Environment of each instance.",
            example='{ API_KEY = secret("API_KEY") }',
        ),
        o.Field(
            "params",
            o.MapType(o.LiteralType()),
            "Parameters passed to the handler.",
            example='{ mode = "fast" }',
        ),
        o.Field(
            "scale",
            o.ObjectType(SCALE),
            "Backlog-driven scaling of instances.",
            example="{ max = 12  lag_per_instance = 500 }",
        ),
    ),
)

NOTIFY = o.BlockSchema(
    "notify",
    "Where events (failures, retries, ...) are sent.",
    (
        o.Field("kind", o.StringType(), "Notifier backend.", required=True, example='"webhook"'),
        o.Field(
            "on",
            o.ListType(o.EnumType(NOTIFY_EVENTS), allow_single=True, min_items=1),
            "Events that trigger it.",
            default=("failure", "retries_exhausted"),
            example="[failure, retries_exhausted]",
        ),
        o.Field(
            "jobs",
            o.ListType(o.RefType("job"), allow_single=True),
            "Only events of these jobs (default: all).",
            example="[job.extract]",
        ),
    ),
    backend_kind="notifier",
    backend_field="kind",
)

BLOCKS: Mapping[str, o.BlockSchema] = {
    s.type: s for s in (FLOW, BROKER, TOPIC, POOL, JOB, CONSUMER, NOTIFY, EXECUTOR)
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


# the names the plugin API took over: importing them from here warns (one release)
_MOVED = frozenset(
    {
        "BackendSpec",
        "BackoffType",
        "BlockSchema",
        "BoolType",
        "CallableType",
        "Catalog",
        "DurationType",
        "EnumType",
        "Field",
        "IntType",
        "ListType",
        "LiteralType",
        "MapType",
        "NumberType",
        "ObjectType",
        "RefType",
        "ScheduleType",
        "SizeType",
        "StringType",
        "ValueType",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"tideflow.compiler.schema.{name} moved: import it from tideflow.plugins.api",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(o, name)
