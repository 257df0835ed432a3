"""A small stand-in for the Kubernetes API server: the scale subresource of
Deployments and StatefulSets, for testing scalers, and batch/v1 Jobs with their
pods and pod logs, for testing the `kubernetes` executor, without a cluster.

No Kubernetes API server can run on this machine (nor on CI's), so the
`kubernetes` scaler's and executor's tests talk to this fake instead. It
implements what the Kubernetes API reference documents for the paths they use,
and nothing else. For the scaler:

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

For the executor (`_FakeJobs` below says how pods run):

- `POST`, `GET` (one, or a list with `labelSelector`) and `DELETE` (with a
  `propagationPolicy`: Orphan, the default for Jobs, Background or Foreground) of
  `/apis/batch/v1/namespaces/{ns}/jobs`; a Job gets one pod at a time, up to
  `backoffLimit` failures, and ends `Complete` or `Failed` (reason
  `BackoffLimitExceeded` or, past `activeDeadlineSeconds`, `DeadlineExceeded`),
  with the `SuccessCriteriaMet`/`FailureTarget` conditions before them, as the Job
  controller of Kubernetes 1.31 writes them; `ttlSecondsAfterFinished` deletes it;
- `GET` (one, or a list with `labelSelector`, e.g. `job-name=NAME`) and `DELETE`
  of `/api/v1/namespaces/{ns}/pods`, and `GET .../pods/{name}/log` (`container`,
  `timestamps`) as text;
- no watches: a client lists.

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
import os
import random
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
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
    "JobState",
    "PodState",
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
    message: str | None = None


# --- batch/v1 Jobs, their pods and the pods' logs ---------------------------------------

#: Job and pod paths, as (API group, resource) -> kind; "" is the core group
JOB_RESOURCES: Final[Mapping[tuple[str, str], str]] = {
    ("batch", "jobs"): "Job",
    ("", "pods"): "Pod",
    ("", "secrets"): "Secret",
}

#: Longest the fake waits for a killed pod's process to end before it gives up on it.
KILL_LIMIT: Final = 10.0

#: A termination message is cut to this many bytes, as the kubelet cuts it.
TERMINATION_MESSAGE_LIMIT: Final = 4096
#: FallbackToLogsOnError takes at most this much of the log's tail (lines, bytes).
FALLBACK_LINES: Final = 80
FALLBACK_BYTES: Final = 2048


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_nano() -> str:
    """An RFC 3339 time with nanoseconds, as the kubelet stamps log lines."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass
class PodState:
    """One pod of a Job as the fake keeps it (mutable, under the lock). Its one
    container runs as a local process unless the fake was told not to run pods."""

    namespace: str
    name: str
    job: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: dict[str, Any]
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=_now)
    resource_version: int = 1
    phase: str = "Pending"
    reason: str | None = None
    message: str | None = None
    conditions: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    log: list[tuple[str, str]] = field(default_factory=list)  # (time, line)
    process: subprocess.Popen[bytes] | None = None
    termination_file: Path | None = None
    deletion_timestamp: str | None = None
    removed: threading.Event = field(default_factory=threading.Event)
    # why the fake killed the process: its container then ends with this reason
    killed_for: str | None = None
    counted: bool = False  # the Job controller has counted its end

    @property
    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.spec["containers"][0]
        return container

    @property
    def started(self) -> bool:
        return "running" in self.state or "terminated" in self.state


@dataclass
class JobState:
    """One Job as the fake keeps it (mutable, under the lock)."""

    namespace: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    spec: dict[str, Any]
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: str = field(default_factory=_now)
    resource_version: int = 1
    status: dict[str, Any] = field(default_factory=dict)
    deletion_timestamp: str | None = None
    finalizers: list[str] = field(default_factory=list)
    timers: list[threading.Timer] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in self.status.get("conditions") or ()
        )


class _FakeJobs:
    """The batch/v1 Jobs part of `FakeKubernetes`: the API (create, get, list with a
    label selector, delete with a propagation policy), the Job controller (one pod
    per Job, `backoffLimit`, `activeDeadlineSeconds`, `ttlSecondsAfterFinished`)
    and a kubelet that runs each pod's container as a local process.

    The kubelet starts `command + args` in a session of its own, with the
    environment the manifest gives (`value`s, and `secretKeyRef`s resolved from the
    Secrets added with `add_secret`: a missing one leaves the container waiting
    with `CreateContainerConfigError`, as a kubelet does), plus PATH and HOME. The
    program `python` is this interpreter (`executables` maps others). The
    container's `terminationMessagePath` is a file of the fake's (every argument
    equal to it is replaced by that file's path), read when the process ends: its
    text, or with `FallbackToLogsOnError` and a failure and an empty file the log's
    tail, is the terminated state's `message`. stdout and stderr go to one log,
    each line stamped as it arrives. Deleting a pod (or its Job with a cascading
    policy, or the Job's deadline passing) sends SIGTERM to the process group,
    then SIGKILL after the pod's `terminationGracePeriodSeconds`.
    """

    _lock: threading.Lock
    _allowed: frozenset[tuple[str, str]] | None
    _denied: set[tuple[str, str]]
    user: str
    _jobs: dict[tuple[str, str], JobState]
    _pods: dict[tuple[str, str], PodState]
    _secrets: dict[tuple[str, str], dict[str, str]]
    _threads: list[threading.Thread]
    _pod_root: Path | None

    def _init_jobs(self) -> None:
        self._jobs = {}
        self._pods = {}
        self._secrets = {}
        self._threads = []
        self._pod_root = None
        #: When false, pods stay Pending (ContainerCreating) and nothing runs.
        self.run_pods = True
        #: Programs as a container names them -> what the fake runs.
        self.executables: dict[str, str] = {"python": sys.executable}

    def _bump(self) -> int:
        raise NotImplementedError  # FakeKubernetes's

    # --- state a test sets up and inspects ---------------------------------------------

    def add_secret(self, name: str, data: Mapping[str, str], *, namespace: str = "default") -> None:
        """Create (or replace) a Secret whose keys hold `data`'s values."""
        with self._lock:
            self._secrets[(namespace, name)] = dict(data)

    def job(self, name: str, *, namespace: str = "default") -> dict[str, Any] | None:
        """The Job as the API would return it, or None when there is none."""
        with self._lock:
            state = self._jobs.get((namespace, name))
            return None if state is None else _job_document(state)

    def job_names(self, *, namespace: str = "default") -> list[str]:
        with self._lock:
            return sorted(name for ns, name in self._jobs if ns == namespace)

    def pods_of(self, job: str, *, namespace: str = "default") -> list[PodState]:
        """The pods of a Job (the live objects: read them under no assumption)."""
        with self._lock:
            return [p for p in self._pods.values() if p.namespace == namespace and p.job == job]

    def delete_pod(self, name: str, *, namespace: str = "default", grace: float = 0) -> None:
        """Delete a pod as `kubectl delete pod --grace-period` would (the node was
        drained, or someone removed it): its process is killed and the Job controller
        counts the pod as failed."""
        with self._lock:
            pod = self._pods[(namespace, name)]
            self._terminate(pod, grace)

    def evict_pod(self, name: str, *, namespace: str = "default") -> None:
        """Evict a pod as a kubelet under memory pressure does: the process is
        killed, the pod stays, Failed with reason Evicted and a DisruptionTarget
        condition."""
        with self._lock:
            pod = self._pods[(namespace, name)]
            pod.reason = "Evicted"
            pod.message = "The node was low on resource: memory. "
            pod.conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": "The node was low on resource: memory. ",
                    "lastTransitionTime": _now(),
                }
            )
            pod.killed_for = "Error"
            self._kill(pod, 0)

    def wait_for_pod_process(
        self, job: str, *, namespace: str = "default", timeout: float = 30.0
    ) -> int:
        """The pid of the Job's pod's process, once it runs (AssertionError after
        `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for pod in self._pods.values():
                    if pod.namespace == namespace and pod.job == job and pod.process is not None:
                        return pod.process.pid
            time.sleep(0.02)
        raise AssertionError(f"no process started for Job {namespace}/{job} in {timeout}s")

    # --- the API -------------------------------------------------------------------------

    def _route_jobs(self, method: str, path: str, body: Any) -> tuple[int, dict[str, Any] | str]:
        parsed = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        route = _parse_core_path(parsed.path)
        if route is None:
            return _status(
                HTTPStatus.NOT_FOUND, "NotFound", "the server could not find the requested resource"
            )
        group, resource, namespace, name, subresource = route
        if query.get("watch") in ("true", "1"):
            return _status(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake Kubernetes API serves no watch (list instead)",
            )
        verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete"}.get(method)
        allowed_methods = {
            ("jobs", False): ("GET", "POST"),
            ("jobs", True): ("GET", "DELETE"),
            ("pods", False): ("GET",),
            ("pods", True): ("GET", "DELETE"),
            ("pods/log", True): ("GET",),
        }
        rbac_resource = resource if subresource is None else f"{resource}/{subresource}"
        if verb is None or method not in allowed_methods.get((rbac_resource, bool(name)), ()):
            return _status(
                HTTPStatus.METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                f"the fake Kubernetes API serves no {method} on {parsed.path}",
            )
        allowed = self._allowed is None or (verb, rbac_resource) in self._allowed
        if not allowed or (verb, rbac_resource) in self._denied:
            what = f"{resource}{'.' + group if group else ''}"
            return _status(
                HTTPStatus.FORBIDDEN,
                "Forbidden",
                f"{what}{f' {json.dumps(name)}' if name else ''} is forbidden: User "
                f'"{self.user}" cannot {verb} resource "{rbac_resource}" in API group '
                f'"{group}" in the namespace "{namespace}"',
                details={"name": name or "", "group": group, "kind": resource},
            )
        if resource == "jobs":
            if name is None:
                if method == "POST":
                    return self._create_job(namespace, body)
                return self._list(
                    self._jobs, namespace, query, _job_document, "JobList", "batch/v1"
                )
            job = self._jobs.get((namespace, name))
            if job is None:
                return _not_found("jobs.batch", name, "batch", "jobs")
            if method == "DELETE":
                return self._delete_job(job, body, query)
            return HTTPStatus.OK, _job_document(job)
        if name is None:
            return self._list(self._pods, namespace, query, _pod_document, "PodList", "v1")
        pod = self._pods.get((namespace, name))
        if pod is None:
            return _not_found("pods", name, "", "pods")
        if subresource == "log":
            return self._pod_log(pod, query)
        if method == "DELETE":
            grace = (body or {}).get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
            self._terminate(pod, float(grace) if grace is not None else None)
            return HTTPStatus.OK, _pod_document(pod)
        return HTTPStatus.OK, _pod_document(pod)

    def _list(
        self,
        objects: Mapping[tuple[str, str], Any],
        namespace: str,
        query: Mapping[str, str],
        document: Any,
        kind: str,
        api_version: str,
    ) -> tuple[int, dict[str, Any]]:
        try:
            selector = _parse_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return _status(HTTPStatus.BAD_REQUEST, "BadRequest", str(exc))
        items = [
            document(state)
            for (ns, _), state in sorted(objects.items())
            if ns == namespace and _selects(selector, state.labels)
        ]
        return HTTPStatus.OK, {
            "kind": kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(self._bump())},
            "items": items,
        }

    def _create_job(self, namespace: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("kind", "Job") != "Job":
            return _status(HTTPStatus.BAD_REQUEST, "BadRequest", "the body must be a Job")
        metadata = body.get("metadata") or {}
        name = metadata.get("name")
        problems = []
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
            problems.append(
                ("metadata.name", f"Invalid value: {json.dumps(name)}: a lowercase RFC 1123 label")
            )
        elif len(name) > 63:
            problems.append(("metadata.name", "must be no more than 63 characters"))
        spec = copy.deepcopy(body.get("spec") or {})
        template = spec.get("template") or {}
        pod_spec = template.get("spec") or {}
        if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append(
                (
                    "spec.template.spec.restartPolicy",
                    f"Unsupported value: {json.dumps(pod_spec.get('restartPolicy'))}: "
                    'supported values: "OnFailure", "Never"',
                )
            )
        containers = pod_spec.get("containers") or []
        if len(containers) != 1 or not containers[0].get("image"):
            problems.append(
                ("spec.template.spec.containers", "the fake runs one container with an image")
            )
        for label_key, label in {
            **(metadata.get("labels") or {}),
            **(template.get("metadata") or {}).get("labels", {}),
        }.items():
            if (
                not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", str(label))
                or len(str(label)) > 63
            ):
                problems.append(
                    (f"metadata.labels[{label_key}]", f"Invalid value: {json.dumps(label)}")
                )
        if problems:
            return _status(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                "Invalid",
                f'Job.batch "{name}" is invalid: '
                + ", ".join(f"{where}: {what}" for where, what in problems),
                details={
                    "name": name,
                    "group": "batch",
                    "kind": "Job",
                    "causes": [{"field": where, "message": what} for where, what in problems],
                },
            )
        assert isinstance(name, str)
        if (namespace, name) in self._jobs:
            return _status(
                HTTPStatus.CONFLICT,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                details={"name": name, "group": "batch", "kind": "jobs"},
            )
        job = JobState(
            namespace=namespace,
            name=name,
            labels=dict(metadata.get("labels") or {}),
            annotations=dict(metadata.get("annotations") or {}),
            spec=spec,
            resource_version=self._bump(),
        )
        # what the API server defaults and adds (a selector of its own)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        generated = {
            "batch.kubernetes.io/controller-uid": job.uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": job.uid,
            "job-name": name,
        }
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": job.uid}}
        template.setdefault("metadata", {}).setdefault("labels", {}).update(generated)
        if not job.labels:
            job.labels = dict(template["metadata"]["labels"])
        job.status = {"startTime": _now(), "active": 1, "ready": 0, "terminating": 0}
        self._jobs[(namespace, name)] = job
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            self._timer(job, float(deadline), self._deadline_passed, job)
        self._new_pod(job)
        return HTTPStatus.CREATED, _job_document(job)

    def _delete_job(
        self, job: JobState, body: Any, query: Mapping[str, str]
    ) -> tuple[int, dict[str, Any]]:
        # batch/v1 Jobs default to orphaning their pods (kubectl asks for Background)
        policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy") or "Orphan"
        if policy not in ("Orphan", "Background", "Foreground"):
            return _status(
                HTTPStatus.BAD_REQUEST, "BadRequest", f"unknown propagationPolicy {policy!r}"
            )
        pods = [
            p for p in self._pods.values() if p.namespace == job.namespace and p.job == job.name
        ]
        if policy == "Foreground" and pods:
            if job.deletion_timestamp is None:
                job.deletion_timestamp = _now()
                job.finalizers = ["foregroundDeletion"]
                job.resource_version = self._bump()
            for pod in pods:
                self._terminate(pod, None)
            return HTTPStatus.OK, _job_document(job)
        self._remove_job(job)
        if policy != "Orphan":
            for pod in pods:
                self._terminate(pod, None)
        return HTTPStatus.OK, {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": job.name, "group": "batch", "kind": "jobs", "uid": job.uid},
        }

    def _pod_log(self, pod: PodState, query: Mapping[str, str]) -> tuple[int, dict[str, Any] | str]:
        container = query.get("container", pod.container["name"])
        if container != pod.container["name"]:
            return _status(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f"container {container} is not valid for pod {pod.name}",
            )
        if not pod.started:
            reason = pod.state.get("waiting", {}).get("reason", "ContainerCreating")
            return _status(
                HTTPStatus.BAD_REQUEST,
                "BadRequest",
                f'container "{container}" in pod "{pod.name}" is waiting to start: {reason}',
            )
        stamped = query.get("timestamps") in ("true", "1")
        return HTTPStatus.OK, "".join(f"{at} {line}" if stamped else line for at, line in pod.log)

    # --- the Job controller ----------------------------------------------------------------

    def _timer(self, job: JobState, delay: float, action: Any, *arguments: Any) -> None:
        def fire() -> None:
            with self._lock:
                action(*arguments)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        job.timers.append(timer)
        timer.start()

    def _new_pod(self, job: JobState) -> None:
        template = job.spec["template"]
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        pod = PodState(
            namespace=job.namespace,
            name=f"{job.name[:57]}-{suffix}",
            job=job.name,
            labels=dict(template["metadata"]["labels"]),
            annotations=dict(template["metadata"].get("annotations") or {}),
            spec=copy.deepcopy(template["spec"]),
            resource_version=self._bump(),
        )
        pod.spec.setdefault("terminationGracePeriodSeconds", 30)
        pod.spec["nodeName"] = "fake-node"
        pod.container.setdefault("terminationMessagePath", "/dev/termination-log")
        pod.container.setdefault("terminationMessagePolicy", "File")
        self._pods[(pod.namespace, pod.name)] = pod
        if self.run_pods:
            thread = threading.Thread(target=self._kubelet, args=(pod,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pod_ended(self, pod: PodState) -> None:
        """The Job controller's view of a pod that ended or went away (under the lock)."""
        if pod.counted:
            return
        pod.counted = True
        job = self._jobs.get((pod.namespace, pod.job))
        if job is None or job.finished:
            return
        status = job.status
        status["active"] = 0
        status["ready"] = 0
        if pod.phase == "Succeeded":
            status["succeeded"] = 1
            self._finish(job, "Complete", None, None)
            return
        status["failed"] = status.get("failed", 0) + 1
        if status["failed"] <= int(job.spec.get("backoffLimit", 6)):
            status["active"] = 1
            self._new_pod(job)
            return
        self._finish(
            job, "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        )

    def _finish(self, job: JobState, outcome: str, reason: str | None, message: str | None) -> None:
        now = _now()
        first = "SuccessCriteriaMet" if outcome == "Complete" else "FailureTarget"
        conditions = job.status.setdefault("conditions", [])
        for kind in (first, outcome):
            condition: dict[str, Any] = {
                "type": kind,
                "status": "True",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
            if reason is not None:
                condition["reason"] = reason
                condition["message"] = message
            conditions.append(condition)
        if outcome == "Complete":
            job.status["completionTime"] = now
        job.resource_version = self._bump()
        ttl = job.spec.get("ttlSecondsAfterFinished")
        if ttl is not None:
            self._timer(job, float(ttl), self._ttl_passed, job)

    def _deadline_passed(self, job: JobState) -> None:
        if job.finished or (job.namespace, job.name) not in self._jobs:
            return
        job.status["active"] = 0
        job.status["failed"] = job.status.get("failed", 0) + 1
        self._finish(
            job, "Failed", "DeadlineExceeded", "Job was active longer than specified deadline"
        )
        for pod in list(self._pods.values()):
            if pod.namespace == job.namespace and pod.job == job.name:
                self._terminate(pod, None)

    def _ttl_passed(self, job: JobState) -> None:
        if self._jobs.get((job.namespace, job.name)) is job:
            self._delete_job(job, {"propagationPolicy": "Background"}, {})

    def _remove_job(self, job: JobState) -> None:
        self._jobs.pop((job.namespace, job.name), None)
        for timer in job.timers:
            timer.cancel()

    def _remove_pod(self, pod: PodState) -> None:
        """The pod object goes (its process has ended); a Job waiting in foreground
        deletion for its pods goes with the last of them."""
        if self._pods.pop((pod.namespace, pod.name), None) is None:
            return
        pod.removed.set()
        job = self._jobs.get((pod.namespace, pod.job))
        if job is None:
            return
        if job.deletion_timestamp is not None:
            if not any(
                p.job == job.name and p.namespace == job.namespace for p in self._pods.values()
            ):
                self._remove_job(job)
            return
        if pod.phase != "Succeeded":
            pod.phase = "Failed"  # deleted before it ended: the controller counts a failure
        self._pod_ended(pod)

    # --- the kubelet -----------------------------------------------------------------------

    def _terminate(self, pod: PodState, grace: float | None) -> None:
        """Delete a pod: SIGTERM, SIGKILL after its grace period; the object goes once
        the process has ended (at once when none runs)."""
        if pod.deletion_timestamp is None:
            pod.deletion_timestamp = _now()
            pod.resource_version = self._bump()
        if grace is None:
            grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        if pod.process is None or (pod.process.poll() is not None and "terminated" in pod.state):
            self._remove_pod(pod)
            return
        if pod.killed_for is None:
            pod.killed_for = "Error"
        self._kill(pod, grace)

    def _kill(self, pod: PodState, grace: float) -> None:
        process = pod.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        if grace > 0:

            def force() -> None:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)

            timer = threading.Timer(grace, force)
            timer.daemon = True
            timer.start()

    def _kubelet(self, pod: PodState) -> None:
        """Run the pod's container as a local process; record its end."""
        with self._lock:
            if pod.deletion_timestamp is not None:
                self._remove_pod(pod)
                return
            env, problem = self._container_env(pod)
            if problem is not None:
                pod.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": problem}
                }
                pod.resource_version = self._bump()
                return
            if self._pod_root is None:
                self._pod_root = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
            folder = self._pod_root / pod.name
            folder.mkdir()
            pod.termination_file = folder / "termination-log"
            pod.termination_file.touch()
            container = pod.container
            path = container["terminationMessagePath"]
            argv = [*container.get("command", ()), *container.get("args", ())]
            argv = [str(pod.termination_file) if a == path else a for a in argv]
            argv[0] = self.executables.get(argv[0], argv[0])
            try:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                pod.state = {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": str(exc),
                        "startedAt": "1970-01-01T00:00:00Z",
                        "finishedAt": _now(),
                    }
                }
                pod.phase = "Failed"
                pod.resource_version = self._bump()
                self._pod_ended(pod)
                return
            pod.process = process
            pod.phase = "Running"
            pod.state = {"running": {"startedAt": _now()}}
            pod.resource_version = self._bump()
            job = self._jobs.get((pod.namespace, pod.job))
            if job is not None and not job.finished:
                job.status["ready"] = 1  # no readiness probe: ready once running
                job.resource_version = self._bump()
            started = pod.state["running"]["startedAt"]
        assert process.stdout is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.decode("utf-8", "replace")
                with self._lock:
                    pod.log.append((_now_nano(), line))
        code = process.wait()
        with self._lock:
            self._container_ended(pod, code, started)

    def _container_env(self, pod: PodState) -> tuple[dict[str, str], str | None]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOSTNAME": pod.name}
        env["HOME"] = str(self._pod_root or tempfile.gettempdir())
        for entry in pod.container.get("env") or ():
            if "value" in entry:
                env[entry["name"]] = str(entry["value"])
                continue
            reference = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
            secret = self._secrets.get((pod.namespace, reference.get("name", "")))
            if secret is None:
                return env, f'secret "{reference.get("name")}" not found'
            if reference.get("key") not in secret:
                return env, (
                    f"couldn't find key {reference.get('key')} in Secret "
                    f"{pod.namespace}/{reference.get('name')}"
                )
            env[entry["name"]] = secret[reference["key"]]
        return env, None

    def _container_ended(self, pod: PodState, code: int, started: str) -> None:
        exit_code = code if code >= 0 else 128 - code  # a signal, as a container reports it
        terminated: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else (pod.killed_for or "Error"),
            "startedAt": started,
            "finishedAt": _now(),
            "containerID": f"fake://{pod.uid}",
        }
        message = ""
        if pod.termination_file is not None:
            with contextlib.suppress(OSError):
                message = pod.termination_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(
                    "utf-8", "replace"
                )
        if (
            not message
            and exit_code != 0
            and pod.container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            tail = "".join(line for _, line in pod.log[-FALLBACK_LINES:])
            message = tail.encode()[-FALLBACK_BYTES:].decode("utf-8", "replace")
        if message:
            terminated["message"] = message
        pod.state = {"terminated": terminated}
        pod.phase = "Succeeded" if exit_code == 0 else "Failed"
        pod.resource_version = self._bump()
        if pod.deletion_timestamp is not None:
            self._remove_pod(pod)
        else:
            self._pod_ended(pod)

    def _stop_pods(self) -> None:
        """Kill every pod's process and wait for the kubelet threads (on close)."""
        with self._lock:
            for job in self._jobs.values():
                for timer in job.timers:
                    timer.cancel()
            processes = [p.process for p in self._pods.values() if p.process is not None]
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for thread in self._threads:
            thread.join(KILL_LIMIT)
        if self._pod_root is not None:
            shutil.rmtree(self._pod_root, ignore_errors=True)
            self._pod_root = None


def _job_document(job: JobState) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": job.name,
        "namespace": job.namespace,
        "uid": job.uid,
        "resourceVersion": str(job.resource_version),
        "generation": 1,
        "creationTimestamp": job.created,
        "labels": dict(job.labels),
        "annotations": dict(job.annotations),
    }
    if job.deletion_timestamp is not None:
        metadata["deletionTimestamp"] = job.deletion_timestamp
        metadata["deletionGracePeriodSeconds"] = 0
        metadata["finalizers"] = list(job.finalizers)
    status = {k: v for k, v in job.status.items() if v or k == "active"}
    if not status.get("active"):
        status.pop("active", None)  # `omitempty`
    return {
        "kind": "Job",
        "apiVersion": "batch/v1",
        "metadata": metadata,
        "spec": copy.deepcopy(job.spec),
        "status": copy.deepcopy(status),
    }


def _pod_document(pod: PodState) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": pod.name,
        "generateName": pod.name[:-5],
        "namespace": pod.namespace,
        "uid": pod.uid,
        "resourceVersion": str(pod.resource_version),
        "creationTimestamp": pod.created,
        "labels": dict(pod.labels),
        "annotations": dict(pod.annotations),
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": pod.job,
                "uid": pod.labels.get("controller-uid", ""),
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if pod.deletion_timestamp is not None:
        metadata["deletionTimestamp"] = pod.deletion_timestamp
        metadata["deletionGracePeriodSeconds"] = pod.spec.get("terminationGracePeriodSeconds", 30)
    container = pod.container
    status: dict[str, Any] = {
        "phase": pod.phase,
        "conditions": copy.deepcopy(pod.conditions),
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "qosClass": "BestEffort",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": f"fake://{container['image']}",
                "ready": "running" in pod.state,
                "restartCount": 0,
                "started": "running" in pod.state,
                "state": copy.deepcopy(pod.state),
                "lastState": {},
            }
        ],
    }
    if pod.reason:
        status["reason"] = pod.reason
    if pod.message:
        status["message"] = pod.message
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": copy.deepcopy(pod.spec),
        "status": status,
    }


def _not_found(qualified: str, name: str, group: str, kind: str) -> tuple[int, dict[str, Any]]:
    return _status(
        HTTPStatus.NOT_FOUND,
        "NotFound",
        f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": kind},
    )


def _parse_core_path(path: str) -> tuple[str, str, str, str | None, str | None] | None:
    """(group, resource, namespace, name, subresource) of a Job or pod path, or None."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["apis", "batch", "v1"]:
        group, rest = "batch", parts[3:]
    elif parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    else:
        return None
    if len(rest) < 3 or rest[0] != "namespaces" or (group, rest[2]) not in JOB_RESOURCES:
        return None
    namespace, resource = rest[1], rest[2]
    name = rest[3] if len(rest) > 3 else None
    subresource = rest[4] if len(rest) > 4 else None
    if len(rest) > 5 or (subresource is not None and (resource, subresource) != ("pods", "log")):
        return None
    return group, resource, namespace, name, subresource


def _parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """A label selector's requirements as (key, op, value): `k=v`, `k==v`, `k!=v`, `k`."""
    requirements: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        found = re.fullmatch(r"([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)", part)
        if found is not None:
            key, op, value = found.groups()
            requirements.append((key, "!=" if op == "!=" else "=", value))
        elif re.fullmatch(r"!?[A-Za-z0-9./_-]+", part):
            requirements.append((part.lstrip("!"), "!" if part.startswith("!") else "exists", None))
        else:
            raise ValueError(f"unable to parse requirement: {part!r}")
    return requirements


def _selects(selector: list[tuple[str, str, str | None]], labels: Mapping[str, str]) -> bool:
    for key, op, value in selector:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


class FakeKubernetes(_FakeJobs):
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
        self._init_jobs()

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
        self._stop_pods()

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

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `count` requests (of `method`, when given) with a `status`
        error (409, 429, 500, 503, ...) instead of serving them; `message` is the
        Status's (an admission plugin's words, say)."""
        with self._lock:
            self._faults.append(_Fault(status, count, method, message))

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

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in (None, method) and fault.count > 0:
                fault.count -= 1
                return fault
        return None

    def _handle(
        self, method: str, path: str, authorization: str | None, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any] | str]:
        with self._lock:
            code, document = self._route(method, path, authorization, content_type, body)
            status = int(code)
            self.requests.append(RecordedRequest(method, path, content_type, body, status))
            return status, document

    def _route(
        self, method: str, path: str, authorization: str | None, content_type: str | None, body: Any
    ) -> tuple[int, dict[str, Any] | str]:
        if authorization != f"Bearer {self.token}":
            return _status(HTTPStatus.UNAUTHORIZED, "Unauthorized", "Unauthorized")
        fault = self._take_fault(method)
        if fault is not None:
            return _injected(fault.status, fault.message)
        if path.startswith(("/apis/batch/", "/api/v1/")):
            return self._route_jobs(method, path, body)
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


def _injected(code: int, message: str | None = None) -> tuple[int, dict[str, Any]]:
    reasons = {
        403: "Forbidden",
        409: "Conflict",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return _status(
        HTTPStatus(code),
        reasons.get(code, "Unknown"),
        message or f"injected failure ({code}) by the fake",
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

    def _reply(self, status: int, document: Mapping[str, Any] | str) -> None:
        # a pod's log is plain text; everything else is JSON
        text = isinstance(document, str)
        payload = document.encode() if isinstance(document, str) else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in `FakeKubernetes.requests`, not printed
