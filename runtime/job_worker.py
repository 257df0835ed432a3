"""A worker process: runs Python job attempts, one at a time, for the orchestrator.

Started as `python -m tideflow.runtime.job_worker --requests R --results W
--logs L`, unbuffered (PYTHONUNBUFFERED=1), in a session (process group) of its
own. The orchestrator writes requests to fd R and reads replies from fd W: each
a 4-byte big-endian length and a pickle. fd 1 and fd 2 are files the
orchestrator gives it, truncated before each attempt, so whatever the attempt
writes there (Python, C code, subprocesses) is captured, and survives a crash.
Records logged through the context's logger go, as JSON lines `[time, level,
message]`, to fd L, another such file. The worker exits when the request pipe
closes.

Request: dict with target ("module:function"), run_id, flow, job, attempt,
scheduled_at, params, env, secrets (the secret values among env's, kept out of
every log record), publishes, publisher (factory path and a
`{topic: flow_ir_json}` map, or None) and sys_path (directories to import from).
Reply: dict with ok (bool), error (the ErrorInfo fields as a tuple, or None)
and exit_code (for `sys.exit` with a non-zero code, else None).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import pickle
import struct
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from . import redaction
from .context import JobContext, Publisher, load_object

HEADER: Final = struct.Struct(">I")
JOB_LOGGER: Final = "tideflow.job"

ErrorFields = tuple[str, str, str, str | None, str | None]


# --- framing (shared with the orchestrator's side, worker_pool) -----------------------


def encode_frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any | None:
    """The next message on `fd`, or None at end of file."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# --- errors ---------------------------------------------------------------------------


def qualified_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def error_fields(exc: BaseException) -> ErrorFields:
    """Type, message, traceback, and the innermost frame ("module.function", "file:line")."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # the worker's own frames say nothing about the job
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    function = location = None
    innermost = None
    # the innermost frame, unless it is the runtime's own (`ctx.publish` refusing a
    # topic): then the job's frame that called into the runtime says more
    while tb is not None:
        if innermost is None or not tb.tb_frame.f_globals.get("__name__", "").startswith(
            "tideflow.runtime."
        ):
            innermost = tb
        tb = tb.tb_next
    if innermost is not None:
        frame = innermost.tb_frame
        module = frame.f_globals.get("__name__", "?")
        function = f"{module}.{frame.f_code.co_qualname}"
        location = f"{frame.f_code.co_filename}:{innermost.tb_lineno}"
    return qualified_name(type(exc)), str(exc), text, function, location


# --- logging --------------------------------------------------------------------------


class _RecordWriter(logging.Handler):
    """Writes each record as a JSON line to the log file at once (a crash keeps it)."""

    def __init__(self, fd: int) -> None:
        super().__init__(logging.DEBUG)
        self.fd = fd
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(redaction.RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps([record.created, record.levelname, self.format(record)])
            write_all(self.fd, line.encode() + b"\n")
        except Exception:
            self.handleError(record)


def _job_logger(logs_fd: int) -> logging.Logger:
    parent = logging.getLogger(JOB_LOGGER)
    parent.setLevel(logging.DEBUG)
    parent.propagate = False  # the records belong to the attempt, not to stderr
    parent.addHandler(_RecordWriter(logs_fd))
    return parent


# --- one attempt ----------------------------------------------------------------------


class _Publishers:
    """Publishers kept across attempts (connections are reused), built on first use."""

    def __init__(self) -> None:
        self._built: dict[tuple[str, str], Publisher] = {}

    def getter(self, factory_path: str, specs: Mapping[str, str]) -> Callable[[str], Publisher]:
        def publisher_for(topic: str) -> Publisher:
            spec = specs[topic]
            found = self._built.get((factory_path, spec))
            if found is None:
                factory = load_object(factory_path)
                found = self._built[(factory_path, spec)] = factory(spec, topic)
            return found

        return publisher_for


class JobFunctionError(Exception):
    """A job's `run` names nothing the worker can call as a job; the message says why
    (as a consumer's `HandlerError` does for a handler)."""


def load_job(target: str) -> Callable[..., Any]:
    """The job function `module:function`. A module that does not exist is a
    ModuleNotFoundError that says so (raised here, so the failure is not pinned on
    importlib's internals); a missing attribute, or a function that takes neither
    `ctx` nor nothing, a JobFunctionError. An exception raised by the module's own
    code while importing it goes through."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise JobFunctionError(f"expected `module:function`, got `{target}`")
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # the job's module imports something that is not installed
        raise ModuleNotFoundError(
            f"cannot import `{target}`: there is no module `{missing}` "
            "(`tideflow lint --check-imports` finds this before a run)",
            name=missing,
        ) from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise JobFunctionError(
                f"cannot load `{target}`: `{module_name}` has no `{attribute}`"
            ) from None
    if not callable(found):
        raise JobFunctionError(f"`{target}` is not a function")
    try:
        signature = inspect.signature(found)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return found  # type: ignore[no-any-return]
    if not _binds(signature, (None,)) and not _binds(signature, ()):
        raise JobFunctionError(
            f"`{target}` must take one argument, `ctx` (or none); it takes `{signature}`"
        )
    return found  # type: ignore[no-any-return]


def _binds(signature: inspect.Signature, arguments: tuple[Any, ...]) -> bool:
    try:
        signature.bind(*arguments)
    except TypeError:
        return False
    return True


_TAKES_CONTEXT: dict[Callable[..., Any], bool] = {}


def _takes_context(function: Callable[..., Any]) -> bool:
    known = _TAKES_CONTEXT.get(function)
    if known is None:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):  # builtins without a signature
            known = True
        else:
            known = any(
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                for p in params
            )
        _TAKES_CONTEXT[function] = known
    return known


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _flush_c_stdio() -> None:
    """Flush C stdio buffers so output written by C code lands in this attempt."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def run_attempt(
    request: Mapping[str, Any], logger: logging.Logger, pubs: _Publishers
) -> dict[str, Any]:
    """Run one attempt and say how it went; never raises for the job's failures."""
    for directory in request.get("sys_path", ()):
        if directory not in sys.path:
            sys.path.append(directory)
    env: Mapping[str, str] = request.get("env", {})
    redaction.remember(request.get("secrets", ()))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    publisher = request.get("publisher")
    context = JobContext(
        run_id=request["run_id"],
        flow=request["flow"],
        job=request["job"],
        attempt=request["attempt"],
        scheduled_at=request.get("scheduled_at"),
        params=request.get("params", {}),
        logger=logger.getChild(request["job"]),
        env=env,
        publishes=request.get("publishes", ()),
        publisher_for=pubs.getter(*publisher) if publisher else None,
    )
    reply: dict[str, Any] = {"ok": True, "error": None, "exit_code": None}
    try:
        function = load_job(request["target"])
        result = function(context) if _takes_context(function) else function()
        if inspect.isawaitable(result):
            import asyncio  # only async jobs pay for it

            asyncio.run(_await(result))
        context.flush()
    except SystemExit as exc:
        code = exc.code
        if code not in (None, 0):
            reply = {
                "ok": False,
                "error": error_fields(exc),
                "exit_code": code if isinstance(code, int) else 1,
            }
    except BaseException as exc:
        reply = {"ok": False, "error": error_fields(exc), "exit_code": None}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # the job closed or broke it
                stream.flush()
        _flush_c_stdio()
    return reply


def serve(requests_fd: int, results_fd: int, logs_fd: int) -> None:
    """Answer requests until the request pipe closes."""
    for fd in (requests_fd, results_fd, logs_fd):
        os.set_inheritable(fd, False)  # subprocesses of a job must not hold our pipes
    # other loggers (a client library's) print to the attempt's stderr, redacted
    redaction.configure()
    logger = _job_logger(logs_fd)
    publishers = _Publishers()
    while True:
        request = read_frame(requests_fd)
        if request is None:
            return
        write_all(results_fd, encode_frame(run_attempt(request, logger, publishers)))


# --- one attempt, then exit (an executor on another machine) -------------------------


class _TextRecordWriter(logging.Handler):
    """Writes each record as a line "LEVEL message" to stderr (no log file given)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.addFilter(redaction.RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _read_request(source: str) -> dict[str, Any]:
    if source.startswith("env:"):
        text = os.environ.get(source[4:])
        if text is None:
            raise SystemExit(f"tideflow: no attempt request in ${source[4:]}")
    else:
        text = Path(source).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _once_request(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The worker request of an `AttemptRequest`'s JSON, and its secret values (a
    secret without a value in the request is the process's own variable: the engine
    set it, e.g. from a Kubernetes Secret)."""
    env = dict(data.get("env") or {})
    secret_values: list[str] = []
    for var, secret in (data.get("secret_env") or {}).items():
        value = secret.get("value")
        if value is None:
            value = os.environ.get(var)
        if value is not None:
            env[var] = value
            secret_values.append(value)
    scheduled = data.get("scheduled_at")
    publishers = data.get("publishers") or {}
    factory = data.get("publisher_factory")
    request = {
        "target": data.get("target"),
        "run_id": data["run_id"],
        "flow": data["flow"],
        "job": data["job"],
        "attempt": data["attempt"],
        "scheduled_at": datetime.fromisoformat(scheduled) if scheduled else None,
        "params": data.get("params") or {},
        "env": env,
        "secrets": tuple(secret_values),
        "publishes": tuple(data.get("publishes") or ()),
        "publisher": (factory, publishers) if publishers and factory else None,
        "sys_path": tuple(data.get("sys_path") or ()),
    }
    return request, secret_values


def _run_command(argv: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    import subprocess

    try:
        code = subprocess.call(argv, env={**os.environ, **env})
    except OSError as exc:
        message = f"cannot run `{argv[0]}`: {exc.strerror or exc}"
        return {"ok": False, "error": (qualified_name(type(exc)), message, "", None, None)}
    if code == 0:
        return {"ok": True, "error": None, "exit_code": 0}
    if code < 0:
        what = f"`{argv[0]}` {_describe_signal(-code)}"
        error = ("tideflow.runtime.commands.CommandFailed", what, "", None, None)
        return {"ok": False, "crashed": True, "error": error, "exit_code": code}
    what = f"`{argv[0]}` exited with code {code}"
    error = ("tideflow.runtime.commands.CommandFailed", what, "", None, None)
    return {"ok": False, "error": error, "exit_code": code}


def _describe_signal(number: int) -> str:
    import signal

    try:
        return f"was killed by {signal.Signals(number).name}"
    except ValueError:
        return f"was killed by signal {number}"


def _termination_summary(reply: Mapping[str, Any], limit: int = 4096) -> str:
    """The reply, short enough for a Kubernetes termination message (4 KB): the
    traceback keeps its last lines."""
    error = reply.get("error")
    summary: dict[str, Any] = {
        "ok": bool(reply.get("ok")),
        "exit_code": reply.get("exit_code"),
        "crashed": bool(reply.get("crashed")),
        "error": list(error) if error else None,
    }
    text = json.dumps(summary)
    if error and len(text.encode()) > limit:
        kind, message, trace, function, location = error
        message = message[:1000]
        lines = trace.splitlines()
        while lines:
            summary["error"] = [kind, message, "\n".join(lines), function, location]
            text = json.dumps(summary)
            if len(text.encode()) <= limit:
                break
            lines = lines[len(lines) // 4 + 1 :]
        else:
            summary["error"] = [kind, message, "", function, location]
            text = json.dumps(summary)
    return text


def run_once(
    source: str, reply_path: str | None, logs_path: str | None, termination_log: str | None
) -> int:
    """Run the attempt whose `AttemptRequest` JSON `source` holds (a path, or
    `env:NAME`); write its outcome to `reply_path` and `termination_log`. Returns
    the exit code: 0 for a success, the job's code (or 1) for a failure."""
    redaction.configure()
    data = _read_request(source)
    request, secret_values = _once_request(data)
    redaction.remember(secret_values)
    if secret_values:
        # on an engine that supplies secrets itself (Kubernetes) the orchestrator never
        # learns their values, so what Python prints is redacted here, before it
        # reaches the pod's log (output written below Python, by C code or a
        # subprocess, is not: docs/kubernetes.md says so)
        sys.stdout = redaction.redacting(sys.stdout)
        sys.stderr = redaction.redacting(sys.stderr)
    if data.get("command") is not None:
        reply = _run_command(list(data["command"]), request["env"])
    else:
        if logs_path is not None:
            logs_fd = os.open(logs_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            logger = _job_logger(logs_fd)
        else:
            logger = logging.getLogger(JOB_LOGGER)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            logger.addHandler(_TextRecordWriter())
        reply = run_attempt(request, logger, _Publishers())
    text = json.dumps(reply, default=str)
    if reply_path is not None:
        part = Path(reply_path + ".part")
        part.write_text(text, encoding="utf-8")
        part.replace(reply_path)  # whole or absent: a reader never sees half a reply
    if termination_log is not None:
        with contextlib.suppress(OSError):
            Path(termination_log).write_text(_termination_summary(reply), encoding="utf-8")
    if reply.get("ok"):
        return 0
    code = reply.get("exit_code")
    return code if isinstance(code, int) and code > 0 else 1


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tideflow.runtime.job_worker")
    parser.add_argument("--requests", type=int)
    parser.add_argument("--results", type=int)
    parser.add_argument("--logs", type=int)
    parser.add_argument("--once", metavar="REQUEST", help="run one attempt: a path or env:VAR")
    parser.add_argument("--reply", metavar="PATH")
    parser.add_argument("--logs-file", metavar="PATH")
    parser.add_argument("--termination-log", metavar="PATH")
    args = parser.parse_args(argv)
    if args.once is not None:
        sys.exit(run_once(args.once, args.reply, args.logs_file, args.termination_log))
    if args.requests is None or args.results is None or args.logs is None:
        parser.error("--requests, --results and --logs are required (or --once)")
    serve(args.requests, args.results, args.logs)


if __name__ == "__main__":
    main()
