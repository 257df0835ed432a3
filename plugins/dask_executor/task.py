"""What runs on a Dask worker for one attempt: `run_attempt`, the task the
executor submits.

The task runs tideflow's one-shot runner (`worker_argv`) under a small
supervisor in a session (process group) of its own, with its stdout, stderr, log
records and reply in files of a private temporary folder (in the worker's local
directory; removed afterwards, since the request in it holds secret values), and
returns what it found there as a JSON-able dict (`Outcome`). While it waits it
watches the attempt's cancel variable; when that is set it sends SIGTERM to the
process group, then SIGKILL after the grace the variable holds.

Dask runs a task again when the worker running it dies. An attempt must run at
most once (tideflow's retry policy counts attempts), so the task first *claims*
the attempt in a `distributed.Variable`; a run that finds the claim taken is such
a re-run and returns ``lost`` at once, without running anything.

The supervisor (`SUPERVISOR`) ends the whole process group when the worker
process dies (Linux's parent-death signal), so that a killed worker leaves no
attempt running behind it; a worker that closes (it lost its scheduler, it is
retired) ends its attempts at once rather than when its process exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Final, TypedDict

from tideflow.plugins.api import worker_argv

__all__ = ["MAX_OUTPUT", "SUPERVISOR", "Outcome", "cancel_name", "claim_name", "run_attempt"]

#: most bytes of stdout, stderr and the log file brought back; the rest is cut
#: from the start (the end of an output says the most)
MAX_OUTPUT: Final = 4 * 1024 * 1024
#: how often the cancel watcher asks the scheduler again (a long poll: it returns
#: as soon as the variable is set)
CANCEL_POLL: Final = 1.0
#: the worker's states in which it ends its running attempts
CLOSING_STATUSES: Final = frozenset(
    {"stopping", "stopped", "closing", "closing_gracefully", "closed", "failed"}
)
#: how long an attempt of a closing worker gets between SIGTERM and SIGKILL
WORKER_CLOSING_GRACE: Final = 2.0

# Runs as `python -c SUPERVISOR PARENT_PID ARGV...` in the attempt's own session.
# It gets SIGUSR1 when the thread that started it ends (the worker died) and then
# kills its group; a SIGTERM to the group is for the attempt, which it outlives so
# that its exit status is the attempt's.
SUPERVISOR: Final = """\
import ctypes, os, signal, subprocess, sys
def end(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, end)
if sys.platform.startswith("linux"):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGUSR1)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
if os.getppid() != int(sys.argv[1]):
    end()
signal.signal(signal.SIGTERM, lambda *_: None)
code = subprocess.call(sys.argv[2:])
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


class Outcome(TypedDict):
    """What the task returns. `outcome`: "ran" (the reply, output and logs are
    the attempt's), "cancelled" (ended by a cancel), "lost" (a re-run after its
    worker died: nothing ran; or its worker closed mid-attempt and ended it).
    `where`: the worker's address and the pid."""

    outcome: str
    exit_code: int | None
    reply: str | None
    stdout: str
    stderr: str
    logs: str
    where: str | None


def claim_name(ref: str) -> str:
    """The variable in which the first run of attempt `ref` claims it."""
    return f"{ref}#claim"


def cancel_name(ref: str) -> str:
    """The variable whose value (the grace, in seconds) asks attempt `ref` to end."""
    return f"{ref}#cancel"


def run_attempt(ref: str, request_json: str) -> Outcome:
    """The task: run the attempt `ref` whose `AttemptRequest` JSON is
    `request_json` on this worker, once."""
    import distributed

    dask: Any = distributed  # untyped in places; the calls below are few and plain
    worker = dask.get_worker()
    client = dask.get_client()
    claim = dask.Variable(claim_name(ref), client=client)
    earlier = _value(claim)
    if earlier is not None:
        where = earlier.get("where") if isinstance(earlier, dict) else None
        return _outcome("lost", where=where)
    claim.set({"worker": worker.address, "where": worker.address})
    cancel = dask.Variable(cancel_name(ref), client=client)
    if _value(cancel) is not None:
        return _outcome("cancelled", where=worker.address)
    scratch = getattr(worker, "local_directory", None)  # the worker's own scratch space
    with tempfile.TemporaryDirectory(prefix="tideflow-attempt-", dir=scratch) as folder:
        base = Path(folder)
        request, reply = base / "request.json", base / "reply.json"
        logs, stdout, stderr = base / "logs.jsonl", base / "stdout", base / "stderr"
        request.write_text(request_json, encoding="utf-8")
        argv = worker_argv(str(request), str(reply), str(logs))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR, str(os.getpid()), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        where = f"{worker.address} pid {process.pid}"
        claim.set({"worker": worker.address, "where": where, "pid": process.pid})
        ended = threading.Event()
        cancelled = threading.Event()
        abandoned = threading.Event()  # its worker is closing: the attempt is lost
        watcher = threading.Thread(
            target=_watch_cancel,
            args=(worker, cancel, process.pid, ended, cancelled, abandoned),
            name=f"tideflow-cancel-{process.pid}",
            daemon=True,
        )
        watcher.start()
        try:
            exit_code = process.wait()
        finally:
            ended.set()
        if abandoned.is_set():
            return _outcome("lost", where=where)
        return {
            "outcome": "cancelled" if cancelled.is_set() else "ran",
            "exit_code": exit_code,
            "reply": reply.read_text(encoding="utf-8") if reply.exists() else None,
            "stdout": _tail(stdout),
            "stderr": _tail(stderr),
            "logs": _tail(logs),
            "where": where,
        }


def _outcome(outcome: str, *, where: str | None) -> Outcome:
    return {
        "outcome": outcome,
        "exit_code": None,
        "reply": None,
        "stdout": "",
        "stderr": "",
        "logs": "",
        "where": where,
    }


def _value(variable: Any) -> Any:
    """The variable's value, or None when it is not set."""
    try:
        return variable.get(timeout=0)
    except TimeoutError:
        return None


def _watch_cancel(
    worker: Any,
    cancel: Any,
    group: int,
    ended: threading.Event,
    cancelled: threading.Event,
    abandoned: threading.Event,
) -> None:
    """Until the attempt ends: on a cancel, end its process group (SIGTERM, SIGKILL
    after the grace); when the worker itself is closing (it lost its scheduler, it is
    being retired), end it too, since Dask will not collect it (a re-run is `lost`)."""
    while not ended.is_set():
        if _closing(worker):
            abandoned.set()
            _end_group(group, ended, WORKER_CLOSING_GRACE)
            return
        try:
            grace = cancel.get(timeout=CANCEL_POLL)
        except TimeoutError:
            continue
        except Exception:  # the worker's client is closing, or a hiccup: look again
            ended.wait(CANCEL_POLL / 4)
            continue
        if ended.is_set():
            return
        cancelled.set()
        _end_group(group, ended, max(float(grace or 0), 0.0))
        return


def _closing(worker: Any) -> bool:
    status = getattr(worker, "status", None)
    return getattr(status, "name", "running") in CLOSING_STATUSES


def _end_group(group: int, ended: threading.Event, grace: float) -> None:
    _signal_group(group, signal.SIGTERM)
    ended.wait(grace)
    # whatever ignored SIGTERM, the attempt's process or anything it started
    _signal_group(group, signal.SIGKILL)


def _signal_group(group: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, number)


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            if size <= MAX_OUTPUT:
                file.seek(0)
                return file.read().decode("utf-8", "replace")
            file.seek(size - MAX_OUTPUT)
            kept = file.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return f"[tideflow: the first {size - MAX_OUTPUT} bytes were cut]\n{kept}"
