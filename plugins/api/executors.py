"""Executors: where a job's attempt runs. The fourth backend kind.

The orchestrator keeps every decision (trigger rules, retries, pools, timeouts,
the run history); an `Executor` only *starts* an attempt somewhere, *waits* for
its outcome, *cancels* it, and after a restart lists the attempts it still holds
so that the orchestrator can *re-attach* to them instead of calling them lost.

What an executor is handed is an `AttemptRequest`: plain, JSON-serialisable data
(`AttemptRequest.to_json()`), so it can be shipped to another machine. There the
attempt is run by tideflow's own one-shot runner,
``python -m tideflow.runtime.job_worker --once REQUEST.json --reply REPLY.json``
(see `worker_argv`), which runs a Python job or a command in the same way a local
attempt runs, writes what the attempt printed to its stdout and stderr, its log
records to `--logs`, and its outcome (and, for a Python failure, the exception,
traceback and raising function) to the reply file; `reply_from_json` reads it.

What an executor gives back is an `AttemptResult`. The orchestrator removes every
secret value from it before anything is stored, wherever the attempt ran.

Status words an executor reports (`ATTEMPT_RESULT_STATUSES`):

- ``success``: the attempt ran and succeeded;
- ``failed``: it ran and failed (an exception, a non-zero exit);
- ``crashed``: its process died (a signal, out of memory);
- ``timeout``: the executor's engine ended it for running past `request.timeout`
  (an engine that enforces it itself, such as Kubernetes' `activeDeadlineSeconds`);
- ``cancelled``: it was ended by `cancel()`;
- ``lost``: the engine lost it (the machine running it died); the job's retry
  policy decides what follows. Executors turn off their engine's own re-running
  of a lost attempt, so that tideflow alone counts attempts.
"""

from __future__ import annotations

import abc
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from .backends import Backend

__all__ = [
    "ATTEMPT_RESULT_STATUSES",
    "AttemptError",
    "AttemptHandle",
    "AttemptRequest",
    "AttemptResources",
    "AttemptResult",
    "Executor",
    "SecretEnv",
    "reply_from_json",
    "worker_argv",
]

ATTEMPT_RESULT_STATUSES: Final = frozenset(
    {"success", "failed", "crashed", "timeout", "cancelled", "lost"}
)

#: the module whose `--once` mode runs one attempt (see the module docstring)
WORKER_MODULE: Final = "tideflow.runtime.job_worker"


@dataclass(frozen=True, slots=True)
class AttemptResources:
    """What one attempt asks for: `cpu` (cores), `memory` (bytes), `gpu` (devices),
    and the executor's own extras (`resources { ... }` entries the executor's
    option schema declares, such as a Dask worker resource)."""

    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "gpu": self.gpu,
            "extras": dict(self.extras),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttemptResources:
        return cls(data.get("cpu"), data.get("memory"), data.get("gpu"), data.get("extras") or {})


@dataclass(frozen=True, slots=True)
class SecretEnv:
    """An environment variable whose value is a `secret("NAME")`: `name` is the
    secret's name (a key of the Kubernetes Secret, say) and `value` its value as
    the orchestrator's environment has it (None when it does not have it and the
    executor takes secrets by reference, `Executor.secrets_by_reference`)."""

    name: str
    value: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AttemptRequest:
    """One attempt to run. `key` is unique and stable for the attempt
    (``flow/job/job_run_id/attempt``); `labels` name it for the engine (flow, job,
    run, attempt). Exactly one of `target` ("module:function") and `command`
    (an argv, the shell already applied) is set. `env` holds plain values,
    `secret_env` the secret ones. `publishers` maps each topic the job publishes
    to the flow IR (JSON) a publisher for it is built from. `sys_path`: folders
    a Python job imports from (the flow file's, as the orchestrator sees it).
    `timeout` is the job's, in seconds; the orchestrator enforces it too."""

    key: str
    flow: str
    job: str
    job_run_id: int
    attempt: int
    target: str | None = None
    command: tuple[str, ...] | None = None
    scheduled_at: datetime | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, SecretEnv] = field(default_factory=dict)
    publishes: tuple[str, ...] = ()
    publishers: Mapping[str, str] = field(default_factory=dict, repr=False)
    publisher_factory: str | None = None
    sys_path: tuple[str, ...] = ()
    resources: AttemptResources = field(default_factory=AttemptResources)
    timeout: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def to_json(self, *, with_secrets: bool = True) -> str:
        """The request as JSON text, for `python -m tideflow.runtime.job_worker --once`.
        `with_secrets=False` leaves secret values out (the engine supplies them)."""
        data = {
            "key": self.key,
            "flow": self.flow,
            "job": self.job,
            "run_id": self.job_run_id,
            "attempt": self.attempt,
            "target": self.target,
            "command": list(self.command) if self.command is not None else None,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "params": dict(self.params),
            "env": dict(self.env),
            "secret_env": {
                var: {"name": s.name, "value": s.value if with_secrets else None}
                for var, s in self.secret_env.items()
            },
            "publishes": list(self.publishes),
            "publishers": dict(self.publishers),
            "publisher_factory": self.publisher_factory,
            "sys_path": list(self.sys_path),
            "resources": self.resources.to_json(),
            "timeout": self.timeout,
            "labels": dict(self.labels),
        }
        return json.dumps(data, default=str)

    @classmethod
    def from_json(cls, text: str) -> AttemptRequest:
        data = json.loads(text)
        scheduled = data.get("scheduled_at")
        return cls(
            key=data["key"],
            flow=data["flow"],
            job=data["job"],
            job_run_id=data["run_id"],
            attempt=data["attempt"],
            target=data.get("target"),
            command=tuple(data["command"]) if data.get("command") is not None else None,
            scheduled_at=datetime.fromisoformat(scheduled) if scheduled else None,
            params=data.get("params") or {},
            env=data.get("env") or {},
            secret_env={
                var: SecretEnv(s["name"], s.get("value"))
                for var, s in (data.get("secret_env") or {}).items()
            },
            publishes=tuple(data.get("publishes") or ()),
            publishers=data.get("publishers") or {},
            publisher_factory=data.get("publisher_factory"),
            sys_path=tuple(data.get("sys_path") or ()),
            resources=AttemptResources.from_json(data.get("resources") or {}),
            timeout=data.get("timeout"),
            labels=data.get("labels") or {},
        )


@dataclass(frozen=True, slots=True)
class AttemptError:
    """Why an attempt failed: the exception's qualified type and message, its
    traceback, and the function that raised it (and `file:line`) when known."""

    type: str
    message: str
    traceback: str = ""
    function: str | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How an attempt ended (`status`, one of `ATTEMPT_RESULT_STATUSES`), what it
    wrote, its log records `(time, level, message)`, and for a failure its error.
    `where` says where it ran (a worker's address and pid, a pod's name)."""

    status: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    logs: tuple[tuple[datetime, str, str], ...] = ()
    error: AttemptError | None = None
    where: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ATTEMPT_RESULT_STATUSES:
            allowed = ", ".join(sorted(ATTEMPT_RESULT_STATUSES))
            raise ValueError(f"attempt status {self.status!r} is not one of {allowed}")


@dataclass(frozen=True, slots=True)
class AttemptHandle:
    """A started attempt: its request's `key`, and `ref`, the engine's own name for
    it (a Dask key, a Job's name), from which `wait` and `cancel` find it again,
    in this process or after a restart. `where`: where it runs, when known."""

    key: str
    ref: str
    where: str | None = None


def worker_argv(request_path: str, reply_path: str, logs_path: str) -> list[str]:
    """The command that runs one attempt on this machine: the request read from
    `request_path`, the outcome written to `reply_path` (JSON, see
    `reply_from_json`), log records to `logs_path` (JSON lines). stdout and stderr
    are the attempt's own. Run it in a session of its own (`start_new_session`),
    so that killing its process group ends whatever the attempt started."""
    return [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--once",
        request_path,
        "--reply",
        reply_path,
        "--logs-file",
        logs_path,
    ]


def reply_from_json(
    reply_text: str | None, *, exit_code: int | None, stdout: str, stderr: str, logs_text: str
) -> AttemptResult:
    """The `AttemptResult` of a one-shot worker run: its reply file's text (None
    when it wrote none, i.e. it died), its exit code, what it printed, and its log
    file's text."""
    logs: list[tuple[datetime, str, str]] = []
    for line in logs_text.splitlines():
        try:
            created, level, message = json.loads(line)
        except ValueError:  # a line cut by a crash mid-write
            continue
        at = (
            datetime.fromtimestamp(created, UTC)
            if isinstance(created, int | float)
            else datetime.fromisoformat(str(created))
        )
        logs.append((at, str(level), str(message)))
    error: AttemptError | None = None
    reply: Mapping[str, Any] | None = None
    if reply_text:
        try:
            reply = json.loads(reply_text)
        except ValueError:
            reply = None
    if reply is None:
        if exit_code is not None and exit_code < 0:
            status = "crashed"
            error = AttemptError("tideflow.runtime.executor.WorkerCrashed", _signal_text(exit_code))
        elif exit_code == 0:
            status = "failed"
            error = AttemptError("tideflow.runtime.executor.WorkerCrashed", "no reply written")
        else:
            status = "crashed"
            error = AttemptError(
                "tideflow.runtime.executor.WorkerCrashed",
                f"the attempt's process exited with code {exit_code} without a reply",
            )
        return AttemptResult(status, exit_code, stdout, stderr, tuple(logs), error)
    if reply.get("ok"):
        return AttemptResult("success", reply.get("exit_code", 0), stdout, stderr, tuple(logs))
    fields = reply.get("error")
    if fields:
        error = AttemptError(*fields)
    return AttemptResult(
        "crashed" if reply.get("crashed") else "failed",
        reply.get("exit_code"),
        stdout,
        stderr,
        tuple(logs),
        error,
    )


def _signal_text(code: int) -> str:
    import signal

    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"the attempt's process was killed by {name}"


class Executor(Backend):
    """Runs job attempts somewhere (`executor "NAME" { kind = "..." }`).

    Declares, besides a backend's `name`, `options` and docstring:

    - `remote`: whether attempts run off the orchestrator's machine (a job there
      cannot publish to an `embedded` topic, a file on the orchestrator's disk);
    - `secrets_by_reference`: whether the engine supplies `secret()` values itself
      (a Kubernetes Secret), so a value the orchestrator lacks is no error;
    - `resource_options`: the names of the extra `resources { ... }` entries it
      understands, beyond cpu, memory and gpu;
    - `capacity(options)`: the most one attempt can ever be given, as declared by
      the block's options, so that the compiler can refuse a job that can never run.

    The methods may be called concurrently for different attempts.
    """

    kind: ClassVar[str] = "executor"
    remote: ClassVar[bool] = True
    secrets_by_reference: ClassVar[bool] = False
    resource_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def capacity(cls, options: Mapping[str, Any]) -> Mapping[str, float] | None:
        """The most one attempt can get, by resource (cpu, memory in bytes, gpu, an
        extra's name), as the block's `options` declare it; None: nothing declared."""
        return None

    @abc.abstractmethod
    async def start(self, request: AttemptRequest) -> AttemptHandle:
        """Hand the attempt to the engine; return once it is accepted (not finished).
        Raises `BackendError` when the engine refuses it or cannot be reached."""

    @abc.abstractmethod
    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        """Wait for the attempt's end and return its outcome; works for a handle
        from `attempts()` of a new process too (re-attaching). An attempt the
        engine lost (its machine died) ends ``lost``."""

    @abc.abstractmethod
    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        """End the attempt and whatever it started: politely, then by force after
        `grace` seconds. `wait` then returns ``cancelled`` (unless it had ended)."""

    @abc.abstractmethod
    async def attempts(self) -> Sequence[AttemptHandle]:
        """The attempts the engine holds for tideflow that nobody has collected yet:
        running ones, and those that ended while no orchestrator waited."""
