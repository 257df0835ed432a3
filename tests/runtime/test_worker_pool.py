"""Worker processes: reuse, growth, crashes, kills, captured output; the wire format."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from tideflow.runtime.job_worker import encode_frame, error_fields, read_frame, run_attempt
from tideflow.runtime.worker_pool import WorkerPool, describe_exit, parse_log_records

from .jobs_for_tests.harness import process_gone, until

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


def request(function: str, **params: Any) -> dict[str, Any]:
    return {
        "target": f"jobs_for_tests.jobs:{function}",
        "run_id": 1,
        "flow": "f",
        "job": "j",
        "attempt": 1,
        "scheduled_at": None,
        "params": params,
        "env": {},
        "publishes": (),
        "publisher": None,
        "sys_path": (),
    }


@pytest.mark.anyio
async def test_an_idle_worker_is_reused(tmp_path: Path) -> None:
    pool = WorkerPool(limit=2)
    try:
        first = pool.acquire()
        assert (await first.start(request("noop")))["ok"] is True
        pool.release(first)
        second = pool.acquire()
        assert second is first and pool.size == 1
        assert (await second.start(request("noop")))["ok"] is True
        assert second.attempts == 2
    finally:
        await pool.close()
    assert process_gone(first.pid)


@pytest.mark.anyio
async def test_the_pool_grows_to_its_limit_and_no_further() -> None:
    pool = WorkerPool(limit=2)
    try:
        workers = {pool.acquire(), pool.acquire()}
        assert len({w.pid for w in workers}) == 2
        with pytest.raises(RuntimeError, match="all 2 workers are busy"):
            pool.acquire()
    finally:
        await pool.close()
    assert all(process_gone(w.pid) for w in workers)


@pytest.mark.anyio
async def test_each_worker_leads_its_own_process_group() -> None:
    pool = WorkerPool(limit=1)
    try:
        worker = pool.acquire()
        assert os.getpgid(worker.pid) == worker.pid != os.getpgid(0)
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_a_worker_killed_mid_attempt_reports_no_reply(tmp_path: Path) -> None:
    pool = WorkerPool(limit=1)
    started = tmp_path / "started"
    try:
        worker = pool.acquire()
        reply = worker.start(request("wait_for_release", started=str(started), release="/nowhere"))
        await until(started.exists)
        os.kill(worker.pid, signal.SIGKILL)
        assert await reply is None
        await pool.discard(worker, 0)
        assert worker.returncode == -signal.SIGKILL and not worker.alive
        assert describe_exit(worker.returncode) == "was killed by SIGKILL"
        assert pool.size == 0
        replacement = pool.acquire()
        assert replacement.pid != worker.pid
        assert (await replacement.start(request("noop")))["ok"] is True
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_kill_ends_the_worker_and_keeps_its_output(tmp_path: Path) -> None:
    pool = WorkerPool(limit=1)
    pids = tmp_path / "pids.json"
    try:
        worker = pool.acquire()
        reply = worker.start(request("spawn_and_hang", pids=str(pids)))
        await until(pids.exists)
        await pool.discard(worker, grace=5.0)  # SIGTERM is enough: no need to wait 5 s
        assert await reply is None
        assert worker.returncode == -signal.SIGTERM
        import json

        assert all(process_gone(pid) for pid in json.loads(pids.read_text()))
        assert worker.captured().stdout == ""  # still readable after the files closed
    finally:
        await pool.close()


@pytest.mark.anyio
async def test_captured_output_is_per_attempt() -> None:
    pool = WorkerPool(limit=1)
    try:
        worker = pool.acquire()
        await worker.start(request("chatty"))
        first = worker.captured()
        assert "from-c-printf" in first.stdout and first.stderr == "to stderr\n"
        assert [level for _, level, _ in first.logs] == ["INFO", "WARNING", "DEBUG"]
        await worker.start(request("noop"))
        assert worker.captured().stdout == "" and worker.captured().logs == ()
    finally:
        await pool.close()


# --- in-process pieces ----------------------------------------------------------------------------


def test_frames_round_trip(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    message = {"ok": True, "error": None, "nested": [1, "two", b"\x00"]}
    os.write(write_end, encode_frame(message) + encode_frame("second"))
    os.close(write_end)
    assert read_frame(read_end) == message
    assert read_frame(read_end) == "second"
    assert read_frame(read_end) is None  # end of file
    os.close(read_end)


def test_error_fields_name_the_innermost_frame() -> None:
    def outer() -> None:
        inner()

    def inner() -> None:
        {}["missing"]

    try:
        outer()
    except KeyError as exc:
        kind, message, text, function, location = error_fields(exc)
    assert (kind, message) == ("KeyError", "'missing'")
    assert function is not None and function.endswith(
        "test_error_fields_name_the_innermost_frame.<locals>.inner"
    )
    assert location is not None and location.startswith(str(Path(__file__)))
    assert "in outer" in text and "in inner" in text


def test_a_failed_attempt_restores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_TEST_KEPT", "before")
    monkeypatch.delenv("TF_TEST_ADDED", raising=False)
    attempt = request("fail", message="boom")
    attempt["env"] = {"TF_TEST_KEPT": "during", "TF_TEST_ADDED": "during"}
    logger = logging.getLogger("tideflow.job.test")
    reply = run_attempt(attempt, logger, _NoPublishers())
    assert reply["ok"] is False and reply["error"][:2] == ("ValueError", "boom")
    assert os.environ["TF_TEST_KEPT"] == "before" and "TF_TEST_ADDED" not in os.environ


class _NoPublishers:
    def getter(self, factory_path: str, specs: Any) -> Any:  # pragma: no cover - unused
        raise AssertionError("no publishing here")


def test_log_records_cut_by_a_crash_are_dropped() -> None:
    text = '[1700000000.5, "INFO", "whole"]\n[1700000001.0, "WARN'
    ((at, level, message),) = parse_log_records(text)
    assert (at.timestamp(), level, message) == (1700000000.5, "INFO", "whole")
