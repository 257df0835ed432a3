"""What the built-in Kubernetes backends share: finding the cluster's configuration,
making the official client, and reading the API server's error answers.

How the configuration is found (the `kubeconfig` and `context` options of the
`kubernetes` scaler and executor): with `kubeconfig`, that file (`~` expanded,
relative to the flow file's directory) and its current context, or `context`.
Without it: the pod's service account when the orchestrator runs in a cluster
(`KUBERNETES_SERVICE_HOST` is set) and no `context` is given; otherwise
`$KUBECONFIG` or `~/.kube/config`.

Calls are tried again on a 409, a 429, a 5xx answer or a connection failure,
`ATTEMPTS` times in all, after a short growing delay (`backoff`); each call has a
timeout of `REQUEST_TIMEOUT` seconds.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .api import BackendConfigError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "ATTEMPTS",
    "FIRST_BACKOFF",
    "IN_CLUSTER",
    "MAX_BACKOFF",
    "REQUEST_TIMEOUT",
    "RETRIED_STATUSES",
    "ClusterClient",
    "backoff",
    "connect",
    "failure_reason",
    "resolve_kubeconfig",
    "retry_after",
    "status_message",
]

#: Longest one API call may take, in seconds (connecting, then reading the answer).
REQUEST_TIMEOUT: Final = 10.0
#: Tries of one call when the answer is worth trying again (409, 429, 5xx, no answer).
ATTEMPTS: Final = 4
#: Delay before the first retry, and the most any retry waits, in seconds.
FIRST_BACKOFF: Final = 0.1
MAX_BACKOFF: Final = 1.0

IN_CLUSTER: Final = "the pod's service account (in-cluster configuration)"
RETRIED_STATUSES: Final = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ClusterClient:
    """A configured client: `client` and where its configuration came from."""

    client: ApiClient
    host: str
    source: str  # where the configuration came from, for messages


def resolve_kubeconfig(kubeconfig: str | None, base_dir: Path) -> Path | None:
    """The `kubeconfig` option as a path: `~` expanded, relative to `base_dir`."""
    if kubeconfig is None:
        return None
    path = Path(kubeconfig).expanduser()
    return path if path.is_absolute() else base_dir / path


def connect(
    kubeconfig: Path | None, context: str | None, *, needs: str, block: str
) -> ClusterClient:
    """Load the configuration (files, maybe an exec credential plugin: call it in a
    worker thread) and make the client. `needs` names the backend for the install
    advice ("the kubernetes executor"), `block` the block whose options say where
    the configuration is ("the executor block"). Raises `BackendConfigError`."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise BackendConfigError(
            f"{needs} needs the `kubernetes` package: pip install 'tideflow[k8s]'"
        ) from None
    configuration = client.Configuration()
    source = _configuration_source(kubeconfig, context, block)
    described = IN_CLUSTER if source is None else source[1]
    try:
        if source is None:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=source[0],
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError, ValueError) as exc:
        raise BackendConfigError(
            f"cannot load the Kubernetes configuration from {described}: {exc}"
        ) from None
    # retries are the backend's own, with backoff, so urllib3 makes one attempt
    configuration.retries = False
    return ClusterClient(client.ApiClient(configuration), configuration.host, described)


def _configuration_source(
    kubeconfig: Path | None, context: str | None, block: str
) -> tuple[str, str] | None:
    """(kubeconfig path(s), description), or None for the in-cluster configuration."""
    named = f" (context {json.dumps(context)})" if context else ""
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise BackendConfigError(
                f"kubeconfig file {kubeconfig} (option `kubeconfig`) does not exist"
            )
        return str(kubeconfig), f"kubeconfig {kubeconfig}{named}"
    if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
        return None
    # KUBECONFIG may list several files, which the client merges
    paths = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    if not any(Path(p).is_file() for p in paths.split(os.pathsep) if p):
        raise BackendConfigError(
            "no Kubernetes configuration: not running in a pod (KUBERNETES_SERVICE_HOST "
            f"is unset) and no kubeconfig at {paths}; set `kubeconfig` in {block}"
        )
    return paths, f"kubeconfig {paths}{named}"


def backoff(delay: float, asked: float) -> float:
    """Seconds to sleep before the next try: the growing `delay` or what the server
    `asked` for, at most `MAX_BACKOFF`, less up to half as jitter (so that clients
    that failed together do not retry together)."""
    return min(max(delay, asked), MAX_BACKOFF) * random.uniform(0.5, 1)


def retry_after(headers: Any) -> float:
    """Seconds a 429 or 503 answer's `Retry-After` asks for (0 when absent)."""
    try:
        return float((headers or {}).get("Retry-After") or 0)
    except (TypeError, ValueError):
        return 0.0


def status_message(exc: Any) -> str:
    """The `message` of the Status object an error answer carries, else its reason."""
    try:
        document = json.loads(exc.body or "")
    except (TypeError, ValueError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    return f"{exc.status} {exc.reason or ''}".strip()


def failure_reason(exc: BaseException) -> str:
    """What a connection failure says (MaxRetryError wraps the cause)."""
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__
