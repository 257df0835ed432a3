"""The executor the orchestrator talks to: creates the Jobs, waits for them
(one list call per interval for all), reads the outcome, cancels, re-attaches."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from tideflow.plugins.api import (
    AttemptError,
    AttemptHandle,
    AttemptRequest,
    AttemptResult,
    BackendClosedError,
    BackendContext,
    BackendError,
    BackendRegistry,
    Executor,
    Field,
    hookimpl,
)
from tideflow.plugins.kubernetes_common import (
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

from .manifest import (
    CONTAINER,
    JOB_NAME_LABEL,
    KEY_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    job_manifest,
    job_name,
)
from .options import KUBERNETES_EXECUTOR
from .outcome import (
    PodLost,
    PodNotStarted,
    attempt_outcome,
    job_finished,
    not_started,
    parse_time,
    pod_where,
    split_logs,
)

if TYPE_CHECKING:
    from kubernetes.client import BatchV1Api, CoreV1Api

__all__ = ["KubernetesAccessError", "KubernetesExecutor", "tideflow_register_executors"]

log = logging.getLogger("tideflow.plugins.kubernetes_executor")

_T = TypeVar("_T")

#: how long `wait` of a cancelled attempt waits for its pod to go, beyond its grace
CANCEL_SLACK: Final = 30.0

_RBAC_HINT: Final = (
    'the orchestrator\'s Role must grant verbs ["create", "get", "list", "watch", "delete"] '
    'on "jobs" in API group "batch", ["get", "list", "watch"] on "pods" and ["get"] on '
    '"pods/log" (see docs/kubernetes.md)'
)


class KubernetesAccessError(BackendError):
    """The API refused the orchestrator's credentials (401) or a verb (403)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Apis:
    cluster: ClusterClient
    batch: BatchV1Api
    core: CoreV1Api


class _JobWatch:
    """Waits for Jobs to end: one list call per interval serves every waiter.
    `late(job)` says whether a running Job needs a look at its pod."""

    def __init__(
        self,
        list_jobs: Callable[[], Awaitable[list[dict[str, Any]]]],
        interval: float,
        late: Callable[[Mapping[str, Any]], bool],
    ) -> None:
        self._list = list_jobs
        self._interval = interval
        self._late = late
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def settled(self, name: str) -> dict[str, Any] | None:
        """The Job once it has ended, is being deleted or is late; None once it is gone."""
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="kubernetes-job-watch")
        try:
            return await future
        finally:
            waiting = self._waiters.get(name)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[name]

    async def _run(self) -> None:
        failing = False
        while self._waiters:
            try:
                jobs = await self._list()
            except (KubernetesAccessError, BackendClosedError) as exc:
                self._settle_all(exc)
                break
            except BackendError as exc:
                # an API server that is away for a while must not fail running attempts
                # (the orchestrator enforces their timeouts); say so once per outage
                if not failing:
                    log.warning("cannot read the Jobs (trying again): %s", exc)
                failing = True
                await asyncio.sleep(self._interval)
                continue
            except Exception as exc:  # a bug must fail the waits, not leave them hanging
                log.exception("listing the Jobs failed")
                self._settle_all(exc)
                break
            if failing:
                log.info("reading the Jobs works again")
                failing = False
            try:
                self._settle(jobs)
            except Exception as exc:  # a bug must fail the waits, not leave them hanging
                log.exception("watching the Jobs failed")
                self._settle_all(exc)
                break
            if self._waiters:
                await asyncio.sleep(self._interval)

    def _settle(self, jobs: list[dict[str, Any]]) -> None:
        """Answer the waiters whose Job is gone, ended, being deleted or late."""
        by_name = {job["metadata"]["name"]: job for job in jobs}
        for name, futures in list(self._waiters.items()):
            job = by_name.get(name)
            if (
                job is None
                or job_finished(job)
                or job["metadata"].get("deletionTimestamp")
                or self._late(job)
            ):
                del self._waiters[name]
                for future in futures:
                    if not future.done():
                        future.set_result(job)

    def _settle_all(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for futures in waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(exc)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        self._settle_all(BackendClosedError("the kubernetes executor is closed"))
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class KubernetesExecutor(Executor):
    """Runs each attempt as a Kubernetes Job (batch/v1), one pod, in a namespace.

    Resources become the pod's requests and limits (`gpu` as `nvidia.com/gpu`);
    `secret()` values come from the Secret `secret_name`; `cancel` deletes the Job
    with its pod; `attempts()` finds the Jobs an earlier orchestrator started.
    """

    name: ClassVar[str] = "kubernetes"
    options: ClassVar[tuple[Field, ...]] = KUBERNETES_EXECUTOR
    remote: ClassVar[bool] = True
    secrets_by_reference: ClassVar[bool] = True

    def __init__(self, config: Mapping[str, Any], *, context: BackendContext | None = None) -> None:
        super().__init__(config, context=context)
        self.namespace: str = self.config.get("namespace") or "default"
        self.kubeconfig = resolve_kubeconfig(self.config.get("kubeconfig"), self.context.base_dir)
        self.kube_context: str | None = self.config.get("context")
        self.poll_interval = float(self.config.get("poll_interval") or 2.0)
        self.grace_period = float(self.config.get("grace_period") or 30.0)
        self.start_timeout = float(self.config.get("start_timeout") or 600.0)
        self._apis: _Apis | None = None
        self._connecting = asyncio.Lock()
        self._closed = False
        self._watch = _JobWatch(self._list_jobs, self.poll_interval, self._late)
        # Jobs whose container was seen started: not late, whatever their age
        self._started: set[str] = set()
        # Jobs this process deleted to cancel their attempt -> the log read just before
        self._cancelled: dict[str, str] = {}

    @classmethod
    def capacity(cls, options: Mapping[str, Any]) -> Mapping[str, float] | None:
        """`max_cpu`, `max_memory` and `max_gpu`, those declared."""
        declared = {
            resource: float(options[option])
            for resource, option in (
                ("cpu", "max_cpu"),
                ("memory", "max_memory"),
                ("gpu", "max_gpu"),
            )
            if options.get(option) is not None
        }
        return declared or None

    # --- the Executor interface ----------------------------------------------------------

    async def start(self, request: AttemptRequest) -> AttemptHandle:
        """Create the attempt's Job; return once the API server has stored it."""
        name = job_name(request)
        manifest = job_manifest(request, name, {**self.config, "namespace": self.namespace})
        status, _ = await self._call(
            "create",
            "jobs",
            "batch",
            "create_namespaced_job",
            self.namespace,
            manifest,
            accept=frozenset({409}),
        )
        if status == 409:  # an earlier try of this create got through
            existing = await self._read_job(name)
            metadata = (existing or {}).get("metadata") or {}
            key = (metadata.get("annotations") or {}).get(KEY_ANNOTATION)
            if key != request.key:
                raise BackendError(
                    f'a Job named "{name}" already exists in namespace '
                    f"{json.dumps(self.namespace)} for another attempt ({key!r})"
                )
        return AttemptHandle(request.key, name, f"job {self.namespace}/{name}")

    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        """Wait for the Job to end; read its pod's state and log; delete it."""
        try:
            return await self._wait(handle)
        finally:
            self._started.discard(handle.ref)

    async def _wait(self, handle: AttemptHandle) -> AttemptResult:
        name = handle.ref
        while True:
            job = await self._watch.settled(name)
            if job is None or job_finished(job) or job["metadata"].get("deletionTimestamp"):
                break
            pod = await self._patiently(f"read the pod of Job {name}", self._pod_of, name)
            problem = not_started(pod)
            if problem is None:  # it started since the Job was read
                self._started.add(name)
                continue
            return await self._give_up_starting(name, pod, problem)
        if job is None:
            if name in self._cancelled:
                return self._cancelled_outcome(self._cancelled.pop(name), handle.where)
            error = AttemptError(
                f"{PodLost.__module__}.PodLost",
                f"the attempt was lost: its Job {self.namespace}/{name} was deleted "
                "before it ended",
            )
            return AttemptResult("lost", error=error, where=handle.where)
        if not job_finished(job):  # being deleted: cancelled, here or by another process
            return await self._cancelled_result(name, handle)
        pod = await self._patiently(f"read the pod of Job {name}", self._pod_of, name)
        text = await self._log_of(pod) if pod is not None else ""
        result = attempt_outcome(job, pod, text)
        await self._collect(name)
        return result

    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        """Delete the Job, its pod first (Foreground): SIGTERM, then SIGKILL after
        the pods' `grace_period` (set when the Job was made; `grace` cannot change it).
        What the pod printed so far is read first: it may be gone before `wait` looks."""
        self._cancelled[handle.ref] = ""
        try:
            pod = await self._pod_of(handle.ref)
            if pod is not None:
                self._cancelled[handle.ref] = await self._log_of(pod)
        except BackendError as exc:  # the output is a courtesy; the cancellation is not
            log.warning("cannot read the output of the cancelled Job %s: %s", handle.ref, exc)
        try:
            await self._call(
                "delete",
                "jobs",
                "batch",
                "delete_namespaced_job",
                handle.ref,
                self.namespace,
                body={"propagationPolicy": "Foreground"},
                accept=frozenset({404}),
            )
        except BaseException:  # not deleted: a Job that vanishes later was lost, not cancelled
            self._cancelled.pop(handle.ref, None)
            raise

    async def attempts(self) -> Sequence[AttemptHandle]:
        """The Jobs in the namespace with the managed-by label: not collected yet."""
        handles = []
        for job in await self._list_jobs():
            metadata = job["metadata"]
            key = (metadata.get("annotations") or {}).get(KEY_ANNOTATION)
            if key:
                name = metadata["name"]
                handles.append(AttemptHandle(key, name, f"job {self.namespace}/{name}"))
        return handles

    async def aclose(self) -> None:
        """Stop watching and release the client's connections. Jobs keep running."""
        self._closed = True
        await self._watch.aclose()
        apis, self._apis = self._apis, None
        if apis is not None:
            try:
                apis.cluster.client.close()  # type: ignore[no-untyped-call]
            except Exception:  # closing must not fail because the client broke earlier
                log.debug("closing the Kubernetes client failed", exc_info=True)

    # --- steps -------------------------------------------------------------------------

    async def _list_jobs(self) -> list[dict[str, Any]]:
        _, data = await self._call(
            "list",
            "jobs",
            "batch",
            "list_namespaced_job",
            self.namespace,
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
        )
        items: list[dict[str, Any]] = _json(data).get("items") or []
        return items

    async def _read_job(self, name: str) -> dict[str, Any] | None:
        status, data = await self._call(
            "get",
            "jobs",
            "batch",
            "read_namespaced_job",
            name,
            self.namespace,
            accept=frozenset({404}),
        )
        return None if status == 404 else _json(data)

    async def _pod_of(self, name: str) -> dict[str, Any] | None:
        """The Job's pod (the newest, should there be several)."""
        _, data = await self._call(
            "list",
            "pods",
            "core",
            "list_namespaced_pod",
            self.namespace,
            label_selector=f"{JOB_NAME_LABEL}={name}",
        )
        pods: list[dict[str, Any]] = _json(data).get("items") or []
        if not pods:
            return None
        return max(pods, key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))

    async def _log_of(self, pod: Mapping[str, Any]) -> str:
        """The pod's log with timestamps; "" when it cannot be read (a pod that never
        started, or one deleted since)."""
        try:
            status, data = await self._call(
                "get",
                "pods/log",
                "core",
                "read_namespaced_pod_log",
                pod["metadata"]["name"],
                self.namespace,
                container=CONTAINER,
                timestamps=True,
                accept=frozenset({400, 404}),
            )
        except KubernetesAccessError:
            raise
        except BackendError as exc:
            log.warning("cannot read the log of pod %s: %s", pod["metadata"]["name"], exc)
            return ""
        return data.decode("utf-8", "replace") if status == 200 else ""

    async def _collect(self, name: str) -> None:
        """Delete the ended Job with its pod; one left behind goes at its TTL."""
        try:
            await self._call(
                "delete",
                "jobs",
                "batch",
                "delete_namespaced_job",
                name,
                self.namespace,
                body={"propagationPolicy": "Background"},
                accept=frozenset({404}),
            )
        except BackendError as exc:
            log.warning("cannot delete the ended Job %s (its TTL will): %s", name, exc)

    def _late(self, job: Mapping[str, Any]) -> bool:
        """A Job whose pod has not started its container (no ready pod) for longer
        than `start_timeout` since the Job was created."""
        name = job["metadata"]["name"]
        if name in self._started:
            return False
        if (job.get("status") or {}).get("ready"):
            self._started.add(name)
            return False
        created = parse_time(str(job["metadata"].get("creationTimestamp") or ""))
        if created is None:
            return False
        return (datetime.now(UTC) - created).total_seconds() > self.start_timeout

    async def _give_up_starting(
        self, name: str, pod: Mapping[str, Any] | None, problem: str
    ) -> AttemptResult:
        """Fail an attempt whose pod did not start in time, and delete its Job."""
        await self._collect(name)
        error = AttemptError(
            f"{PodNotStarted.__module__}.PodNotStarted",
            f"the attempt's pod did not start within {self.start_timeout:g}s "
            f"(start_timeout): {problem}",
        )
        where = pod_where(pod, self.namespace) or f"job {self.namespace}/{name}"
        return AttemptResult("failed", error=error, where=where)

    async def _cancelled_result(self, name: str, handle: AttemptHandle) -> AttemptResult:
        """Wait (within the grace period and some slack) for the deleted Job's pod to
        go, keeping what it printed; the attempt is `cancelled`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.grace_period + CANCEL_SLACK
        text = self._cancelled.pop(name, "")
        where = handle.where
        while loop.time() < until:
            pod = await self._patiently(f"read the pod of Job {name}", self._pod_of, name)
            if pod is not None:
                where = pod_where(pod, self.namespace)
                text = await self._log_of(pod) or text
            if await self._patiently(f"read Job {name}", self._read_job, name) is None:
                break
            await asyncio.sleep(self.poll_interval)
        return self._cancelled_outcome(text, where)

    async def _patiently(self, what: str, step: Callable[[str], Awaitable[_T]], name: str) -> _T:
        """`step(name)`, tried again every `poll_interval` while the API cannot be
        reached or answers 5xx: an outage must not end an attempt that may still run
        (the orchestrator would then run it again). Refused access is raised."""
        failing = False
        while True:
            try:
                return await step(name)
            except (KubernetesAccessError, BackendClosedError):
                raise
            except BackendError as exc:
                if not failing:
                    log.warning("cannot %s (trying again): %s", what, exc)
                    failing = True
                await asyncio.sleep(self.poll_interval)

    def _cancelled_outcome(self, text: str, where: str | None) -> AttemptResult:
        stdout, records = split_logs(text)
        return AttemptResult("cancelled", None, stdout, "", records, None, where)

    # --- calls -------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        resource: str,
        group: str,
        method: str,
        *arguments: Any,
        accept: frozenset[int] = frozenset(),
        **options: Any,
    ) -> tuple[int, bytes]:
        """`<Batch|Core>V1Api.<method>(*arguments, **options)` in a worker thread: the
        status and the raw body. Answers worth trying again are; a status in `accept`
        is returned; any other error raises `BackendError`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if self._closed:
            raise BackendClosedError("the kubernetes executor is closed")
        apis = await self._connect()
        call = getattr(apis.batch if group == "batch" else apis.core, method)
        delay = FIRST_BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            last = attempt == ATTEMPTS
            try:
                response = await asyncio.to_thread(
                    call,
                    *arguments,
                    _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False,
                    **options,
                )
                return int(response.status), bytes(response.data)
            except ApiException as exc:
                status = int(exc.status or 0)
                if status in accept:
                    body = exc.body or b""
                    return status, body.encode() if isinstance(body, str) else bytes(body)
                if status not in RETRIED_STATUSES or last:
                    raise self._api_error(status, exc, verb, resource, apis) from None
                asked = retry_after(exc.headers)
            except HTTPError as exc:
                if last:
                    raise BackendError(
                        f"cannot reach the Kubernetes API at {apis.cluster.host} after "
                        f"{ATTEMPTS} attempts: {failure_reason(exc)}"
                    ) from None
                asked = 0.0
            await asyncio.sleep(backoff(delay, asked))
            delay *= 2
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _api_error(
        self, status: int, exc: Any, verb: str, resource: str, apis: _Apis
    ) -> BackendError:
        said = status_message(exc)
        where = f"in namespace {json.dumps(self.namespace)}"
        if status == 401:
            return KubernetesAccessError(
                f"the Kubernetes API at {apis.cluster.host} refused the credentials of "
                f"{apis.cluster.source} (401 Unauthorized): check that its token or "
                "client certificate is valid and has not expired"
            )
        if status == 403 and "exceeded quota" in said:  # ResourceQuota admission, not RBAC
            return BackendError(f"a ResourceQuota {where} refused to {verb} {resource}: {said}")
        if status == 403:
            return KubernetesAccessError(
                f"forbidden to {verb} {resource} {where}: {_RBAC_HINT}; the server said: {said}"
            )
        if status == 422:
            return BackendError(f"the Kubernetes API refused the {resource} {where}: {said}")
        answer = f"{status} {exc.reason}" if exc.reason else str(status)
        if status in RETRIED_STATUSES:
            answer += f" {ATTEMPTS} times"
        return BackendError(
            f"the Kubernetes API at {apis.cluster.host} answered {answer} to {verb} "
            f"{resource} {where}: {said}"
        )

    async def _connect(self) -> _Apis:
        async with self._connecting:
            if self._apis is None:
                self._apis = await asyncio.to_thread(self._make_apis)
            return self._apis

    def _make_apis(self) -> _Apis:
        from kubernetes import client

        cluster = connect(
            self.kubeconfig,
            self.kube_context,
            needs="the kubernetes executor",
            block="the executor block",
        )
        return _Apis(cluster, client.BatchV1Api(cluster.client), client.CoreV1Api(cluster.client))


def _json(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        raise BackendError("the Kubernetes API answered something that is not JSON") from None
    if not isinstance(document, dict):
        raise BackendError("the Kubernetes API answered JSON that is not an object")
    return document


@hookimpl
def tideflow_register_executors(registry: BackendRegistry[Executor]) -> None:
    """Register the `kubernetes` executor."""
    registry.register(KubernetesExecutor)
