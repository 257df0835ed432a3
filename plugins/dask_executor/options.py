"""The `dask` executor's option schema, apart from the class so that the compiler
checks an `executor "NAME" { kind = "dask" ... }` block without importing
dask.distributed."""

from __future__ import annotations

from typing import Final

from tideflow.plugins.api.options import DurationType, Field, LiteralType, MapType, StringType

#: where `dask scheduler` listens unless told otherwise
DEFAULT_SCHEDULER: Final = "tcp://127.0.0.1:8786"
#: the first part of every Dask name an orchestrator gives its attempts
DEFAULT_NAMESPACE: Final = "tideflow"

DASK_EXECUTOR: Final = (
    Field(
        "scheduler",
        StringType(secretable=True),
        "Address of the `dask scheduler` the attempts are submitted to.",
        default=DEFAULT_SCHEDULER,
        example='env("DASK_SCHEDULER", "tcp://127.0.0.1:8786")',
    ),
    Field(
        "connect_timeout",
        DurationType(),
        "Longest the orchestrator waits for the scheduler to answer when it connects.",
        default=10.0,
        example="30s",
    ),
    Field(
        "worker_resources",
        MapType(LiteralType()),
        "The Dask resources of the largest worker, as `dask worker --resources` declares "
        "them: a job's `gpu` asks for `GPU`, its `cpu` and `memory` for `CPU` and "
        "`MEMORY` when declared here; a job needing more than this never compiles.",
        example="{ GPU = 1, CPU = 8, MEMORY = 32Gi }",
    ),
    Field(
        "tls_ca_file",
        StringType(),
        "CA certificate the scheduler's certificate is checked against; with `tls_cert` "
        "and `tls_key`, the connection is TLS (a `tls://` scheduler). Relative to the flow "
        "file's directory.",
        example='"/etc/dask/ca.pem"',
    ),
    Field(
        "tls_cert",
        StringType(),
        "Certificate the orchestrator presents to the scheduler (PEM).",
        example='"/etc/dask/tideflow.pem"',
    ),
    Field(
        "tls_key",
        StringType(),
        "Private key of `tls_cert` (PEM).",
        example='"/etc/dask/tideflow.key"',
    ),
    Field(
        "namespace",
        StringType(pattern=r"[A-Za-z0-9_.-]+", pattern_doc="letters, digits, `_`, `.`, `-`"),
        "First part of the Dask keys of this orchestrator's attempts; orchestrators with "
        "different stores that share a cluster each need their own.",
        default=DEFAULT_NAMESPACE,
        example='"shop-prod"',
    ),
)
