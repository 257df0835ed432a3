"""Long-lived worker processes for Python attempts, one attempt at a time each.

The pool starts workers on demand up to its limit (the executor admits at most
that many attempts at once, so taking a worker never waits) and reuses idle
ones: a reused worker has the job's modules imported already, which is what
keeps dispatch cheap. Each worker is a session leader, so a timeout or a
cancellation kills the worker *and* whatever the job started (its process
group); a killed or crashed worker is replaced by a fresh one.

A worker's stdout, stderr and log records go to three unlinked temporary files
opened in append mode, shared with the worker; the pool truncates them before
each attempt and reads them after it, so the output of an attempt that crashed
is kept too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from .job_worker import encode_frame

HEADER: Final = struct.Struct(">I")
# Read at most this much of a capture file (its end); the store keeps 1M characters.
MAX_CAPTURE_BYTES: Final = 4 * 1024 * 1024
WORKER_MODULE: Final = "tideflow.runtime.job_worker"


@dataclass(frozen=True, slots=True)
class Captured:
    """What an attempt wrote: stdout, stderr, and log records (time, level, message)."""

    stdout: str = ""
    stderr: str = ""
    logs: tuple[tuple[datetime, str, str], ...] = field(default_factory=tuple)


def capture_file() -> int:
    fd, path = tempfile.mkstemp(prefix="tideflow-capture-")
    Path(path).unlink()
    # append mode: after a truncation every writer (worker, its children) starts at 0
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


def read_capture(fd: int) -> str:
    """The text of a capture file (its end, when it is very long)."""
    size = os.fstat(fd).st_size
    if size <= MAX_CAPTURE_BYTES:
        data = os.pread(fd, size, 0)
        return data.decode(errors="replace")
    data = os.pread(fd, MAX_CAPTURE_BYTES, size - MAX_CAPTURE_BYTES)
    return f"[… {size - MAX_CAPTURE_BYTES} bytes cut …]\n" + data.decode(errors="replace")


def parse_log_records(text: str) -> tuple[tuple[datetime, str, str], ...]:
    records: list[tuple[datetime, str, str]] = []
    for line in text.splitlines():
        try:
            created, level, message = json.loads(line)
        except ValueError:  # a line cut by a crash mid-write
            continue
        records.append((datetime.fromtimestamp(created, UTC), str(level), str(message)))
    return tuple(records)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "ended"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class Worker:
    """One worker process and its pipes and capture files."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._stdout = capture_file()
        self._stderr = capture_file()
        self._logs = capture_file()
        requests_read, self._requests = os.pipe()
        self._results, results_write = os.pipe()
        os.set_inheritable(self._requests, False)
        os.set_inheritable(self._results, False)
        child_env = dict(os.environ if env is None else env)
        child_env["PYTHONUNBUFFERED"] = "1"  # print() output must survive a crash
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    WORKER_MODULE,
                    "--requests",
                    str(requests_read),
                    "--results",
                    str(results_write),
                    "--logs",
                    str(self._logs),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                pass_fds=(requests_read, results_write, self._logs),
                env=child_env,
                start_new_session=True,
            )
        finally:
            os.close(requests_read)
            os.close(results_write)
        self.pid = self.process.pid
        self.alive = True
        self.attempts = 0  # served so far, for tests and diagnostics
        self._buffer = bytearray()
        self._reply: asyncio.Future[Any | None] | None = None
        self._loop = asyncio.get_running_loop()
        os.set_blocking(self._results, False)
        self._loop.add_reader(self._results, self._on_readable)
        self._killing: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._final: Captured | None = None  # the last capture, kept when the files close

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} alive={self.alive}>"

    # -- one attempt --

    def start(self, request: Mapping[str, Any]) -> asyncio.Future[Any | None]:
        """Send a request; the future gives the reply, or None if the worker died first."""
        assert self._reply is None, "a worker runs one attempt at a time"
        for fd in (self._stdout, self._stderr, self._logs):
            os.ftruncate(fd, 0)
        future: asyncio.Future[Any | None] = self._loop.create_future()
        self._reply = future
        self.attempts += 1
        try:
            frame = encode_frame(dict(request))
            view = memoryview(frame)
            while view:
                view = view[os.write(self._requests, view) :]
        except OSError:  # the worker died before it read the request
            self._on_eof()
        return future

    def captured(self) -> Captured:
        """What the current (or last) attempt wrote; still available after `reap`."""
        if self._final is not None:
            return self._final
        return Captured(
            read_capture(self._stdout),
            read_capture(self._stderr),
            parse_log_records(read_capture(self._logs)),
        )

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._results, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._on_eof()
            return
        self._buffer += chunk
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + size:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            reply = pickle.loads(body)
            future, self._reply = self._reply, None
            if future is not None and not future.done():
                future.set_result(reply)

    def _on_eof(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self._ended.set()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._results)
        future, self._reply = self._reply, None
        if future is not None and not future.done():
            future.set_result(None)

    # -- ending --

    def kill(self, grace: float) -> asyncio.Task[None]:
        """Kill the worker's process group: SIGTERM, then SIGKILL after `grace` seconds
        (at once if the worker ends sooner), then reap it. Idempotent."""
        if self._killing is None:
            self._killing = self._loop.create_task(self._kill(grace))
        return self._killing

    async def _kill(self, grace: float) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            if grace > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), grace)
        # The worker is not reaped yet, so its pid (the group's id) cannot be reused:
        # this reaches only what the job left behind.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        await self.reap()

    async def reap(self) -> int:
        """Wait for the process to end and release its files; its return code."""
        self._on_eof()
        returncode = self.process.poll()
        if returncode is None:
            returncode = await asyncio.to_thread(self.process.wait)
        if self._final is None:
            self._final = self.captured()
        for fd in (self._requests, self._results, self._stdout, self._stderr, self._logs):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._requests = self._results = self._stdout = self._stderr = self._logs = -1
        return returncode

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


class WorkerPool:
    """Worker processes shared by the attempts of one executor."""

    def __init__(self, limit: int, *, env: Mapping[str, str] | None = None) -> None:
        self.limit = limit
        self.env = env
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self._ending: set[asyncio.Task[None]] = set()

    @property
    def size(self) -> int:
        return len(self.idle) + len(self.busy)

    def prestart(self, count: int) -> None:
        """Start workers now so the first attempts do not pay for it."""
        while self.size < min(count, self.limit):
            self.idle.append(Worker(self.env))

    def acquire(self) -> Worker:
        """An idle worker, or a new one; the caller bounds how many it holds."""
        while self.idle:
            worker = self.idle.pop()
            if worker.alive:
                self.busy.add(worker)
                return worker
            self._end(worker, 0)
        if self.size >= self.limit:
            raise RuntimeError(f"all {self.limit} workers are busy")
        worker = Worker(self.env)
        self.busy.add(worker)
        return worker

    def release(self, worker: Worker) -> None:
        """Give back a worker whose attempt ended with a reply."""
        self.busy.discard(worker)
        if worker.alive:
            self.idle.append(worker)
        else:
            self._end(worker, 0)

    def discard(self, worker: Worker, grace: float) -> asyncio.Task[None]:
        """Kill a worker (timeout, cancellation, crash) and forget it."""
        self.busy.discard(worker)
        with contextlib.suppress(ValueError):
            self.idle.remove(worker)
        return self._end(worker, grace)

    def _end(self, worker: Worker, grace: float) -> asyncio.Task[None]:
        task = worker.kill(grace)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return task

    async def close(self, grace: float = 1.0) -> None:
        """Kill every worker (busy ones should have been dealt with by the caller)."""
        for worker in [*self.idle, *self.busy]:
            self.discard(worker, grace)
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
