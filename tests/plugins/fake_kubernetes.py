"""A small stand-in for the Kubernetes API server: the scale subresource of
Deployments and StatefulSets, for testing scalers without a cluster.

No Kubernetes API server can run on this machine (nor on CI's), so the
`kubernetes` scaler's tests talk to this fake instead. It implements what the
Kubernetes API reference documents for the paths a scaler uses, and nothing else:

- `GET .../namespaces/{ns}/{deployments|statefulsets}/{name}/scale` returns an
  `autoscaling/v1` Scale;
- `PATCH` of the same path, with `application/merge-patch+json` or
  `application/strategic-merge-patch+json` (the official Python client sends the
  latter for an object body), applies the patch to the Scale;
- `PUT` of the same path replaces the Scale; a stale `metadata.resourceVersion`
  answers 409 Conflict;
- `GET .../namespaces/{ns}/{deployments|statefulsets}/{name}` returns the workload,
  whose `status.readyReplicas` a test can hold back (`ready_follows_spec`).

The shapes follow the API reference's Scale page
(https://kubernetes.io/docs/reference/kubernetes-api/definitions/scale-v1-autoscaling/)
and the Go types behind it (k8s.io/api autoscaling/v1 types.go: `spec.replicas`
is `omitempty`, `status.replicas` is not, `status.selector` is the selector in
query-parameter form). Errors are `Status` objects shaped as the API server's
(k8s.io/apimachinery/pkg/api/errors: NewNotFound, NewConflict, NewInvalid,
NewForbidden, NewUnauthorized). Every request must carry the bearer token; a
test can deny a verb on a resource (RBAC) and inject failures (`fail_next`).

Usage::

    with FakeKubernetes() as api:
        api.add_workload("deployments", "order-workers", namespace="shop", replicas=0)
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")

The server listens on a free loopback port and serves each connection in a
thread; its state is guarded by one lock, so tests may read and change it while
a client is talking to it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

__all__ = [
    "FakeKubernetes",
    "RecordedRequest",
    "WorkloadState",
]

#: The workload resources the fake serves, by plural resource name.
KINDS: Final[Mapping[str, str]] = {"deployments": "Deployment", "statefulsets": "StatefulSet"}

#: PATCH content types the fake accepts. For a Scale, a strategic merge patch is
#: a JSON merge patch: the type has no list fields with a patch strategy.
MERGE_PATCH_TYPES: Final = frozenset(
    {"application/merge-patch+json", "application/strategic-merge-patch+json"}
)

# largest value of an int32 field (spec.replicas is an int32)
INT32_MAX: Final = 2**31 - 1

#: Longest a request is held while the server is paused, in seconds.
PAUSE_LIMIT: Final = 10.0

# HTTP verbs as RBAC names them
VERBS: Final[Mapping[str, str]] = {"GET": "get", "PATCH": "patch", "PUT": "update"}


@dataclass
class WorkloadState:
    """One Deployment or StatefulSet as the fake keeps it (mutable, under the lock)."""

    resource: str  # "deployments" | "statefulsets"
    namespace: str
    name: str
    replicas: int
    labels: dict[str, str]
    termination_grace_period: int
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    resource_version: int = 1
    generation: int = 1
    # pods that exist (status.replicas) and pods that are ready (status.readyReplicas)
    pods: int = 0
    ready: int = 0

    @property
    def kind(self) -> str:
        return KINDS[self.resource]

    @property
    def selector(self) -> str:
        """The label selector in query-parameter form, as ScaleStatus.selector holds it."""
        return ",".join(f"{key}={value}" for key, value in sorted(self.labels.items()))


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received (after its body was read)."""

    method: str
    path: str
    content_type: str | None
    body: Any  # the parsed JSON body, or None
    status: int


@dataclass
class _Fault:
    status: int
    count: int
    method: str | None


class FakeKubernetes:
    """The fake API server. `start()` (or `with`) serves on `url`; `close()` stops it.

    `token` is the bearer token every request must carry (401 otherwise);
    `user` is the name forbidden requests report, as the API server does.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        user: str = "system:serviceaccount:default:tideflow",
    ) -> None:
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.user = user
        #: When true (the default), ready pods follow the spec at once; when false,
        #: `status.readyReplicas` stays where it is until `set_ready` moves it.
        self.ready_follows_spec = True
        self.requests: list[RecordedRequest] = []
        self._workloads: dict[tuple[str, str, str], WorkloadState] = {}
        self._denied: set[tuple[str, str]] = set()
        self._allowed: frozenset[tuple[str, str]] | None = None
        self._running = threading.Event()
        self._running.set()
        self._held = 0
        self._faults: list[_Fault] = []
        self._next_resource_version = 100
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free loopback port and serve in a background thread."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and drop open connections; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Kubernetes API server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def write_kubeconfig(
        self,
        path: Path,
        *,
        context: str = "fake",
        namespace: str | None = None,
        token: str | None = None,
    ) -> Path:
        """Write a kubeconfig whose `context` (also the current one) points at this
        server with the bearer token (`token` overrides it, to test a wrong one).
        JSON is YAML, so the file needs no YAML writer."""
        context_entry: dict[str, str] = {"cluster": "fake", "user": "fake"}
        if namespace is not None:
            context_entry["namespace"] = namespace
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token or self.token}}],
            "contexts": [{"name": context, "context": context_entry}],
            "current-context": context,
        }
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path

    # --- state a test sets up and inspects ---------------------------------------------

    def add_workload(
        self,
        resource: str,
        name: str,
        *,
        namespace: str = "default",
        replicas: int = 1,
        labels: Mapping[str, str] | None = None,
        termination_grace_period: int = 30,
    ) -> WorkloadState:
        """Create a Deployment (`resource="deployments"`) or StatefulSet
        (`"statefulsets"`); its pods are all up and ready."""
        if resource not in KINDS:
            raise ValueError(f"resource must be one of {sorted(KINDS)}, not {resource!r}")
        with self._lock:
            state = WorkloadState(
                resource=resource,
                namespace=namespace,
                name=name,
                replicas=replicas,
                labels=dict(labels or {"app": name}),
                termination_grace_period=termination_grace_period,
                resource_version=self._bump(),
                pods=replicas,
                ready=replicas,
            )
            self._workloads[(resource, namespace, name)] = state
            return copy.copy(state)

    def workload(self, resource: str, name: str, *, namespace: str = "default") -> WorkloadState:
        """A snapshot of a workload (KeyError when there is none)."""
        with self._lock:
            return copy.copy(self._workloads[(resource, namespace, name)])

    def set_replicas(
        self, resource: str, name: str, replicas: int, *, namespace: str = "default"
    ) -> None:
        """Change `spec.replicas` as another client would (`kubectl scale`): the
        resourceVersion moves on, so a PUT carrying the old one conflicts."""
        with self._lock:
            self._set_spec(self._workloads[(resource, namespace, name)], replicas)

    def set_ready(
        self, resource: str, name: str, ready: int, *, namespace: str = "default"
    ) -> None:
        """Set `status.readyReplicas` (pods that passed their readiness probe)."""
        with self._lock:
            state = self._workloads[(resource, namespace, name)]
            state.ready = ready
            state.resource_version = self._bump()

    def deny(self, verb: str, resource: str) -> None:
        """Answer 403 to `verb` ("get", "patch", "update") on `resource`
        ("deployments", "deployments/scale", ...), as RBAC would."""
        with self._lock:
            self._denied.add((verb, resource))

    def allow_only(self, grants: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> None:
        """Answer 403 to every (verb, resource) pair not in `grants`, as a Role that
        grants only those would."""
        with self._lock:
            self._allowed = frozenset(grants)

    def pause(self) -> None:
        """Hold every request that arrives until `resume()` (at most `PAUSE_LIMIT`
        seconds each): a server that is slow to answer."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def held(self) -> int:
        """Requests waiting because the server is paused."""
        with self._lock:
            return self._held

    def fail_next(self, status: int, count: int = 1, *, method: str | None = None) -> None:
        """Answer the next `count` requests (of `method`, when given) with a `status`
        error (409, 429, 500, 503, ...) instead of serving them."""
        with self._lock:
            self._faults.append(_Fault(status, count, method))

    def requests_to(self, method: str, suffix: str = "") -> list[RecordedRequest]:
        """The recorded requests of `method` whose path ends with `suffix`."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # --- what the handler calls ----------------------------------------------------------

    def _wait_while_paused(self) -> None:
        if self._running.is_set():
            return
        with self._lock:
            self._held += 1
        try:
            self._running.wait(PAUSE_LIMIT)
        finally:
            with self._lock:
                self._held -= 1

    def _bump(self) -> int:
        self._next_resource_version += 1
        return self._next_resource_version

    def _set_spec(self, state: WorkloadState, replicas: int) -> None:
        if replicas == state.replicas:
            return  # an update that changes nothing keeps the resourceVersion
        state.replicas = replicas
        state.generation += 1
        state.pods = replicas  # the controller creates and deletes pods at once
        if self.ready_follows_spec:
            state.ready = replicas
        state.resource_version = self._bump()

    def _take_fault(self, method: str) -> int | None:
        for fault in self._faults:
            if fault.method in (None, method) and fault.count > 0:
                fault.count -= 1
                return fault.status
        return None

    def _handle(
        self, method: str, path: str, authorization: str | None, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            code, document = self._route(method, path, authorization, content_type, body)
            status = int(code)
            self.requests.append(RecordedRequest(method, path, content_type, body, status))
            return status, document

    def _route(
        self, method: str, path: str, authorization: str | None, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if authorization != f"Bearer {self.token}":
            return _status(HTTPStatus.UNAUTHORIZED, "Unauthorized", "Unauthorized")
        fault = self._take_fault(method)
        if fault is not None:
            return _injected(fault)
        route = _parse_path(path)
        if route is None:
            return _status(
                HTTPStatus.NOT_FOUND, "NotFound", "the server could not find the requested resource"
            )
        resource, namespace, name, subresource = route
        verb = VERBS.get(method)
        if verb is None or (subresource is None and method != "GET"):
            return _status(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                f"the fake Kubernetes API serves no {method} on {path}",
            )
        rbac_resource = resource if subresource is None else f"{resource}/{subresource}"
        allowed = self._allowed is None or (verb, rbac_resource) in self._allowed
        if not allowed or (verb, rbac_resource) in self._denied:
            # NewForbidden(GroupResource, name, err) with the authorizer's reason
            # (k8s.io/apiserver .../handlers/responsewriters/errors.go)
            message = (
                f'{resource}.apps "{name}" is forbidden: User "{self.user}" cannot {verb} '
                f'resource "{rbac_resource}" in API group "apps" in the namespace "{namespace}"'
            )
            return _status(
                HTTPStatus.FORBIDDEN,
                "Forbidden",
                message,
                details={"name": name, "group": "apps", "kind": resource},
            )
        state = self._workloads.get((resource, namespace, name))
        if state is None:
            return _status(
                HTTPStatus.NOT_FOUND,
                "NotFound",
                f'{resource}.apps "{name}" not found',
                details={"name": name, "group": "apps", "kind": resource},
            )
        if subresource is None:
            return HTTPStatus.OK, _workload_document(state)
        if method == "GET":
            return HTTPStatus.OK, _scale_document(state)
        if method == "PATCH":
            return self._patch_scale(state, content_type, body)
        return self._put_scale(state, body)

    def _patch_scale(
        self, state: WorkloadState, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type not in MERGE_PATCH_TYPES:
            return _status(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                f"the fake Kubernetes API accepts PATCH bodies of types "
                f"{', '.join(sorted(MERGE_PATCH_TYPES))}, not {content_type!r}",
            )
        if not isinstance(body, dict):
            return _status(HTTPStatus.BAD_REQUEST, "BadRequest", "a merge patch must be an object")
        patched = _merge_patch(_scale_document(state), body)
        return self._update_scale(state, patched)

    def _put_scale(self, state: WorkloadState, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict):
            return _status(HTTPStatus.BAD_REQUEST, "BadRequest", "the body must be a Scale object")
        named = (body.get("metadata") or {}).get("name")
        if named != state.name:
            return _status(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f"the name of the object ({named}) does not match the name on the URL "
                f"({state.name})",
            )
        return self._update_scale(state, body)

    def _update_scale(
        self, state: WorkloadState, scale: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Store a new Scale: the preconditions the API server checks (uid, then
        resourceVersion), validation, then the write."""
        metadata = scale.get("metadata") or {}
        qualified = f"{state.resource}.apps"
        uid = metadata.get("uid")
        if uid and uid != state.uid:
            return _conflict(
                f"{state.resource}/scale.apps",
                state.name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {state.uid}",
            )
        version = metadata.get("resourceVersion")
        if version and version != str(state.resource_version):
            return _conflict(
                qualified,
                state.name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        # spec.replicas is omitted when 0 (`json:"replicas,omitempty"`)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int):
            return _status(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f"spec.replicas: cannot unmarshal {json.dumps(replicas)} into an int32",
            )
        if not 0 <= replicas <= INT32_MAX:
            detail = (
                "must be greater than or equal to 0"
                if replicas < 0
                else "must be less than or equal to 2147483647"
            )
            return _status(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "Invalid",
                f'Scale.autoscaling "{state.name}" is invalid: spec.replicas: '
                f"Invalid value: {replicas}: {detail}",
                details={
                    "name": state.name,
                    "group": "autoscaling",
                    "kind": "Scale",
                    "causes": [
                        {
                            "reason": "FieldValueInvalid",
                            "message": f"Invalid value: {replicas}: {detail}",
                            "field": "spec.replicas",
                        }
                    ],
                },
            )
        self._set_spec(state, replicas)
        return HTTPStatus.OK, _scale_document(state)


# --- documents ---------------------------------------------------------------------------


def _scale_document(state: WorkloadState) -> dict[str, Any]:
    """The workload's `autoscaling/v1` Scale, built as the API server's registry
    builds it (pkg/registry/apps/deployment/storage: scaleFromDeployment) and
    serialized by the field tags of k8s.io/api/autoscaling/v1 types.go."""
    spec: dict[str, Any] = {}
    if state.replicas:  # `json:"replicas,omitempty"`: a Scale at 0 has `spec: {}`
        spec["replicas"] = state.replicas
    status: dict[str, Any] = {"replicas": state.pods}  # required, never omitted
    if state.selector:
        status["selector"] = state.selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": state.name,
            "namespace": state.namespace,
            "uid": state.uid,
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": state.created,
        },
        "spec": spec,
        "status": status,
    }


def _workload_document(state: WorkloadState) -> dict[str, Any]:
    """The Deployment or StatefulSet (`apps/v1`), with the fields a scaler reads
    and the ones the API requires; zero counts in status are omitted, as the API
    server omits them (`omitempty`)."""
    spec: dict[str, Any] = {
        "replicas": state.replicas,  # a pointer: present even when 0
        "selector": {"matchLabels": dict(state.labels)},
        "template": {
            "metadata": {"labels": dict(state.labels)},
            "spec": {
                "containers": [
                    {
                        "name": "worker",
                        "image": "tideflow:latest",
                        "args": ["tideflow", "worker", "/etc/tideflow/flow.flow", state.name],
                    }
                ],
                "terminationGracePeriodSeconds": state.termination_grace_period,
            },
        },
    }
    status: dict[str, Any] = {"observedGeneration": state.generation}
    if state.resource == "statefulsets":
        spec["serviceName"] = state.name
        status["replicas"] = state.pods  # required in StatefulSetStatus
        status["availableReplicas"] = state.ready
    for key, value in (
        ("replicas", state.pods),
        ("updatedReplicas", state.pods),
        ("readyReplicas", state.ready),
        ("availableReplicas", state.ready),
    ):
        if value:
            status[key] = value
    return {
        "kind": state.kind,
        "apiVersion": "apps/v1",
        "metadata": {
            "name": state.name,
            "namespace": state.namespace,
            "uid": state.uid,
            "resourceVersion": str(state.resource_version),
            "generation": state.generation,
            "creationTimestamp": state.created,
            "labels": dict(state.labels),
        },
        "spec": spec,
        "status": status,
    }


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _status(
    code: HTTPStatus, reason: str, message: str, *, details: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """A `Status` object (meta/v1) as the API server writes errors."""
    document: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": int(code),
    }
    if details is not None:
        document["details"] = details
    return int(code), document


def _conflict(qualified: str, name: str, why: str) -> tuple[int, dict[str, Any]]:
    resource, _, group = qualified.partition(".")
    return _status(
        HTTPStatus.CONFLICT,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        details={"name": name, "group": group, "kind": resource},
    )


def _injected(code: int) -> tuple[int, dict[str, Any]]:
    reasons = {
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return _status(
        HTTPStatus(code), reasons.get(code, "Unknown"), f"injected failure ({code}) by the fake"
    )


def _parse_path(path: str) -> tuple[str, str, str, str | None] | None:
    """(resource, namespace, name, subresource) of a workload path, or None."""
    parts = path.split("?")[0].strip("/").split("/")
    if parts[:3] != ["apis", "apps", "v1"] or len(parts) not in (7, 8) or parts[3] != "namespaces":
        return None
    _, _, _, _, namespace, resource, name, *rest = parts
    if resource not in KINDS:
        return None
    if rest and rest != ["scale"]:
        return None
    return resource, namespace, name, rest[0] if rest else None


# --- HTTP --------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKubernetes

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Wake the threads waiting on kept-alive connections, so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    # keep-alive, as the API server: the client's connection pool reuses connections
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without this, Nagle's algorithm and the
    # client's delayed ACK add about 40 ms to every answer
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self._reply(*_status(HTTPStatus.BAD_REQUEST, "BadRequest", "the body is not JSON"))
                return
        self.server.fake._wait_while_paused()
        status, document = self.server.fake._handle(
            self.command,
            self.path,
            self.headers.get("Authorization"),
            self.headers.get("Content-Type"),
            body,
        )
        self._reply(status, document)

    def _reply(self, status: int, document: Mapping[str, Any]) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in `FakeKubernetes.requests`, not printed
