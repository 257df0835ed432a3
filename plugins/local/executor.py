"""The `local` executor: attempts on the orchestrator's own machine.

By default the orchestrator runs `local` attempts in its warm pool of worker
processes (`tideflow.runtime.worker_pool`), which reuses a worker's imported
modules from one attempt to the next. `isolate = true` runs each attempt through
this class instead: a fresh `python -m tideflow.runtime.job_worker --once`
process in a session of its own (so a timeout or a cancellation kills it and
whatever it started), its request, reply, output and log records in a private
temporary folder removed once the outcome is read.

An orchestrator that dies takes nothing with it that a successor could re-attach
to: `attempts()` lists only this instance's own, and a restart marks the rest lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tideflow.plugins import builtin_options
from tideflow.plugins.api import (
    AttemptHandle,
    AttemptRequest,
    AttemptResult,
    BackendContext,
    BackendError,
    BackendRegistry,
    Executor,
    hookimpl,
    reply_from_json,
    worker_argv,
)

__all__ = ["LocalExecutor", "tideflow_register_executors"]


@dataclass(slots=True)
class _Running:
    process: asyncio.subprocess.Process
    folder: Path
    cancelled: bool = False


class LocalExecutor(Executor):
    """Runs attempts on the orchestrator's machine (a warm worker pool, or a fresh process each)."""

    name = "local"
    options = builtin_options.LOCAL_EXECUTOR
    remote = False

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, context: BackendContext | None = None
    ) -> None:
        super().__init__(config or {}, context=context)
        self._running: dict[str, _Running] = {}
        self._closed = False

    async def start(self, request: AttemptRequest) -> AttemptHandle:
        if self._closed:
            raise BackendError('executor "local" is closed')
        if request.key in self._running:
            raise BackendError(f"attempt {request.key} is already running")
        folder = Path(tempfile.mkdtemp(prefix="tideflow-attempt-"))  # 0700
        request_path = folder / "request.json"
        fd = os.open(request_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(request.to_json())
        argv = worker_argv(str(request_path), str(folder / "reply.json"), str(folder / "logs"))
        python = self.config.get("python")
        if isinstance(python, str) and python:
            argv[0] = python
        try:
            with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its process group: killed as a whole
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise BackendError(f"cannot start `{argv[0]}`: {exc.strerror or exc}") from exc
        self._running[request.key] = _Running(process, folder)
        return AttemptHandle(request.key, request.key, f"{socket.gethostname()} pid {process.pid}")

    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        running = self._running.get(handle.ref)
        if running is None:
            raise BackendError(f"no attempt {handle.ref} runs here")
        code = await running.process.wait()
        folder = running.folder
        try:
            reply = _read(folder / "reply.json")
            result = reply_from_json(
                reply or None,
                exit_code=code,
                stdout=_read(folder / "stdout"),
                stderr=_read(folder / "stderr"),
                logs_text=_read(folder / "logs"),
            )
        finally:
            self._running.pop(handle.ref, None)
            shutil.rmtree(folder, ignore_errors=True)
        if running.cancelled and result.status != "success":
            return AttemptResult(
                "cancelled", code, result.stdout, result.stderr, result.logs, None, handle.where
            )
        return AttemptResult(
            result.status,
            result.exit_code,
            result.stdout,
            result.stderr,
            result.logs,
            result.error,
            handle.where,
        )

    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        running = self._running.get(handle.ref)
        if running is None or running.process.returncode is not None:
            return
        running.cancelled = True
        _signal_group(running.process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(running.process.wait()), grace)
        # whatever the attempt started goes too, even when its leader has ended
        _signal_group(running.process.pid, signal.SIGKILL)

    async def attempts(self) -> Sequence[AttemptHandle]:
        return [
            AttemptHandle(key, key, f"{socket.gethostname()} pid {r.process.pid}")
            for key, r in self._running.items()
            if r.process.returncode is None
        ]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key in list(self._running):
            await self.cancel(AttemptHandle(key, key), grace=0.0)
        for running in list(self._running.values()):
            with contextlib.suppress(ProcessLookupError):
                await running.process.wait()
            shutil.rmtree(running.folder, ignore_errors=True)
        self._running.clear()


def _signal_group(pid: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, number)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return ""


@hookimpl
def tideflow_register_executors(registry: BackendRegistry[Executor]) -> None:
    registry.register(LocalExecutor)
