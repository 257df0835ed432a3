"""Running a command job: argv (or `/bin/sh -c` with `shell = true`) in its own session.

The command runs with the orchestrator's environment plus the job's resolved
`env`. Its stdout and stderr are captured (to files, so a command that writes a
lot never blocks on a full pipe); with `publish_stdout` stdout is read line by
line instead, each non-empty line handed to `on_line` (and kept for the record).
An attempt owns its process group: when the command ends, whatever it left
running in the group is killed, so nothing outlives its attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .context import Publisher
from .store import MAX_OUTPUT_CHARS
from .worker_pool import capture_file, read_capture

SHELL: Final = "/bin/sh"
# How long to keep reading a command's stdout after it exited (a child that left
# the process group may still hold the pipe).
DRAIN_SECONDS: Final = 1.0


class CommandFailed(Exception):
    """A command exited with a non-zero code (recorded as the attempt's error)."""


def command_argv(command: Sequence[str] | str, shell: bool) -> list[str]:
    """The argv to execute: with `shell`, a string (or the argv's first item) is the
    script for `/bin/sh -c` and further items become `$0`, `$1`, ..."""
    if shell:
        if isinstance(command, str):
            return [SHELL, "-c", command]
        return [SHELL, "-c", *command]
    if isinstance(command, str):
        return shlex.split(command)
    return list(command)


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class RunningCommand:
    """A started command. `wait()` returns when it ends; `kill()` ends it early."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        stdout_fd: int | None,
        stderr_fd: int,
        on_line: Callable[[bytes], None] | None,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self._stdout_fd = stdout_fd
        self._stderr_fd = stderr_fd
        self._on_line = on_line
        self._lines: list[str] = []
        self._line_chars = 0
        self._reader: asyncio.Task[None] | None = None
        self._line_error: BaseException | None = None
        if on_line is not None:
            self._reader = asyncio.get_running_loop().create_task(self._read_lines())
        self._killing: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
        on_line: Callable[[bytes], None] | None = None,
    ) -> RunningCommand:
        """Start `argv`; raises OSError when it cannot be executed."""
        stdout_fd = None if on_line is not None else capture_file()
        stderr_fd = capture_file()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_fd is None else stdout_fd,
                stderr=stderr_fd,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            for fd in (stdout_fd, stderr_fd):
                if fd is not None:
                    os.close(fd)
            raise
        return cls(process, stdout_fd, stderr_fd, on_line)

    async def _read_lines(self) -> None:
        stream = self.process.stdout
        assert stream is not None and self._on_line is not None
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over the stream limit: take what is there
                line = await stream.read(65536)
            if not line:
                return
            text = line.decode(errors="replace")
            self._lines.append(text)
            self._line_chars += len(text)
            while self._line_chars > MAX_OUTPUT_CHARS and len(self._lines) > 1:
                self._line_chars -= len(self._lines.pop(0))
            payload = line.rstrip(b"\r\n")
            if payload and self._line_error is None:
                try:
                    self._on_line(payload)
                except Exception as exc:  # reported as the attempt's failure
                    self._line_error = exc

    @property
    def line_error(self) -> BaseException | None:
        """What `on_line` raised, if it did (later lines were not handed to it)."""
        return self._line_error

    async def wait(self) -> CommandResult:
        """Wait for the command to end, kill what it left in its group, collect output."""
        returncode = await self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), DRAIN_SECONDS)
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        stdout = "".join(self._lines) if self._stdout_fd is None else read_capture(self._stdout_fd)
        stderr = read_capture(self._stderr_fd)
        for fd in (self._stdout_fd, self._stderr_fd):
            if fd is not None:
                os.close(fd)
        self._stdout_fd, self._stderr_fd = None, -1
        return CommandResult(returncode, stdout, stderr)

    def kill(self, grace: float) -> asyncio.Task[None]:
        """SIGTERM to the process group, SIGKILL after `grace` seconds. Idempotent;
        `wait()` then returns the (signal) return code."""
        if self._killing is None:
            self._killing = asyncio.get_running_loop().create_task(self._kill(grace))
        return self._killing

    async def _kill(self, grace: float) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


class LinePublisher:
    """Publishes a command's stdout lines to one topic, in batches, off the event loop.

    The publisher is built (by `make`) and used only in a worker thread, one batch
    at a time, so a synchronous client never blocks the orchestrator. `add` never
    raises; `finish` sends what is left and raises what publishing raised."""

    def __init__(self, make: Callable[[], Publisher], topic: str, batch: int = 500) -> None:
        self._make = make
        self.topic = topic
        self.batch = batch
        self.published = 0
        self._publisher: Publisher | None = None
        self._pending: list[bytes] = []
        self._sending: asyncio.Task[None] | None = None

    def add(self, line: bytes) -> None:
        self._pending.append(line)
        if len(self._pending) >= self.batch and (self._sending is None or self._sending.done()):
            self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        lines, self._pending = self._pending, []
        if lines:
            await asyncio.to_thread(self._publish, lines)

    def _publish(self, lines: list[bytes]) -> None:
        if self._publisher is None:
            self._publisher = self._make()
        for line in lines:
            self._publisher.publish(self.topic, line, None)
        self._publisher.flush()
        self.published += len(lines)

    async def finish(self) -> None:
        """Publish and flush every line added so far."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            await sending
        await self._send()

    async def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            with contextlib.suppress(BaseException):
                await self._sending
        if self._publisher is not None:
            publisher, self._publisher = self._publisher, None
            await asyncio.to_thread(publisher.close)
