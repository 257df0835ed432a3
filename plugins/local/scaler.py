"""The `local` scaler: consumer instances as supervised OS processes on this machine.

Each instance is `PYTHON -m tideflow worker FILE CONSUMER --instance-id ID --ir IR`,
in a process group (session) of its own, where PYTHON is the `python` option
(default: this interpreter), FILE the flow's source file and IR a private file
holding the flow's IR JSON as the orchestrator compiled it
(`BackendContext.flow_ir_json`; written at the first start, removed by
`aclose()`): instances run that flow and never compile FILE again, so an edit
of FILE reaches them only through a new orchestrator. Without an IR in the
context, `--ir` is left out and instances compile FILE. Instances inherit this
process's environment, so the state store the orchestrator uses
(`TIDEFLOW_STATE`) is theirs too; their output is forwarded, a line at a time,
to the `tideflow.worker` logger, and its last lines are kept for `health()`.

Supervision
    `scale(n)` starts instances, or stops the newest ones: SIGTERM to the
    instance, which drains, then SIGKILL to its process group once the scale
    block's `drain_timeout` has passed. `scale()` returns at once; stopping goes
    on in the background, and `current()` counts only instances not told to stop
    (running, starting, or waiting to be restarted). An instance that exits
    without being asked to, whatever its exit status, is restarted after
    `restart_backoff`, doubled for each crash in a row (at most `max_backoff`);
    an instance that stays up for `stable_after` (a minute) ends its streak.
    After `crash_loop_after` crashes in a row the consumer is *crash-looping*:
    `crash_looping` and `health()` say so, with the last exit status and output,
    and the instance keeps being restarted at the capped delay.

No orphans
    `aclose()` stops every instance (SIGTERM, drain, SIGKILL) and returns once
    they are gone. If this process dies without closing (`kill -9`), each
    instance notices and drains by itself: it holds the read end of a pipe
    whose write end only this process holds (`LIFELINE_ENV`), so the pipe
    reports end-of-file when this process is gone; on Linux it also asks for
    SIGTERM when its parent dies. Instances also carry `PARENT_ENV`, the pid and
    start time of the process that started them: a new scaler for the same
    flow file and consumer reaps (SIGTERM, drain, SIGKILL) the instances on this
    machine whose starting process is gone, and touches no other process (the
    command line must be `... tideflow worker FILE CONSUMER ...` with the same
    file and consumer, and the environment must carry that marker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

from tideflow.plugins import builtin_options
from tideflow.plugins.api import (
    DEFAULT_DRAIN_TIMEOUT,
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    Scaler,
    hookimpl,
    ready_message,
)

from .process import Leftover, alive, describe_exit, find_leftovers, kill_group, parent_marker
from .protocol import LIFELINE_ENV, PARENT_ENV

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode
    from tideflow.plugins.api import BackendRegistry

__all__ = ["ExitRecord", "LocalScaler", "tideflow_register_scalers"]

log = logging.getLogger("tideflow.local_scaler")
output_log = logging.getLogger("tideflow.worker")
# "2026-11-22 04:03:25,014 WARNING tideflow.consumer.workers: ..." as a worker logs it
_LEVELS: Final = logging.getLevelNamesMapping()
_WORKER_LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d [\d:,.]+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$"
)

#: How often instances are checked (exits, restarts due, drain deadlines).
SUPERVISE_INTERVAL: Final = 0.05
#: An instance up this long ends its crash streak.
STABLE_AFTER: Final = 60.0
#: Longest delay before a restart.
MAX_BACKOFF: Final = 60.0
#: Lines of an instance's output kept for `health()`.
TAIL_LINES: Final = 20
#: Exits remembered for `health()`.
RECENT_EXITS: Final = 20
#: After SIGKILL, longest wait for the kernel to end a process group.
KILL_WAIT: Final = 5.0


# --- instances --------------------------------------------------------------------------


@dataclass(eq=False)
class _Process:
    """One started `tideflow worker` process and what it printed last."""

    instance_id: str
    popen: subprocess.Popen[bytes]
    started_at: float  # time.monotonic()
    started_wall: datetime
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    ready: bool = False
    kill_at: float | None = None  # set when told to stop
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid


@dataclass(eq=False)
class _Slot:
    """One of the instances asked for: its current process, or when it restarts."""

    number: int
    process: _Process | None = None
    restart_at: float | None = None  # time.monotonic(), while waiting to restart
    crashes_in_row: int = 0
    restarts: int = 0
    last_exit: int | None = None
    last_exit_at: datetime | None = None
    last_output: tuple[str, ...] = ()
    crash_loop_reported: bool = False


@dataclass(frozen=True, slots=True)
class ExitRecord:
    """An instance that ended, asked to (`requested`) or not."""

    instance_id: str
    pid: int | None
    code: int | None
    requested: bool
    at: datetime
    ran_for: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "pid": self.pid,
            "exit_code": self.code,
            "exit": describe_exit(self.code),
            "requested": self.requested,
            "at": self.at.isoformat(),
            "ran_for": round(self.ran_for, 3),
        }


@final
class LocalScaler(Scaler):
    """Consumer instances as supervised OS processes.

    Each instance is a `tideflow worker` process on this machine, restarted with
    a growing delay when it crashes; stopped instances drain first. See the module
    docstring for supervision, crash loops and how no orphan is left behind.
    """

    name: ClassVar[str] = "local"
    options = builtin_options.LOCAL_SCALER

    def __init__(
        self,
        config: Mapping[str, Any],
        consumer: ConsumerNode,
        *,
        context: BackendContext | None = None,
        stable_after: float = STABLE_AFTER,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        """`context.source` must be the flow file. `stable_after` and `max_backoff`
        tune supervision (tests shorten them)."""
        super().__init__(config, consumer, context=context)
        if self.context.source is None:
            raise BackendConfigError(
                f'the local scaler of consumer "{consumer.name}" needs the flow file '
                "(BackendContext.source) to start `tideflow worker FILE CONSUMER`"
            )
        self.source = self.context.source.resolve()
        self.python = self._interpreter(self.config.get("python"))
        self.restart_backoff = float(self.config["restart_backoff"])
        self.crash_loop_after = int(self.config["crash_loop_after"])
        if self.restart_backoff <= 0:
            raise BackendConfigError(
                f'option `restart_backoff` of scaler "local" must be positive, '
                f"not {self.restart_backoff:g}"
            )
        self.drain_timeout = (
            consumer.scale.drain_timeout if consumer.scale is not None else DEFAULT_DRAIN_TIMEOUT
        )
        self.stable_after = stable_after
        self.max_backoff = max(max_backoff, self.restart_backoff)
        self._slots: list[_Slot] = []
        self._stopping: list[_Process] = []
        self._leftovers: list[tuple[Leftover, float]] = []  # with when to SIGKILL it
        self._exits: deque[ExitRecord] = deque(maxlen=RECENT_EXITS)
        self._lifeline: tuple[int, int] | None = None  # (read end, write end)
        self._marker: str | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._numbers = 0
        self._reaped = False
        self._closed = False
        self._ir_file: Path | None = None  # the flow's IR, once written for instances

    def _interpreter(self, option: object) -> str:
        """The `python` option: a bare name is looked up on PATH when an instance
        starts; a relative path is relative to the flow file's folder."""
        if not option:
            return sys.executable
        text = str(option)
        if os.sep not in text or Path(text).is_absolute():
            return text
        return str(self.context.base_dir.resolve() / text)

    # --- the Scaler interface -----------------------------------------------------------

    async def current(self) -> int:
        self._check_open()
        self._ensure_supervised()
        return len(self._slots)

    async def scale(self, instances: int) -> None:
        if instances < 0:
            raise ValueError(f"cannot run {instances} instances")
        self._check_open()
        self._ensure_supervised()
        while len(self._slots) < instances:
            self._numbers += 1
            slot = _Slot(self._numbers)
            self._slots.append(slot)
            self._start(slot)
        if len(self._slots) > instances:
            for slot in self._newest(len(self._slots) - instances):
                self._slots.remove(slot)
                if slot.process is not None:
                    self._stop(slot.process)

    async def aclose(self) -> None:
        """Stop every instance (SIGTERM, then SIGKILL after `drain_timeout`) and
        return once they are gone. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for slot in self._slots:
                if slot.process is not None:
                    self._stop(slot.process)
            self._slots.clear()
            deadline = time.monotonic() + self.drain_timeout + KILL_WAIT
            while (self._stopping or self._leftovers) and time.monotonic() < deadline:
                self._tick()
                await asyncio.sleep(SUPERVISE_INTERVAL)
        finally:
            # also when cancelled: nothing may outlive the scaler
            for process in self._stopping:
                kill_group(process.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.popen.wait(KILL_WAIT)
            self._stopping.clear()
            for leftover, _ in self._leftovers:
                if alive(leftover.pid, leftover.start):
                    kill_group(leftover.pid)
            self._leftovers.clear()
            supervisor, self._supervisor = self._supervisor, None
            if supervisor is not None and not supervisor.done():
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                    await supervisor
            if self._lifeline is not None:
                for fd in self._lifeline:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                self._lifeline = None
            if self._ir_file is not None:
                with contextlib.suppress(OSError):
                    self._ir_file.unlink()
                self._ir_file = None

    # --- what the autoscaler and the dashboard read ---------------------------------

    @property
    def crash_looping(self) -> bool:
        """Whether an instance has crashed `crash_loop_after` times in a row."""
        return any(slot.crashes_in_row >= self.crash_loop_after for slot in self._slots)

    def health(self) -> dict[str, Any]:
        """The instances' states, as JSON-ready data: counts by state, whether the
        consumer is crash-looping, each instance (pid, state, restarts, crashes in a
        row, last exit and output) and the recent exits."""
        now = time.monotonic()
        instances = [self._slot_health(slot, now) for slot in self._slots]
        states = [i["state"] for i in instances]
        looping = [i for i in instances if i["crash_looping"]]
        last_crash = None
        if looping:
            worst = max(looping, key=lambda i: i["crashes_in_row"])
            last_crash = {
                "instance": worst["slot"],
                "exit_code": worst["last_exit_code"],
                "exit": worst["last_exit"],
                "output": worst["last_output"],
            }
        return {
            "backend": self.name,
            "consumer": self.consumer.name,
            "desired": len(self._slots),
            "running": states.count("running"),
            "starting": states.count("starting"),
            "restarting": states.count("restarting"),
            "stopping": len(self._stopping),
            "crash_looping": bool(looping),
            "crash_loop": last_crash,
            "instances": instances,
            "recent_exits": [record.as_dict() for record in self._exits],
        }

    def _slot_health(self, slot: _Slot, now: float) -> dict[str, Any]:
        process = slot.process
        if process is not None:
            state = "running" if process.ready else "starting"
        else:
            state = "restarting"
        return {
            "slot": slot.number,
            "instance_id": process.instance_id if process else None,
            "pid": process.pid if process else None,
            "state": state,
            "started_at": process.started_wall.isoformat() if process else None,
            "restarts": slot.restarts,
            "crashes_in_row": slot.crashes_in_row,
            "crash_looping": slot.crashes_in_row >= self.crash_loop_after,
            "next_restart_in": (
                round(max(slot.restart_at - now, 0.0), 3) if slot.restart_at is not None else None
            ),
            "last_exit_code": slot.last_exit,
            "last_exit": describe_exit(slot.last_exit) if slot.last_exit_at else None,
            "last_exit_at": slot.last_exit_at.isoformat() if slot.last_exit_at else None,
            "last_output": list(slot.last_output),
        }

    async def reap_leftovers(self) -> list[int]:
        """Stop instances of this consumer left by a scaler whose process is gone
        (SIGTERM now, SIGKILL after `drain_timeout`); returns their pids. Runs once
        by itself before the first instance starts."""
        self._check_open()
        found = self._reap()
        self._ensure_supervised()
        return found

    # --- supervision --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError(
                f'the local scaler of consumer "{self.consumer.name}" is closed'
            )

    def _ensure_supervised(self) -> None:
        """Reap leftovers once, and run the supervisor in the current event loop."""
        if not self._reaped:
            self._reap()
        loop = asyncio.get_running_loop()
        task = self._supervisor
        if task is None or task.done() or task.get_loop() is not loop:
            self._supervisor = loop.create_task(
                self._supervise(), name=f"tideflow-local-scaler:{self.consumer.name}"
            )

    def _reap(self) -> list[int]:
        self._reaped = True
        try:
            found = find_leftovers(self.source, self.consumer.name)
        except OSError as exc:
            log.warning(
                "consumer %s: cannot look for leftover instances: %s", self.consumer.name, exc
            )
            return []
        kill_at = time.monotonic() + self.drain_timeout
        for leftover in found:
            log.warning(
                "consumer %s: stopping instance pid %d, left by an orchestrator that is gone",
                self.consumer.name,
                leftover.pid,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(leftover.pid, signal.SIGTERM)
            self._leftovers.append((leftover, kill_at))
        return [leftover.pid for leftover in found]

    async def _supervise(self) -> None:
        while True:
            try:
                self._tick()
            except Exception:  # supervision must go on
                log.exception("consumer %s: supervising its instances failed", self.consumer.name)
            await asyncio.sleep(SUPERVISE_INTERVAL)

    def _tick(self) -> None:
        """One look at every instance: exits, restarts due, drain deadlines passed."""
        now = time.monotonic()
        for slot in self._slots:
            process = slot.process
            if process is not None:
                code = process.popen.poll()
                if code is not None:
                    self._crashed(slot, process, code, now)
                elif slot.crashes_in_row and now - process.started_at >= self.stable_after:
                    slot.crashes_in_row = 0  # a stable instance ends the streak
                    slot.crash_loop_reported = False
            elif slot.restart_at is not None and now >= slot.restart_at:
                slot.restarts += 1
                self._start(slot)
        for process in list(self._stopping):
            code = process.popen.poll()
            if code is not None:
                self._stopping.remove(process)
                kill_group(process.pid)  # whatever its handler left running
                self._record_exit(process, code, requested=True, now=now)
            elif process.kill_at is not None and now >= process.kill_at and not process.killed:
                log.warning(
                    "consumer %s: instance %s did not stop within %gs; killing it",
                    self.consumer.name,
                    process.instance_id,
                    self.drain_timeout,
                )
                process.killed = True
                kill_group(process.pid)
        for entry in list(self._leftovers):
            leftover, kill_at = entry
            if not alive(leftover.pid, leftover.start):
                self._leftovers.remove(entry)
            elif now >= kill_at:
                kill_group(leftover.pid)

    def _start(self, slot: _Slot) -> None:
        """Start the slot's process; a failure to start counts as a crash."""
        slot.restart_at = None
        instance_id = f"{self.consumer.name[:40]}-{slot.number}-{uuid.uuid4().hex[:8]}"
        read_fd, _ = self._lifeline_fds()
        argv = [
            self.python,
            "-m",
            "tideflow",
            "worker",
            str(self.source),
            self.consumer.name,
            "--instance-id",
            instance_id,
        ]
        env = dict(os.environ)
        env[LIFELINE_ENV] = str(read_fd)
        env[PARENT_ENV] = self._marker or parent_marker()
        env["PYTHONUNBUFFERED"] = "1"
        now = time.monotonic()
        try:
            ir_file = self._flow_ir_file()
        except OSError as exc:
            slot.last_output = (f"cannot write the flow's IR for its instances: {exc}",)
            self._crashed(slot, None, None, now)
            return
        if ir_file is not None:
            argv += ["--ir", str(ir_file)]
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(read_fd,),
                start_new_session=True,
            )
        except OSError as exc:
            slot.last_output = (f"cannot start {self.python}: {exc}",)
            self._crashed(slot, None, None, now)
            return
        process = _Process(instance_id, popen, now, datetime.now(UTC))
        slot.process = process
        threading.Thread(
            target=self._forward_output,
            args=(process,),
            name=f"tideflow-output-{instance_id}",
            daemon=True,
        ).start()
        log.info(
            "consumer %s: started instance %s (pid %d)",
            self.consumer.name,
            instance_id,
            popen.pid,
        )

    def _flow_ir_file(self) -> Path | None:
        """The file instances read the flow's IR from (written at the first call,
        readable by this user only), or None when the context carries no IR."""
        if self.context.flow_ir_json is None:
            return None
        if self._ir_file is None:
            fd, name = tempfile.mkstemp(
                prefix=f"tideflow-{self.consumer.name[:40]}-", suffix=".json"
            )
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(self.context.flow_ir_json)
            self._ir_file = Path(name)
        return self._ir_file

    def _lifeline_fds(self) -> tuple[int, int]:
        if self._lifeline is None:
            # both ends are non-inheritable: only the instances get the read end
            # (pass_fds), and only this process ever holds the write end
            self._lifeline = os.pipe()
            self._marker = parent_marker()
        return self._lifeline

    def _forward_output(self, process: _Process) -> None:
        """Runs in a thread per instance: keep the last lines, pass each one on."""
        stream = process.popen.stdout
        assert stream is not None
        ready = ready_message(process.instance_id)
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                process.tail.append(line)
                if not process.ready and ready in line:
                    process.ready = True
                # the worker's own log lines keep their level (and lose its timestamp)
                logged = _WORKER_LOG_LINE.match(line)
                level = _LEVELS[logged.group(1)] if logged else logging.INFO
                text = logged.group(2) if logged else line
                output_log.log(level, "[%s] %s", process.instance_id, text)

    def _stop(self, process: _Process) -> None:
        """SIGTERM: the instance drains and exits; SIGKILL follows after drain_timeout."""
        process.kill_at = time.monotonic() + self.drain_timeout
        self._stopping.append(process)
        with contextlib.suppress(ProcessLookupError):
            process.popen.send_signal(signal.SIGTERM)
        log.info(
            "consumer %s: stopping instance %s (pid %d)",
            self.consumer.name,
            process.instance_id,
            process.pid,
        )

    def _newest(self, count: int) -> list[_Slot]:
        """The slots to stop first: those waiting for a restart, then the instances
        started last."""

        def age(slot: _Slot) -> float:
            return float("inf") if slot.process is None else slot.process.started_at

        return sorted(self._slots, key=age, reverse=True)[:count]

    def _crashed(self, slot: _Slot, process: _Process | None, code: int | None, now: float) -> None:
        """The slot's process ended without being asked to (or could not start)."""
        slot.process = None
        if process is not None:
            kill_group(process.pid)
            self._record_exit(process, code, requested=False, now=now)
            slot.last_output = tuple(process.tail)
            if now - process.started_at >= self.stable_after:
                slot.crashes_in_row = 0
        slot.crashes_in_row += 1
        slot.last_exit = code
        slot.last_exit_at = datetime.now(UTC)
        delay = min(self.restart_backoff * 2 ** (slot.crashes_in_row - 1), self.max_backoff)
        slot.restart_at = now + delay
        name = process.instance_id if process else f"#{slot.number}"
        # its last line is usually the reason ("error: ..."), worth seeing at once
        said = f": {slot.last_output[-1].strip()}" if process and slot.last_output else ""
        log.warning(
            "consumer %s: instance %s %s (crash %d in a row); restarting in %.3gs",
            self.consumer.name,
            name,
            "could not start" if process is None else f"ended: {describe_exit(code)}{said}",
            slot.crashes_in_row,
            delay,
        )
        if slot.crashes_in_row >= self.crash_loop_after and not slot.crash_loop_reported:
            slot.crash_loop_reported = True
            tail = "\n".join(f"  | {line}" for line in slot.last_output[-10:])
            log.error(
                "consumer %s is crash-looping: instance %s crashed %d times in a row, last "
                "%s; it keeps being restarted, at most %.3gs apart. Its last output:\n%s",
                self.consumer.name,
                name,
                slot.crashes_in_row,
                describe_exit(code),
                self.max_backoff,
                tail or "  | (none)",
            )

    def _record_exit(
        self, process: _Process, code: int | None, *, requested: bool, now: float
    ) -> None:
        self._exits.append(
            ExitRecord(
                process.instance_id,
                process.pid,
                code,
                requested,
                datetime.now(UTC),
                now - process.started_at,
            )
        )


@hookimpl
def tideflow_register_scalers(registry: BackendRegistry[Scaler]) -> None:
    """Register the `local` scaler."""
    registry.register(LocalScaler)
