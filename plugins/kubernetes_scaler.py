"""The `kubernetes` scaler: consumer instances are the replicas of a Deployment or
StatefulSet, set through its scale subresource.

What it reads and writes
    `scale(n)` sends `PATCH /apis/apps/v1/namespaces/NS/deployments/NAME/scale`
    (or `statefulsets`) with `{"spec": {"replicas": n}}`, which the official client
    sends as a strategic merge patch. The patch carries no resourceVersion, so the
    last writer wins: tideflow owns the replica count of the workload it scales
    (point no HorizontalPodAutoscaler or KEDA ScaledObject at the same workload).
    `current()` reads the Scale back and returns `spec.replicas`: the instances
    asked for, running or starting, as `Scaler.current` defines it. `ready()` reads
    the workload's `status.readyReplicas`, the pods that passed their readiness
    probe, for the dashboard; it lags behind `current()` while pods start and stop.

Configuration
    With `kubeconfig`, that file (`~` expanded, relative to the flow file's
    directory) and its current context, or `context`. Without it: the pod's
    service account when the orchestrator runs in a cluster
    (`KUBERNETES_SERVICE_HOST` is set) and no `context` is given; otherwise
    `$KUBECONFIG` or `~/.kube/config`. The client is made on first use, not in the
    constructor, so a flow compiles and the orchestrator starts without a cluster.

Calls
    The official client is synchronous: every call runs in a worker thread
    (`asyncio.to_thread`), never on the event loop, with a timeout of
    `REQUEST_TIMEOUT` seconds. A 409 Conflict, 429 Too Many Requests, a 5xx answer
    or a connection failure is tried again, `ATTEMPTS` times in all, after a short
    growing delay (0.1 s, doubling, at most 1 s, less up to half of it as jitter;
    longer when a `Retry-After` asks for it, up to 1 s); then the call fails with a
    `BackendError` that says what happened. A 401 says the credentials were
    refused; a 403 names the verb and resource the orchestrator's Role must grant;
    a 404 names the missing workload and its namespace. The configuration, the
    retries' timing and the reading of error answers are `kubernetes_common`'s,
    shared with the `kubernetes` executor.

Closing
    `aclose()` releases the client's connections. The workload keeps its replica
    count: an orchestrator that restarts finds the consumers as it left them, and
    scales to zero explicitly when it means to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final

from . import builtin_options
from .api import (
    BackendClosedError,
    BackendContext,
    BackendError,
    BackendRegistry,
    Field,
    Scaler,
    hookimpl,
)
from .kubernetes_common import (
    ATTEMPTS,
    FIRST_BACKOFF,
    REQUEST_TIMEOUT,
    RETRIED_STATUSES,
    ClusterClient,
    backoff,
    connect,
    failure_reason,
    resolve_kubeconfig,
    retry_after,
    status_message,
)

if TYPE_CHECKING:
    from kubernetes.client import AppsV1Api
    from tideflow.compiler.ir import ConsumerNode

__all__ = [
    "ATTEMPTS",
    "KubernetesScaler",
    "WorkloadNotFoundError",
    "tideflow_register_scalers",
]

log = logging.getLogger(__name__)

INT32_MAX: Final = 2**31 - 1


class WorkloadNotFoundError(BackendError):
    """The Deployment or StatefulSet to scale does not exist (404)."""


@dataclass(frozen=True, slots=True)
class WorkloadKind:
    """How the scaler reaches one kind of workload through the client."""

    option: str  # the `resource` option's value
    plural: str  # the API's resource name, as RBAC rules name it
    read_scale: str  # AppsV1Api method names
    patch_scale: str
    read: str


WORKLOAD_KINDS: Final[Mapping[str, WorkloadKind]] = {
    "deployment": WorkloadKind(
        "deployment",
        "deployments",
        "read_namespaced_deployment_scale",
        "patch_namespaced_deployment_scale",
        "read_namespaced_deployment",
    ),
    "statefulset": WorkloadKind(
        "statefulset",
        "statefulsets",
        "read_namespaced_stateful_set_scale",
        "patch_namespaced_stateful_set_scale",
        "read_namespaced_stateful_set",
    ),
}


@dataclass(frozen=True, slots=True)
class _Connection:
    cluster: ClusterClient
    apps: AppsV1Api

    @property
    def host(self) -> str:
        return self.cluster.host

    @property
    def source(self) -> str:  # where the configuration came from, for messages
        return self.cluster.source


class KubernetesScaler(Scaler):
    """Replicas of a Deployment or StatefulSet, set through the scale subresource.

    `current()` is the workload's `spec.replicas`; `ready()` its
    `status.readyReplicas`. `aclose()` leaves the replicas as they are.
    """

    name: ClassVar[str] = "kubernetes"
    options: ClassVar[tuple[Field, ...]] = builtin_options.KUBERNETES_SCALER

    def __init__(
        self,
        config: Mapping[str, Any],
        consumer: ConsumerNode,
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, consumer, context=context)
        self.workload_name: str = self.config["name"]
        self.namespace: str = self.config["namespace"]
        self.workload_kind = WORKLOAD_KINDS[self.config["resource"]]
        self.kubeconfig = resolve_kubeconfig(self.config.get("kubeconfig"), self.context.base_dir)
        self.kube_context: str | None = self.config.get("context")
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()
        self._closed = False
        self._grace_period_checked = False

    @property
    def workload(self) -> str:
        """`deployment "order-workers" in namespace "shop"`, as messages name it."""
        return f'{self.workload_kind.option} "{self.workload_name}" in namespace "{self.namespace}"'

    # --- the Scaler interface ----------------------------------------------------------

    async def current(self) -> int:
        """`spec.replicas` of the workload's Scale: instances running or starting."""
        scale = await self._call(
            "get", f"{self.workload_kind.plural}/scale", self.workload_kind.read_scale
        )
        # ScaleSpec.replicas is `omitempty`: a workload at zero has `spec: {}`
        return int(scale.spec.replicas or 0) if scale.spec is not None else 0

    async def scale(self, instances: int) -> None:
        """Set `spec.replicas` to `instances` (≥ 0; `ValueError` otherwise)."""
        if isinstance(instances, bool) or not 0 <= instances <= INT32_MAX:
            raise ValueError(f"instances must be between 0 and {INT32_MAX}, not {instances!r}")
        await self._call(
            "patch",
            f"{self.workload_kind.plural}/scale",
            self.workload_kind.patch_scale,
            body={"spec": {"replicas": instances}},
        )

    async def ready(self) -> int:
        """`status.readyReplicas` of the workload: pods that passed their readiness
        probe. On the first read, logs a warning when the pod template's
        `terminationGracePeriodSeconds` is shorter than the consumer's
        `drain_timeout` (pods would be killed before they finish draining)."""
        workload = await self._call("get", self.workload_kind.plural, self.workload_kind.read)
        if not self._grace_period_checked:
            self._grace_period_checked = True
            self._check_grace_period(workload)
        status = workload.status
        return int(status.ready_replicas or 0) if status is not None else 0

    async def aclose(self) -> None:
        """Release the client's connections; the workload keeps its replicas."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.cluster.client.close()  # type: ignore[no-untyped-call]
            except Exception:  # closing must not fail because the client broke earlier
                log.debug("closing the Kubernetes client failed", exc_info=True)

    # --- calls -------------------------------------------------------------------------

    async def _call(self, verb: str, resource: str, method: str, **arguments: Any) -> Any:
        """`AppsV1Api.<method>(name, namespace, **arguments)` in a worker thread, tried
        again on answers worth trying again; raises `BackendError` otherwise."""
        self._check_open()
        connection = await self._connect()
        call = getattr(connection.apps, method)
        delay = FIRST_BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            self._check_open()
            try:
                return await asyncio.to_thread(
                    call,
                    self.workload_name,
                    self.namespace,
                    _request_timeout=REQUEST_TIMEOUT,
                    **arguments,
                )
            except Exception as exc:
                failure = self._failure(exc, verb, resource, connection, attempt)
                if isinstance(failure, WorkloadNotFoundError):
                    hint = await self._other_kind_hint(connection)
                    failure = WorkloadNotFoundError(f"{failure}{hint}")
                if isinstance(failure, BackendError):
                    raise failure from None
                await asyncio.sleep(backoff(delay, failure))
                delay *= 2
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _failure(
        self,
        exc: Exception,
        verb: str,
        resource: str,
        connection: _Connection,
        attempt: int,
    ) -> BackendError | float:
        """The error to raise for a failed call, or (when it is worth trying again and
        attempts are left) the least delay the server asked for."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        last = attempt >= ATTEMPTS
        if isinstance(exc, ApiException):
            status = int(exc.status or 0)
            if status in RETRIED_STATUSES and not last:
                return retry_after(exc.headers)
            return self._api_error(status, exc, verb, resource, connection)
        if isinstance(exc, HTTPError):
            if not last:
                return 0.0
            return BackendError(
                f"cannot reach the Kubernetes API at {connection.host} after {ATTEMPTS} "
                f"attempts: {failure_reason(exc)}"
            )
        if isinstance(exc, ValueError | TypeError):  # an answer the client could not read
            return BackendError(
                f"unexpected answer from the Kubernetes API at {connection.host} to "
                f"{verb} {resource} of {self.workload}: {exc}"
            )
        raise exc

    def _api_error(
        self, status: int, exc: Any, verb: str, resource: str, connection: _Connection
    ) -> BackendError:
        said = status_message(exc)
        if status == 401:
            return BackendError(
                f"the Kubernetes API at {connection.host} refused the credentials of "
                f"{connection.source} (401 Unauthorized): check that its token or "
                "client certificate is valid and has not expired"
            )
        if status == 403:
            return BackendError(
                f"forbidden to {verb} {resource} in namespace {json.dumps(self.namespace)}: "
                f'the orchestrator\'s Role must grant verbs ["get", "patch"] on '
                f'"{self.workload_kind.plural}/scale" and ["get"] on "{self.workload_kind.plural}" '
                f'in API group "apps" (see docs/kubernetes.md); the server said: {said}'
            )
        if status == 404:
            return WorkloadNotFoundError(
                f'{self.workload_kind.option} "{self.workload_name}" not found in namespace '
                f"{json.dumps(self.namespace)}"
            )
        if status == 409:
            return BackendError(
                f"conflicting updates of {self.workload}: still 409 Conflict after "
                f"{ATTEMPTS} attempts: {said}"
            )
        answer = f"{status} {exc.reason}" if exc.reason else str(status)
        if status in RETRIED_STATUSES:
            answer += f" {ATTEMPTS} times"
        return BackendError(
            f"the Kubernetes API at {connection.host} answered {answer} to {verb} {resource} "
            f"of {self.workload}: {said}"
        )

    async def _other_kind_hint(self, connection: _Connection) -> str:
        """A hint when the workload exists as the other kind (one attempt, no error)."""
        other = WORKLOAD_KINDS[
            "statefulset" if self.workload_kind.option == "deployment" else "deployment"
        ]
        try:
            await asyncio.to_thread(
                getattr(connection.apps, other.read_scale),
                self.workload_name,
                self.namespace,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except Exception:
            return ""
        return (
            f"; a {other.option} of that name exists there: "
            f"set `resource = {other.option}` in the scale block"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(f"the kubernetes scaler of {self.workload} is closed")

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is None:
                self._connection = await asyncio.to_thread(self._make_connection)
            return self._connection

    def _make_connection(self) -> _Connection:
        """Load the configuration (files, maybe an exec credential plugin: hence in a
        worker thread) and make the client."""
        from kubernetes import client

        cluster = connect(
            self.kubeconfig,
            self.kube_context,
            needs="the kubernetes scaler",
            block="the scale block",
        )
        return _Connection(cluster, client.AppsV1Api(cluster.client))

    def _check_grace_period(self, workload: Any) -> None:
        rule = self.consumer.scale
        drain_timeout = rule.drain_timeout if rule is not None else 30.0
        try:
            grace = workload.spec.template.spec.termination_grace_period_seconds
        except AttributeError:
            return
        grace = 30 if grace is None else grace  # the API's default
        if grace < drain_timeout:
            log.warning(
                "%s: terminationGracePeriodSeconds is %ss, shorter than drain_timeout (%gs) of "
                'consumer "%s": pods are killed before they finish draining; set it to at '
                "least %d",
                self.workload,
                grace,
                drain_timeout,
                self.consumer.name,
                math.ceil(drain_timeout),
            )


@hookimpl
def tideflow_register_scalers(registry: BackendRegistry[Scaler]) -> None:
    """Register the `kubernetes` scaler."""
    registry.register(KubernetesScaler)
