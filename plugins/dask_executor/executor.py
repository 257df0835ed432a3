"""The `dask` executor: each attempt is a task on a dask.distributed cluster.

Submitting
    `start` submits `task.run_attempt` under the Dask key
    ``NAMESPACE/flow/job/run/attempt`` (the request's `key` behind the block's
    `namespace`) with `retries=0`, and publishes the future as a dataset of that
    name: the scheduler then keeps the task and its result after this client goes
    away, `attempts()` lists the published names, and `wait` in a new process
    finds the future again by its name (re-attaching) and collects the result.
    Collecting unpublishes and releases it.

Resources
    Dask constrains a task only by the resources its workers declare
    (`dask worker --resources "GPU=1 MEMORY=32e9"`), and a task asking for one
    that no worker declares waits forever. So a job's `gpu` always asks for the
    Dask resource `GPU` (a GPU job must never run on a worker without one),
    while `cpu` and `memory` ask for `CPU` and `MEMORY` only when the block's
    `worker_resources` declares them; otherwise they constrain nothing, and a
    worker's threads decide how many attempts it runs at once. Extra entries of
    a job's `resources` are asked for under their own names. `capacity` reads
    `worker_resources`, so the compiler refuses a job no worker can ever take.

Lost attempts
    A worker that dies mid-attempt makes it `lost`: Dask's own re-run of the task
    finds the attempt's claim (see `task`) and returns `lost` without running it,
    and `wait` also notices when the claiming worker has left the cluster (in case
    no other worker can take the re-run). A cluster whose
    `distributed.scheduler.allowed-failures` is 0 fails the task with
    `KilledWorker` instead: `lost` as well.

Cancelling
    `cancel` sets the attempt's cancel variable to the grace; the task sends its
    process group SIGTERM, then SIGKILL after the grace. An attempt not started yet
    is also cancelled in Dask, so that it never starts.

distributed is imported on first use: tideflow without the `dask` extra lists
the executor, and using it says to install `tideflow[dask]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from tideflow.plugins.api import (
    AttemptError,
    AttemptHandle,
    AttemptRequest,
    AttemptResources,
    AttemptResult,
    BackendConfigError,
    BackendContext,
    BackendError,
    BackendRegistry,
    Executor,
    Field,
    hookimpl,
    reply_from_json,
)

from . import task
from .options import DASK_EXECUTOR

__all__ = ["DaskExecutor", "DaskNotInstalledError", "tideflow_register_executors"]

log = logging.getLogger(__name__)

#: how often `wait` checks that the worker running an attempt is still there
WATCH_INTERVAL: Final = 1.0
#: the longest between two reads of a queued attempt's claim
MAX_CLAIM_POLL: Final = 8.0
#: the Dask resource a job's `gpu`, `cpu` and `memory` ask for
DASK_NAMES: Final[Mapping[str, str]] = {"gpu": "GPU", "cpu": "CPU", "memory": "MEMORY"}
#: error types of the outcomes the executor itself decides
WORKER_LOST: Final = "tideflow.plugins.dask_executor.WorkerLost"
TASK_FAILED: Final = "tideflow.plugins.dask_executor.TaskFailed"

TLS_OPTIONS: Final = ("tls_ca_file", "tls_cert", "tls_key")

INSTALL_HINT: Final = (
    'the `dask` executor needs dask.distributed: install it with `pip install "tideflow[dask]"`'
)


class DaskNotInstalledError(BackendError):
    """dask.distributed is not installed."""


class SchedulerUnreachable(BackendError):
    """The connection to the scheduler was lost during a call."""


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise DaskNotInstalledError(INSTALL_HINT) from exc
    return distributed


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class DaskExecutor(Executor):
    """Runs each attempt as a task on a dask.distributed cluster, in a process group of its own."""

    name: ClassVar[str] = "dask"
    options: ClassVar[tuple[Field, ...]] = DASK_EXECUTOR
    remote: ClassVar[bool] = True
    secrets_by_reference: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any], *, context: BackendContext | None = None) -> None:
        super().__init__(config, context=context)
        declared = self.config.get("worker_resources") or {}
        for resource, amount in declared.items():
            if _number(amount) is None or float(amount) < 0:
                raise BackendConfigError(
                    f"`worker_resources` of executor {self.name!r}: {resource} = {amount!r} "
                    "is not an amount (a number or a size such as 32Gi)"
                )
        self.declared: frozenset[str] = frozenset(declared)
        tls = [self.config.get(option) for option in TLS_OPTIONS]
        if any(tls) and not all(tls):
            missing = ", ".join(f"`{o}`" for o, v in zip(TLS_OPTIONS, tls, strict=True) if not v)
            raise BackendConfigError(
                f"executor {self.name!r}: TLS needs `tls_ca_file`, `tls_cert` and `tls_key` "
                f"together; {missing} missing"
            )
        if str(self.config["scheduler"]).startswith("tls://") and not all(tls):
            raise BackendConfigError(
                f"executor {self.name!r}: a `tls://` scheduler needs `tls_ca_file`, "
                "`tls_cert` and `tls_key`"
            )
        self.tls_files: tuple[Path, ...] | None = (
            tuple(self.context.base_dir / Path(str(v)).expanduser() for v in tls)
            if all(tls)
            else None
        )
        self.scheduler: str = self.config["scheduler"]
        self.prefix = f"{self.config['namespace']}/"
        self._client: Any = None
        self._connecting = asyncio.Lock()
        self._futures: dict[str, Any] = {}
        self._cancelled: set[str] = set()
        self._members_lock = asyncio.Lock()
        self._members_seen: tuple[float, frozenset[str]] = (0.0, frozenset())
        self._closed = False

    @classmethod
    def capacity(cls, options: Mapping[str, Any]) -> Mapping[str, float] | None:
        """`worker_resources` in tideflow's words: `GPU`, `CPU` and `MEMORY` as gpu,
        cpu and memory, other names as they are; no GPU declared is a capacity of 0."""
        declared = options.get("worker_resources")
        if not isinstance(declared, Mapping):
            return None
        ours = {dask: mine for mine, dask in DASK_NAMES.items()}
        capacity: dict[str, float] = {"gpu": 0.0}
        for resource, amount in declared.items():
            value = _number(amount)
            if value is not None:
                capacity[ours.get(str(resource), str(resource))] = value
        return capacity

    def dask_resources(self, resources: AttemptResources) -> dict[str, float]:
        """What an attempt asks of a Dask worker (see the module's docstring)."""
        wanted: dict[str, float] = {}
        if resources.gpu:
            wanted[DASK_NAMES["gpu"]] = float(resources.gpu)
        for mine, amount in (("cpu", resources.cpu), ("memory", resources.memory)):
            if amount is not None and DASK_NAMES[mine] in self.declared:
                wanted[DASK_NAMES[mine]] = float(amount)
        for resource, amount in resources.extras.items():
            value = _number(amount)
            if value is None:
                raise BackendError(
                    f"resource {resource} = {amount!r} is not an amount a Dask worker can offer"
                )
            wanted[str(resource)] = value
        return wanted

    def ref_of(self, key: str) -> str:
        """The Dask key (and dataset name) of the attempt whose request key is `key`."""
        return f"{self.prefix}{key}"

    # --- the engine ---------------------------------------------------------------------

    async def _connect(self) -> Any:
        if self._closed:
            raise BackendError(f"the dask executor for {self.scheduler} is closed")
        async with self._connecting:
            client = self._client
            if client is not None and client.status == "running":
                return client
            self._client = None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
            distributed = _distributed()
            try:
                client = await distributed.Client(
                    self.scheduler,
                    asynchronous=True,
                    timeout=self.config["connect_timeout"],
                    set_as_default=False,
                    name="tideflow",
                    security=self._security(distributed),
                )
            except (OSError, TimeoutError, ValueError) as exc:
                raise BackendError(
                    f"cannot reach the Dask scheduler at {self.scheduler}: {exc}"
                ) from exc
            self._client = client
            return client

    def _security(self, distributed: Any) -> Any:
        """The TLS settings of the connection (None: plain TCP)."""
        if self.tls_files is None:
            return None
        for option, path in zip(TLS_OPTIONS, self.tls_files, strict=True):
            if not path.is_file():
                raise BackendError(f"`{option}` of the dask executor: no file {path}")
        ca, cert, key = (str(path) for path in self.tls_files)
        return distributed.Security(
            tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
        )

    def _unreachable(self, exc: BaseException) -> SchedulerUnreachable:
        return SchedulerUnreachable(f"lost the Dask scheduler at {self.scheduler}: {exc}")

    async def start(self, request: AttemptRequest) -> AttemptHandle:
        ref = self.ref_of(request.key)
        resources = self.dask_resources(request.resources)
        client = await self._connect()
        future = client.submit(
            task.run_attempt,
            ref,
            request.to_json(),
            key=ref,
            resources=resources or None,
            pure=False,
            retries=0,
        )
        try:
            await client.publish_dataset(future, name=ref, override=True)
        except (OSError, TimeoutError) as exc:
            # not published, the start fails: make sure the task does not run anyway
            with contextlib.suppress(Exception):
                await client.cancel([future], reason="tideflow: the start failed")
            raise self._unreachable(exc) from exc
        self._futures[ref] = future
        return AttemptHandle(request.key, ref)

    async def attempts(self) -> Sequence[AttemptHandle]:
        client = await self._connect()
        try:
            names = await client.list_datasets()
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        return [
            AttemptHandle(name[len(self.prefix) :], name)
            for name in sorted(n for n in names if isinstance(n, str))
            if name.startswith(self.prefix)
        ]

    async def _future(self, client: Any, ref: str) -> Any:
        future = self._futures.get(ref)
        if future is not None:
            return future
        try:
            future = await client.get_dataset(ref)
        except KeyError:
            return None
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        self._futures[ref] = future
        return future

    async def _variable(self, client: Any, name: str) -> Any:
        distributed = _distributed()
        try:
            return await distributed.Variable(name, client=client).get(timeout=0)
        except TimeoutError:
            return None

    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        while True:
            client = await self._connect()
            try:
                return await self._wait_once(client, handle.ref)
            except SchedulerUnreachable:
                # the scheduler keeps the published task across a lost connection:
                # once connected again, find it again (a restarted scheduler has lost
                # it: `lost`); a scheduler that stays away is a BackendError
                self._futures.pop(handle.ref, None)
                await self._reconnected(client)

    async def _reconnected(self, client: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.config["connect_timeout"]) + 1.0
        while client.status not in ("running", "closing", "closed") and loop.time() < deadline:
            await asyncio.sleep(0.1)  # the client reconnects by itself for a while
        if client.status != "running":
            async with self._connecting:
                if self._client is client:
                    self._client = None
            with contextlib.suppress(Exception):
                await client.close()
            await self._connect()  # a BackendError when the scheduler cannot be reached

    async def _wait_once(self, client: Any, ref: str) -> AttemptResult:
        future = await self._future(client, ref)
        if future is None:
            return AttemptResult(
                "lost",
                error=AttemptError(
                    WORKER_LOST, f"the Dask scheduler at {self.scheduler} holds no attempt {ref}"
                ),
            )
        collect = asyncio.ensure_future(self._collect(client, ref, future))
        watch = _Watch(asyncio.get_running_loop().time())
        try:
            while True:
                done, _ = await asyncio.wait({collect}, timeout=WATCH_INTERVAL)
                if done:
                    result = collect.result()
                    break
                departed = await self._departed(client, ref, watch)
                if departed is not None:
                    # the worker left without Dask re-running the task elsewhere (no
                    # other worker can take it): forget the task so it never runs; the
                    # claim stays, so a re-run already on its way finds it and stops
                    await self._forget(client, ref, future, keep_claim=True)
                    return departed
        finally:
            if not collect.done():
                collect.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await collect  # its outcome, if any, is dropped with the attempt
        await self._forget(client, ref, future, keep_claim=False)
        return result

    async def _departed(self, client: Any, ref: str, watch: _Watch) -> AttemptResult | None:
        """A `lost` result when the worker that claimed the attempt is no longer in
        the cluster and the task has not ended. Cheap for many attempts: an unclaimed
        (queued) attempt's claim is read ever more rarely, and the workers present are
        asked once an interval for all the attempts this executor waits for."""
        loop = asyncio.get_running_loop()
        try:
            if watch.claim is None:
                if loop.time() < watch.next_read:
                    return None
                claim = await self._variable(client, task.claim_name(ref))
                if not isinstance(claim, dict) or not claim.get("worker"):
                    watch.delay = min(watch.delay * 2, MAX_CLAIM_POLL)
                    watch.next_read = loop.time() + watch.delay
                    return None
                if claim.get("pid"):  # final: before it, the task set it without the pid
                    watch.claim = claim
            else:
                claim = watch.claim
            worker = claim["worker"]
            if worker in await self._members(client):
                return None
            # not in the snapshot (which may predate the worker): ask about it alone
            if worker in await client.scheduler.ncores(workers=[worker]):
                return None
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        where = claim.get("where")
        return AttemptResult(
            "lost",
            error=AttemptError(WORKER_LOST, f"the Dask worker running it left: {where}"),
            where=where,
        )

    async def _members(self, client: Any) -> frozenset[str]:
        """The workers in the cluster, at most `WATCH_INTERVAL` old."""
        loop = asyncio.get_running_loop()
        async with self._members_lock:
            taken_at, members = self._members_seen
            if loop.time() - taken_at >= WATCH_INTERVAL or not members:
                members = frozenset(await client.scheduler.ncores())
                self._members_seen = (loop.time(), members)
            return members

    async def _collect(self, client: Any, ref: str, future: Any) -> AttemptResult:
        distributed = _distributed()
        try:
            outcome = await future.result()
        except asyncio.CancelledError:
            raise
        except distributed.client.FutureCancelledError as exc:
            if ref in self._cancelled:
                return AttemptResult("cancelled")
            if client.status != "running":  # the client gave up on the scheduler
                raise self._unreachable(exc) from exc
            try:
                cancelled = await self._variable(client, task.cancel_name(ref))
            except (OSError, TimeoutError) as lost:
                raise self._unreachable(lost) from exc
            if cancelled is not None:  # by another orchestrator's executor
                return AttemptResult("cancelled")
            return AttemptResult("lost", error=AttemptError(WORKER_LOST, str(exc)))
        except distributed.KilledWorker as exc:
            return AttemptResult("lost", error=AttemptError(WORKER_LOST, str(exc)))
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc
        except Exception as exc:  # the task itself failed: tideflow missing on the worker, say
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            return AttemptResult(
                "crashed", error=AttemptError(TASK_FAILED, f"the Dask task failed: {kind}: {exc}")
            )
        return _result(outcome)

    async def _forget(self, client: Any, ref: str, future: Any, *, keep_claim: bool) -> None:
        """Drop everything the cluster holds for a collected attempt."""
        distributed = _distributed()
        self._futures.pop(ref, None)
        self._cancelled.discard(ref)
        try:
            if keep_claim:
                await client.cancel([future], reason="tideflow: the attempt is lost")
            await client.unpublish_dataset(ref)
        except KeyError:
            pass  # collected by someone else already
        except (OSError, TimeoutError) as exc:
            log.warning("could not release the Dask task %s: %s", ref, exc)
        future.release()
        names = (
            [task.cancel_name(ref)] if keep_claim else [task.cancel_name(ref), task.claim_name(ref)]
        )
        for name in names:
            with contextlib.suppress(Exception):
                distributed.Variable(name, client=client).delete()

    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        client = await self._connect()
        ref = handle.ref
        distributed = _distributed()
        self._cancelled.add(ref)
        try:
            await distributed.Variable(task.cancel_name(ref), client=client).set(float(grace))
            started = await self._variable(client, task.claim_name(ref))
            if started is None:
                # not running yet: make sure it never starts (a task starting right now
                # claims the attempt first, then finds the cancel variable set)
                future = await self._future(client, ref)
                if future is not None:
                    await client.cancel([future], reason="tideflow: the attempt was cancelled")
        except (OSError, TimeoutError) as exc:
            raise self._unreachable(exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        self._futures.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


@dataclass
class _Watch:
    """What `wait` knows of one attempt's claim, and when to read it again."""

    next_read: float
    delay: float = WATCH_INTERVAL
    claim: dict[str, Any] | None = None


def _result(outcome: Mapping[str, Any]) -> AttemptResult:
    """The `AttemptResult` of what `task.run_attempt` returned."""
    where = outcome.get("where")
    kind = outcome.get("outcome")
    if kind == "lost":
        message = f"the Dask worker running it died or closed ({where}); it was not run again"
        return AttemptResult("lost", error=AttemptError(WORKER_LOST, message), where=where)
    if kind == "cancelled" and outcome.get("exit_code") is None:
        return AttemptResult("cancelled", where=where)
    result = reply_from_json(
        outcome.get("reply"),
        exit_code=outcome.get("exit_code"),
        stdout=outcome.get("stdout") or "",
        stderr=outcome.get("stderr") or "",
        logs_text=outcome.get("logs") or "",
    )
    status = "cancelled" if kind == "cancelled" else result.status
    error = None if status == "cancelled" else result.error
    return AttemptResult(
        status, result.exit_code, result.stdout, result.stderr, result.logs, error, where
    )


@hookimpl
def tideflow_register_executors(registry: BackendRegistry[DaskExecutor]) -> None:
    registry.register(DaskExecutor)
