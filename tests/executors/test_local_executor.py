"""The `local` executor's isolated mode (a fresh process per attempt) passes the
executor contract, and kills an attempt's whole process group."""

from __future__ import annotations

import os
import re

import anyio
import pytest
from tideflow.plugins.local import LocalExecutor

from tideflow.testing import ExecutorContract, ExecutorFactory, attempt_request

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def tideflow_executor_factory() -> ExecutorFactory:
    return lambda: LocalExecutor({"isolate": True})


@pytest.fixture
def tideflow_executor_reattaches() -> bool:
    return False  # its attempts are this orchestrator's own processes


class TestLocalExecutor(ExecutorContract):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cancel_kills_what_the_attempt_started() -> None:
    async with LocalExecutor({"isolate": True}) as executor:
        handle = await executor.start(attempt_request("sleeps"))
        found = None
        with anyio.fail_after(30):
            while found is None:
                # the job prints its own pid and its child's as soon as it runs
                for held in await executor.attempts():
                    assert held.ref == handle.ref
                running = executor._running[handle.ref]
                found = re.search(r"child=(\d+)", (running.folder / "stdout").read_text())
                await anyio.sleep(0.05)
        child = int(found.group(1))
        assert _alive(child)
        await executor.cancel(handle, grace=0.5)
        result = await executor.wait(handle)
    assert result.status == "cancelled"
    with anyio.fail_after(10):
        while _alive(child):
            await anyio.sleep(0.05)
