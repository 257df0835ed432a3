"""Processes on this machine, told apart through /proc: who started whom, and which
`tideflow worker` processes a scaler whose process is gone left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .protocol import PARENT_ENV

__all__ = [
    "Leftover",
    "alive",
    "describe_exit",
    "find_leftovers",
    "kill_group",
    "parent_marker",
    "process_start",
]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_start(pid: int) -> str | None:
    """The start time of a live process (clock ticks since boot, field 22 of
    /proc/PID/stat): with the pid, an identity that survives pid reuse. None when the
    process is gone or a zombie."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def alive(pid: int, start: str) -> bool:
    """Whether the process `pid` that started at `start` still runs."""
    return process_start(pid) == start


def parent_marker() -> str:
    """This process as `PARENT_ENV` names it: "PID:START"."""
    return f"{os.getpid()}:{process_start(os.getpid()) or 0}"


def _read_environ(pid: int) -> dict[str, str] | None:
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return None
    pairs = (item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _is_instance(pid: int, argv: Sequence[str], source: Path, consumer: str) -> bool:
    """Whether `argv` runs `tideflow worker SOURCE CONSUMER` (with the file given as
    an absolute path or relative to the process's working directory)."""
    for index in range(1, len(argv) - 2):
        if argv[index] != "worker" or not argv[index - 1].endswith("tideflow"):
            continue
        if argv[index + 2] != consumer:
            continue
        file = Path(argv[index + 1])
        if not file.is_absolute():
            try:
                file = Path(f"/proc/{pid}/cwd").readlink() / file
            except OSError:
                continue
        with contextlib.suppress(OSError):
            if file.resolve() == source:
                return True
    return False


@dataclass(frozen=True, slots=True)
class Leftover:
    """An instance of a consumer whose starting process is gone."""

    pid: int
    start: str
    argv: tuple[str, ...]


def find_leftovers(source: Path, consumer: str) -> list[Leftover]:
    """Instances of `consumer` of the flow file `source` on this machine started by a
    local scaler whose process is gone (Linux; elsewhere, none are found)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    source = source.resolve()
    me = os.getpid()
    found: list[Leftover] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        if not any("tideflow" in part for part in argv) or consumer not in argv:
            continue
        if not _is_instance(pid, argv, source, consumer):
            continue
        marker = (_read_environ(pid) or {}).get(PARENT_ENV)
        if not marker or ":" not in marker:
            continue  # not started by a local scaler: never ours to touch
        parent_pid, _, parent_start = marker.partition(":")
        if not parent_pid.isdigit() or alive(int(parent_pid), parent_start):
            continue  # its orchestrator lives
        start = process_start(pid)
        if start is not None:
            found.append(Leftover(pid, start, argv))
    return found


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (instances lead their own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def describe_exit(code: int | None) -> str:
    """An exit status as people read it: "exit status 1", "killed by SIGKILL"."""
    if code is None:
        return "did not start"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
