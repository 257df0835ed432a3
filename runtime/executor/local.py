"""Attempts run on this machine: Python callables in pre-started worker processes
(`runtime.worker_pool`), commands as processes of their own (`runtime.commands`).

Each attempt resolves the job's `env()`/`secret()` values first (a missing one
fails the attempt, and retrying cannot help), records its start once it has a
process, and ends with an `AttemptOutcome` holding what it wrote, with every
secret value redacted. A program that does not exist fails without a retry too.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tideflow.compiler.ir import JobNode
from tideflow.runtime import secrets
from tideflow.runtime.commands import CommandFailed, LinePublisher, RunningCommand, command_argv
from tideflow.runtime.context import Publisher, PublisherFactory, PublishError, load_object
from tideflow.runtime.job_worker import qualified_name
from tideflow.runtime.model import AttemptStatus, ErrorInfo
from tideflow.runtime.store import utcnow
from tideflow.runtime.worker_pool import Captured, WorkerPool, describe_exit

from .attempts import (
    Attempt,
    AttemptOutcome,
    JobSpec,
    RunningAttempt,
    WorkerCrashed,
    killed_error,
    redacted,
)

__all__ = ["LocalAttempts"]


class LocalAttempts:
    """Runs attempts as processes of this machine (an `AttemptRunner`).

    `publisher_factory` ("module:function") makes the publishers of jobs that
    publish; `sys_path` is added to a Python job's import path (the flow file's
    folder); after a worker was killed or died, the pool is topped up again to
    `min_workers` until `begin_close()`."""

    def __init__(
        self,
        pool: WorkerPool,
        *,
        publisher_factory: str,
        sys_path: tuple[str, ...],
        min_workers: int,
    ) -> None:
        self.pool = pool
        self.publisher_factory = publisher_factory
        self.sys_path = sys_path
        self.min_workers = min_workers
        self._warm = True

    def start(self) -> None:
        """Start the first worker processes."""
        self.pool.prestart(self.min_workers)

    def begin_close(self) -> None:
        """Start no more worker processes in advance (the executor is stopping)."""
        self._warm = False

    async def aclose(self, grace: float) -> None:
        await self.pool.close(grace)

    async def run(self, attempt: Attempt) -> tuple[int, AttemptOutcome]:
        if attempt.node.run is not None:
            return await self._python_attempt(attempt)
        return await self._command_attempt(attempt)

    async def _python_attempt(self, attempt: Attempt) -> tuple[int, AttemptOutcome]:
        node = attempt.node
        spec = attempt.spec
        try:
            resolved = _resolve(node)
        except secrets.UnresolvedValueError as exc:
            return _unresolved(attempt, exc)
        request = {
            "target": node.run,
            "run_id": attempt.job_run_id,
            "flow": attempt.flow,
            "job": node.name,
            "attempt": attempt.number,
            "scheduled_at": attempt.scheduled_at,
            "params": {**node.params, **attempt.params},
            "env": resolved.env,
            "secrets": tuple(resolved.secrets),
            "publishes": node.publishes,
            "publisher": (self.publisher_factory, spec.publisher_specs)
            if spec.publisher_specs
            else None,
            "sys_path": self.sys_path,
        }
        worker = self.pool.acquire()
        at = utcnow()
        reply_future = worker.start(request)
        # recorded while the worker already runs the attempt: the write overlaps it
        try:
            attempt_id = attempt.record_start(worker.pid, at)
        except Exception:
            # not recorded (the store failed, or refused a deposed leader's fencing
            # token): an attempt nobody knows of must not run on
            await self.pool.discard(worker, 0)
            raise
        running = RunningAttempt(lambda grace: self.pool.discard(worker, grace))
        unwatch = attempt.watch(running)
        try:
            reply = await reply_future
        finally:
            unwatch()
        if reply is not None and running.reason is None:
            captured = worker.captured()
            self.pool.release(worker)
        else:
            await (running.killing or self.pool.discard(worker, 0))
            captured = worker.captured()
            if self._warm:  # keep the pool warm for the next attempts
                self.pool.prestart(self.min_workers)
        redact = _redactor(spec, resolved)
        if reply is not None:
            if reply["ok"]:
                outcome = AttemptOutcome(AttemptStatus.SUCCESS, captured=captured)
            else:
                outcome = AttemptOutcome(
                    AttemptStatus.FAILED,
                    exit_code=reply["exit_code"],
                    captured=captured,
                    error=ErrorInfo(*reply["error"]),
                )
        elif running.reason is not None:
            outcome = AttemptOutcome(
                running.reason,
                exit_code=worker.returncode,
                captured=captured,
                error=killed_error(running.reason, spec.timeout),
            )
        else:
            what = f"the worker process (pid {worker.pid}) {describe_exit(worker.returncode)}"
            outcome = AttemptOutcome(
                AttemptStatus.CRASHED,
                exit_code=worker.returncode,
                captured=captured,
                error=ErrorInfo(qualified_name(WorkerCrashed), what, ""),
            )
        return attempt_id, redacted(outcome, redact)

    async def _command_attempt(self, attempt: Attempt) -> tuple[int, AttemptOutcome]:
        node = attempt.node
        spec = attempt.spec
        try:
            resolved = _resolve(node)
        except secrets.UnresolvedValueError as exc:
            return _unresolved(attempt, exc)
        redact = _redactor(spec, resolved)
        assert node.command is not None
        command = node.command if isinstance(node.command, str) else resolved.argv
        argv = command_argv(command, node.shell)
        env = {**os.environ, **resolved.env}
        lines: LinePublisher | None = None
        if node.publish_stdout and node.publishes:
            topic = node.publishes[0]
            lines = LinePublisher(self._publisher_maker(spec, topic), topic)
        at = utcnow()
        try:
            command_run = await RunningCommand.start(
                argv, env=env, on_line=lines.add if lines is not None else None
            )
        except OSError as exc:
            attempt_id = attempt.record_start(None, at)
            error = ErrorInfo(
                qualified_name(type(exc)), f"cannot run `{argv[0]}`: {exc.strerror or exc}", ""
            )
            retryable = not isinstance(exc, FileNotFoundError | PermissionError)
            outcome = AttemptOutcome(AttemptStatus.FAILED, error=error, retryable=retryable)
            return attempt_id, redacted(outcome, redact)
        attempt_id = attempt.record_start(command_run.pid, at)
        running = RunningAttempt(command_run.kill)
        unwatch = attempt.watch(running)
        try:
            result = await command_run.wait()
        finally:
            unwatch()
        if running.killing is not None:
            await running.killing
        captured = Captured(result.stdout, result.stderr)
        code = result.returncode
        if running.reason is not None:
            outcome = AttemptOutcome(
                running.reason,
                exit_code=code,
                captured=captured,
                error=killed_error(running.reason, spec.timeout),
            )
        elif code < 0:
            what = f"`{argv[0]}` {describe_exit(code)}"
            error = ErrorInfo(qualified_name(CommandFailed), what, "")
            outcome = AttemptOutcome(AttemptStatus.CRASHED, code, captured, error)
        elif code != 0:
            last = next((ln for ln in reversed(result.stderr.splitlines()) if ln.strip()), "")
            what = f"`{argv[0]}` exited with code {code}" + (f": {last.strip()}" if last else "")
            error = ErrorInfo(qualified_name(CommandFailed), what, "")
            outcome = AttemptOutcome(AttemptStatus.FAILED, code, captured, error)
        else:
            outcome = AttemptOutcome(AttemptStatus.SUCCESS, code, captured)
        if lines is not None:
            try:
                if outcome.status is AttemptStatus.SUCCESS:
                    await lines.finish()
            except Exception as exc:
                error = ErrorInfo(
                    qualified_name(type(exc)),
                    f"publishing stdout to topic `{lines.topic}` failed: {exc}",
                    "",
                )
                outcome = AttemptOutcome(AttemptStatus.FAILED, code, captured, error)
            finally:
                await lines.close()
        return attempt_id, redacted(outcome, redact)

    def _publisher_maker(self, spec: JobSpec, topic: str) -> Callable[[], Publisher]:
        factory_path = self.publisher_factory
        flow_ir_json = spec.publisher_specs.get(topic)

        def make() -> Publisher:
            if flow_ir_json is None:
                raise PublishError(f"topic `{topic}` is not defined in the flow")
            factory: PublisherFactory = load_object(factory_path)
            return factory(flow_ir_json, topic)

        return make


def _resolve(node: JobNode) -> secrets.Resolved:
    argv = node.command if isinstance(node.command, tuple) else ()
    return secrets.resolve(node.env, argv, where=f'job "{node.name}"')


def _redactor(spec: JobSpec, resolved: secrets.Resolved | None) -> secrets.Redactor:
    values = set(resolved.secrets) if resolved is not None else set()
    if spec.broker_secrets:
        values |= secrets.secret_values(spec.broker_secrets)
    return secrets.Redactor(values)


def _unresolved(attempt: Attempt, exc: secrets.UnresolvedValueError) -> tuple[int, AttemptOutcome]:
    attempt_id = attempt.record_start(None, utcnow())
    error = ErrorInfo(qualified_name(type(exc)), str(exc), "")
    return attempt_id, AttemptOutcome(AttemptStatus.FAILED, error=error, retryable=False)
