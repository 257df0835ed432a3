"""Option schemas of the built-in backends.

Each built-in backend class declares `options = <one of these tuples>`; they live
here, apart from the classes, so that the compiler can validate a flow without
importing client libraries such as confluent-kafka.
"""

from __future__ import annotations

from .api.options import (
    BoolType,
    DurationType,
    EnumType,
    Field,
    IntType,
    ListType,
    MapType,
    StringType,
)

SECRET_STRING = StringType(secretable=True)

EMBEDDED_BROKER = (
    Field(
        "path",
        StringType(),
        "SQLite file that holds the messages (relative to the flow file's directory).",
        default=".tideflow/broker.db",
        example='".tideflow/broker.db"',
    ),
    Field(
        "visibility_timeout",
        DurationType(),
        "Time after which a fetched but unacknowledged message is delivered again.",
        default=30.0,
        example="30s",
    ),
)

KAFKA_BROKER = (
    Field(
        "bootstrap",
        SECRET_STRING,
        "Bootstrap servers, `host:port[,host:port...]`.",
        required=True,
        example='env("KAFKA_BOOTSTRAP", "localhost:9092")',
    ),
    Field(
        "client_id",
        StringType(),
        "Client id reported to the cluster.",
        default="tideflow",
        example='"orders-flow"',
    ),
    Field(
        "security_protocol",
        EnumType(("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")),
        "How clients connect.",
        default="plaintext",
        example="sasl_ssl",
    ),
    Field(
        "sasl_mechanism",
        EnumType(("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")),
        "SASL mechanism.",
        example='"SCRAM-SHA-512"',
    ),
    Field("sasl_username", SECRET_STRING, "SASL user name.", example='env("KAFKA_USER")'),
    Field("sasl_password", SECRET_STRING, "SASL password.", example='secret("KAFKA_PASSWORD")'),
    Field("ssl_ca_location", StringType(), "CA certificate file.", example='"/etc/ssl/ca.pem"'),
    Field(
        "offset_reset",
        EnumType(("earliest", "latest")),
        "Where a group with no committed "
        "offset starts, and how its backlog is counted (KEDA's offsetResetPolicy).",
        default="latest",
        example="earliest",
    ),
    Field(
        "session_timeout",
        DurationType(),
        "Consumer group session timeout.",
        default=10.0,
        example="6s",
    ),
    Field(
        "heartbeat_interval",
        DurationType(),
        "Consumer group heartbeat interval.",
        default=1.0,
        example="500ms",
    ),
    Field(
        "request_timeout",
        DurationType(),
        "Longest a call waits for the cluster: a publish for every message's "
        "acknowledgement, offset and topic requests for their answer; then it fails.",
        default=30.0,
        example="10s",
    ),
    Field(
        "config",
        MapType(SECRET_STRING),
        "Further librdkafka settings, passed through to every client; a key prefixed "
        "`producer.`, `consumer.` or `admin.` goes to that client only.",
        example='{ "linger.ms" = "5" }',
    ),
)

NATS_BROKER = (
    Field(
        "servers",
        ListType(SECRET_STRING, allow_single=True, min_items=1),
        "Server URLs.",
        required=True,
        example='["nats://localhost:4222"]',
    ),
    Field("user", SECRET_STRING, "User name.", example='env("NATS_USER")'),
    Field("password", SECRET_STRING, "Password.", example='secret("NATS_PASSWORD")'),
    Field("token", SECRET_STRING, "Authentication token.", example='secret("NATS_TOKEN")'),
    Field("creds", StringType(), "Credentials file.", example='"/etc/nats/app.creds"'),
    Field(
        "ack_wait",
        DurationType(),
        "Time after which an unacknowledged message is delivered again.",
        default=30.0,
        example="30s",
    ),
    Field(
        "max_deliver",
        IntType(minimum=1),
        "Deliveries of one message before the server stops redelivering it.",
        default=20,
        example="10",
    ),
    Field(
        "backoff",
        ListType(DurationType()),
        "Redelivery delays after a negative acknowledgement.",
        example="[1s, 5s, 30s]",
    ),
    Field(
        "storage", EnumType(("file", "memory")), "Stream storage.", default="file", example="memory"
    ),
    Field("replicas", IntType(minimum=1), "Stream replicas.", default=1, example="3"),
    Field(
        "deduplicate",
        BoolType(),
        "Give every message a `Nats-Msg-Id`, so that JetStream drops the copies sent again "
        "after a lost connection (within the stream's duplicate window); costs about a "
        "tenth of the throughput.",
        default=True,
        example="false",
    ),
    Field(
        "timeout",
        DurationType(),
        "Longest a call waits for the server (connecting, publish and acknowledgement "
        "confirmations, stream and consumer set-up, backlog reads) before it fails; "
        "the connection keeps reconnecting.",
        default=10.0,
        example="5s",
    ),
    Field(
        "reconnect_wait",
        DurationType(),
        "Delay between attempts to reconnect to a server.",
        default=1.0,
        example="2s",
    ),
)

LOCAL_SCALER = (
    Field(
        "python",
        StringType(),
        "Python interpreter that runs `tideflow worker` (default: the orchestrator's).",
        example='"/opt/venv/bin/python"',
    ),
    Field(
        "restart_backoff",
        DurationType(),
        "First delay before restarting a crashed instance; doubles on each crash in a row.",
        default=1.0,
        example="1s",
    ),
    Field(
        "crash_loop_after",
        IntType(minimum=1),
        "Crashes in a row after which the consumer is reported as crash-looping.",
        default=5,
        example="5",
    ),
)

# how the Kubernetes scaler and executor find their cluster
KUBECONFIG = (
    Field(
        "kubeconfig",
        StringType(),
        "Kubeconfig file, relative to the flow file's directory (default: the pod's "
        "service account in a cluster, else $KUBECONFIG or ~/.kube/config).",
        example='"~/.kube/config"',
    ),
    Field(
        "context",
        StringType(),
        "Kubeconfig context (default: the kubeconfig's current one).",
        example='"prod"',
    ),
)

KUBERNETES_SCALER = (
    Field(
        "name",
        StringType(),
        "Deployment or StatefulSet to scale.",
        required=True,
        example='"order-workers"',
    ),
    Field(
        "resource",
        EnumType(("deployment", "statefulset")),
        "Kind of workload.",
        default="deployment",
        example="statefulset",
    ),
    Field(
        "namespace", StringType(), "Namespace of the workload.", default="default", example='"shop"'
    ),
    *KUBECONFIG,
)

WEBHOOK_NOTIFIER = (
    Field(
        "url",
        SECRET_STRING,
        "Where the JSON event is POSTed.",
        required=True,
        example='secret("OPS_WEBHOOK")',
    ),
    Field(
        "headers",
        MapType(SECRET_STRING),
        "Extra HTTP headers.",
        example='{ Authorization = secret("OPS_TOKEN") }',
    ),
    Field("timeout", DurationType(), "HTTP timeout.", default=10.0, example="5s"),
)

COMMAND_NOTIFIER = (
    Field(
        "command",
        ListType(SECRET_STRING, min_items=1),
        "Program run with the JSON event on its standard input.",
        required=True,
        example='["notify-send", "tideflow"]',
    ),
    Field("timeout", DurationType(), "Longest the command may run.", default=30.0, example="10s"),
    Field(
        "quiet", BoolType(), "Do not record the command's output.", default=False, example="true"
    ),
)

LOCAL_EXECUTOR = (
    Field(
        "isolate",
        BoolType(),
        "Run each attempt in a fresh Python process instead of a reused worker: slower "
        "to start, nothing shared between attempts (modules, globals, leaks).",
        default=False,
        example="true",
    ),
    Field(
        "python",
        StringType(),
        "Python interpreter for isolated attempts (default: the orchestrator's).",
        example='"/opt/venv/bin/python"',
    ),
)
