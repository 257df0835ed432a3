"""Attempts on an executor plugin (`tideflow.plugins.api.Executor`): Dask,
Kubernetes Jobs, a third party's engine.

`PluginAttempts` is the `AttemptRunner` the driver uses for a job whose
`executor` names an executor block: it turns the job into an `AttemptRequest`
(env and `secret()` values resolved here, on the orchestrator, unless the engine
supplies secrets itself), records the attempt's start with the engine's name for
it (`executor_ref`), hands the driver a kill handle that calls `cancel` (so the
job's timeout and an operator's cancellation work as for a local attempt), and
turns the `AttemptResult` into the `AttemptOutcome` the driver records, with
every secret value the orchestrator knows removed. A command job that publishes
its stdout publishes it from here, once the attempt succeeded.

`adopt` re-attaches to an attempt a previous orchestrator started (its row says
which executor and reference), so that a restart records the attempt's real end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from tideflow.compiler.ir import JobNode, SecretRef
from tideflow.plugins.api import (
    AttemptError,
    AttemptHandle,
    AttemptRequest,
    AttemptResources,
    AttemptResult,
    SecretEnv,
)
from tideflow.plugins.api import Executor as PluginExecutor
from tideflow.runtime import secrets
from tideflow.runtime.commands import CommandFailed, LinePublisher, command_argv
from tideflow.runtime.context import Publisher, PublisherFactory, PublishError, load_object
from tideflow.runtime.job_worker import qualified_name
from tideflow.runtime.model import AttemptRow, AttemptStatus, ErrorInfo
from tideflow.runtime.store import utcnow
from tideflow.runtime.worker_pool import Captured

from .attempts import Attempt, AttemptOutcome, JobSpec, RunningAttempt, killed_error, redacted

__all__ = ["ExecutorUnavailable", "PluginAttempts"]

log = logging.getLogger("tideflow.executor")

_STATUSES = {
    "success": AttemptStatus.SUCCESS,
    "failed": AttemptStatus.FAILED,
    "crashed": AttemptStatus.CRASHED,
    "timeout": AttemptStatus.TIMEOUT,
    "cancelled": AttemptStatus.CANCELLED,
    "lost": AttemptStatus.LOST,
}


class ExecutorUnavailable(Exception):
    """An executor could not start or follow an attempt (recorded as the error)."""


ExecutorUnavailable.__module__ = "tideflow.runtime.executor"


class PluginAttempts:
    """Runs attempts on the executor plugin instance `executor`, configured by the
    block `block` (an `AttemptRunner`)."""

    def __init__(
        self,
        executor: PluginExecutor,
        block: str,
        *,
        publisher_factory: str,
        sys_path: tuple[str, ...],
    ) -> None:
        self.executor = executor
        self.block = block
        self.publisher_factory = publisher_factory
        self.sys_path = sys_path

    def start(self) -> None:
        """Nothing to prepare: the engine is reached on the first attempt."""

    def begin_close(self) -> None:
        """Nothing started in advance."""

    async def aclose(self, grace: float) -> None:
        await self.executor.aclose()

    # -- one attempt --

    async def run(self, attempt: Attempt) -> tuple[int, AttemptOutcome]:
        node = attempt.node
        spec = attempt.spec
        try:
            request, known_secrets = self._request(attempt)
        except secrets.UnresolvedValueError as exc:
            attempt_id = attempt.record_start(None, utcnow(), executor=self.block)
            error = ErrorInfo(qualified_name(type(exc)), str(exc), "")
            return attempt_id, AttemptOutcome(AttemptStatus.FAILED, error=error, retryable=False)
        redact = _redactor(spec, known_secrets)
        at = utcnow()
        try:
            handle = await self.executor.start(request)
        except Exception as exc:
            attempt_id = attempt.record_start(None, at, executor=self.block)
            message = f'executor "{self.block}" could not start the attempt: {exc}'
            error = ErrorInfo(qualified_name(ExecutorUnavailable), message, "")
            return attempt_id, redacted(AttemptOutcome(AttemptStatus.FAILED, error=error), redact)
        attempt_id = attempt.record_start(
            None, at, executor=self.block, ref=handle.ref, where=handle.where
        )
        outcome = await self._follow(handle, node, spec, attempt.watch)
        return attempt_id, redacted(outcome, redact)

    async def adopt(
        self,
        row: AttemptRow,
        node: JobNode,
        spec: JobSpec,
        watch: Callable[[RunningAttempt], Callable[[], None]],
    ) -> AttemptOutcome:
        """The outcome of attempt `row`, started by an earlier orchestrator and still
        held by the engine (`held`), followed to its end as if we had started it."""
        assert row.executor_ref is not None
        key = f"{node.name}/{row.job_run_id}/{row.number}"
        handle = AttemptHandle(key, row.executor_ref, row.executor_where)
        outcome = await self._follow(handle, node, spec, watch)
        return redacted(outcome, _redactor(spec, frozenset()))

    async def held(self) -> set[str]:
        """The references of the attempts the engine holds (running, or ended and not
        collected); raises `ExecutorUnavailable` when it cannot say."""
        try:
            return {handle.ref for handle in await self.executor.attempts()}
        except Exception as exc:
            raise ExecutorUnavailable(
                f'executor "{self.block}" cannot list its attempts: {exc}'
            ) from exc

    async def _follow(
        self,
        handle: AttemptHandle,
        node: JobNode,
        spec: JobSpec,
        watch: Callable[[RunningAttempt], Callable[[], None]],
    ) -> AttemptOutcome:
        def kill(grace: float) -> asyncio.Task[None]:
            return asyncio.get_running_loop().create_task(self._cancel(handle, grace))

        running = RunningAttempt(kill)
        unwatch = watch(running)
        try:
            result = await self.executor.wait(handle)
        except Exception as exc:
            message = f'executor "{self.block}" lost track of the attempt: {exc}'
            result = AttemptResult(
                "lost", error=AttemptError(qualified_name(ExecutorUnavailable), message)
            )
        finally:
            unwatch()
        if running.killing is not None:
            await running.killing
        outcome = self._outcome(result, running.reason, spec, node)
        where = result.where or handle.where
        if where is not None:
            outcome = dataclasses.replace(outcome, where=where)
        if outcome.status is AttemptStatus.SUCCESS and node.publish_stdout and node.publishes:
            outcome = await self._publish_stdout(outcome, node, spec)
        return outcome

    async def _cancel(self, handle: AttemptHandle, grace: float) -> None:
        try:
            await self.executor.cancel(handle, grace=grace)
        except Exception:
            log.warning(
                'executor "%s" could not cancel attempt %s', self.block, handle.key, exc_info=True
            )

    def _outcome(
        self,
        result: AttemptResult,
        reason: AttemptStatus | None,
        spec: JobSpec,
        node: JobNode,
    ) -> AttemptOutcome:
        captured = Captured(result.stdout, result.stderr, result.logs)
        error = None
        if result.error is not None:
            e = result.error
            error = ErrorInfo(e.type, e.message, e.traceback, e.function, e.location)
        status = _STATUSES[result.status]
        if reason is not None and status is not AttemptStatus.SUCCESS:
            # we ended it: a timeout or a stop, whatever the engine calls it
            return AttemptOutcome(
                reason, result.exit_code, captured, killed_error(reason, spec.timeout)
            )
        if status is AttemptStatus.TIMEOUT and error is None:
            error = killed_error(AttemptStatus.TIMEOUT, spec.timeout)
        if status is AttemptStatus.FAILED and error is not None and node.run is None:
            last = next((ln for ln in reversed(result.stderr.splitlines()) if ln.strip()), "")
            if last and error.type == qualified_name(CommandFailed):
                error = ErrorInfo(error.type, f"{error.message}: {last.strip()}", "")
        return AttemptOutcome(status, result.exit_code, captured, error)

    async def _publish_stdout(
        self, outcome: AttemptOutcome, node: JobNode, spec: JobSpec
    ) -> AttemptOutcome:
        topic = node.publishes[0]
        flow_ir_json = spec.publisher_specs.get(topic)
        factory_path = self.publisher_factory

        def make() -> Publisher:
            if flow_ir_json is None:
                raise PublishError(f"topic `{topic}` is not defined in the flow")
            factory: PublisherFactory = load_object(factory_path)
            return factory(flow_ir_json, topic)

        lines = LinePublisher(make, topic)
        try:
            for line in outcome.captured.stdout.encode().splitlines():
                if line:  # as for a local command: each non-empty line, one message
                    lines.add(line)
            await lines.finish()
        except Exception as exc:
            error = ErrorInfo(
                qualified_name(type(exc)),
                f"publishing stdout to topic `{topic}` failed: {exc}",
                "",
            )
            return dataclasses.replace(outcome, status=AttemptStatus.FAILED, error=error)
        finally:
            with contextlib.suppress(Exception):
                await lines.close()
        return outcome

    # -- the request --

    def _request(self, attempt: Attempt) -> tuple[AttemptRequest, frozenset[str]]:
        """The request for `attempt`, and the secret values resolved for it."""
        node = attempt.node
        spec = attempt.spec
        where = f'job "{node.name}"'
        by_reference = self.executor.secrets_by_reference
        plain: dict[str, str] = {}
        secret_env: dict[str, SecretEnv] = {}
        known: set[str] = set()
        for var, value in node.env.items():
            if isinstance(value, SecretRef):
                try:
                    resolved = secrets.resolve_value(value, f"the env of {where}")
                except secrets.UnresolvedValueError:
                    if not by_reference:
                        raise
                    secret_env[var] = SecretEnv(value.name, None)
                    continue
                known.add(resolved)
                secret_env[var] = SecretEnv(value.name, resolved)
            else:
                plain[var] = secrets.resolve_value(value, f"the env of {where}")
        command: tuple[str, ...] | None = None
        if node.command is not None:
            argv_values = node.command if isinstance(node.command, tuple) else ()
            resolved_argv = secrets.resolve({}, argv_values, where=where)
            known |= resolved_argv.secrets
            text = node.command if isinstance(node.command, str) else resolved_argv.argv
            command = tuple(command_argv(text, node.shell))
        resources = node.resources
        request = AttemptRequest(
            key=f"{attempt.flow}/{node.name}/{attempt.job_run_id}/{attempt.number}",
            flow=attempt.flow,
            job=node.name,
            job_run_id=attempt.job_run_id,
            attempt=attempt.number,
            target=node.run,
            command=command,
            scheduled_at=attempt.scheduled_at,
            params={**node.params, **attempt.params},
            env=plain,
            secret_env=secret_env,
            publishes=node.publishes,
            publishers=dict(spec.publisher_specs) if node.run is not None else {},
            publisher_factory=self.publisher_factory if node.run is not None else None,
            sys_path=self.sys_path,
            resources=AttemptResources(
                resources.cpu, resources.memory, resources.gpu, dict(resources.extras)
            ),
            timeout=spec.timeout,
            labels={
                "flow": attempt.flow,
                "job": node.name,
                "run": str(attempt.job_run_id),
                "attempt": str(attempt.number),
            },
        )
        return request, frozenset(known)


def _redactor(spec: JobSpec, known: frozenset[str]) -> secrets.Redactor:
    values = set(known)
    if spec.broker_secrets:
        values |= secrets.secret_values(spec.broker_secrets)
    return secrets.Redactor(values)
