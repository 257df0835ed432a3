"""The contract every executor passes, built-in or third-party.

Enable it in a test module of your package::

    from tideflow.testing import ExecutorContract

    class TestSlurmExecutor(ExecutorContract):
        pass

with a `tideflow_executor_factory` fixture (usually in `conftest.py`) returning a
callable that takes nothing and returns a configured, unopened executor; every
executor it returns in one test must reach the same engine. The attempts run
`tideflow.testing.executor_jobs`, so the engine's machines need tideflow installed
(as they do to run any tideflow job). An executor that cannot re-attach to an
attempt from a new instance (the `local` one) sets the
`tideflow_executor_reattaches` fixture to False. `tideflow_contract_timeout`
bounds every wait (default 15 s; raise it for an engine that starts slowly).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeAlias

import anyio
import pytest

from tideflow.plugins.api import (
    ATTEMPT_RESULT_STATUSES,
    AttemptRequest,
    AttemptResult,
    Executor,
    SecretEnv,
    check_backend_class,
)

__all__ = ["ExecutorContract", "ExecutorFactory", "attempt_request"]

ExecutorFactory: TypeAlias = Callable[[], Executor]

JOBS = "tideflow.testing.executor_jobs"


def attempt_request(
    job: str = "succeeds",
    *,
    command: tuple[str, ...] | None = None,
    params: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    secret_env: dict[str, SecretEnv] | None = None,
    timeout: float | None = None,
) -> AttemptRequest:
    """A request for one attempt of a contract job (or of `command`), with a fresh key."""
    run = uuid.uuid4().int % 1_000_000_000
    flow = "contract"
    name = job.replace("_", "-")
    return AttemptRequest(
        key=f"{flow}/{name}/{run}/1",
        flow=flow,
        job=name,
        job_run_id=run,
        attempt=1,
        target=None if command is not None else f"{JOBS}:{job}",
        command=command,
        params=params or {},
        env=env or {},
        secret_env=secret_env or {},
        timeout=timeout,
        labels={"flow": flow, "job": name, "run": str(run), "attempt": "1"},
    )


async def _wait(executor: Executor, handle: Any, timeout: float) -> AttemptResult:
    with anyio.fail_after(timeout):
        return await executor.wait(handle)


async def _until_started(executor: Executor, handle: Any, timeout: float) -> None:
    """Until the attempt is listed as held (it was accepted and runs)."""
    with anyio.fail_after(timeout):
        while handle.ref not in {h.ref for h in await executor.attempts()}:
            await anyio.sleep(0.05)


class ExecutorContract:
    """The executor contract. Needs a `tideflow_executor_factory` fixture."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    async def test_declares_name_options_and_docs(
        self, tideflow_executor_factory: ExecutorFactory
    ) -> None:
        executor = tideflow_executor_factory()
        try:
            assert check_backend_class(type(executor)) == []
            assert isinstance(type(executor).remote, bool)
            assert all(isinstance(n, str) for n in type(executor).resource_options)
        finally:
            await executor.aclose()

    async def test_a_python_job_succeeds_with_its_output_and_log_records(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            request = attempt_request("succeeds", params={"size": 3})
            handle = await executor.start(request)
            assert handle.key == request.key
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status == "success", result
        assert "out: params=[('size', 3)] attempt=1" in result.stdout
        assert "err: a line on stderr" in result.stderr + result.stdout
        assert result.error is None
        if result.logs:  # engines that keep log records apart from the output
            assert [(level, message) for _, level, message in result.logs] == [
                ("INFO", "an info record from succeeds"),
                ("WARNING", "a warning record"),
            ]
        else:
            assert "an info record from succeeds" in result.stdout + result.stderr

    async def test_a_python_failure_carries_the_exception_traceback_and_function(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(attempt_request("fails", params={"why": "bad input"}))
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status == "failed", result
        assert result.error is not None
        assert result.error.type == "ValueError"
        assert result.error.message == "bad input"
        assert "raise ValueError(why)" in result.error.traceback
        assert result.error.function == f"{JOBS}._raise_value_error"
        assert "about to fail" in result.stdout

    async def test_sys_exit_gives_the_exit_code(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(attempt_request("exits", params={"code": 4}))
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status == "failed", result
        assert result.exit_code == 4

    async def test_a_command_runs_and_its_exit_code_counts(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            ok = await executor.start(attempt_request(command=("sh", "-c", "echo hello")))
            bad = await executor.start(
                attempt_request(command=("sh", "-c", "echo partial; exit 3"))
            )
            ok_result = await _wait(executor, ok, tideflow_contract_timeout)
            bad_result = await _wait(executor, bad, tideflow_contract_timeout)
        assert ok_result.status == "success", ok_result
        assert "hello" in ok_result.stdout
        assert bad_result.status == "failed", bad_result
        assert bad_result.exit_code == 3
        assert "partial" in bad_result.stdout

    async def test_env_and_secrets_reach_the_job(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        request = attempt_request(
            "prints_env",
            params={"expect": {"REGION": "eu-west", "API_TOKEN": "s3cr3t-value"}},
            env={"REGION": "eu-west"},
            secret_env={"API_TOKEN": SecretEnv("API_TOKEN", "s3cr3t-value")},
        )
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(request)
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status == "success", result
        assert "REGION: match" in result.stdout
        assert "API_TOKEN: match" in result.stdout

    async def test_cancel_ends_a_running_attempt(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(attempt_request("sleeps"))
            await _until_started(executor, handle, tideflow_contract_timeout)
            await executor.cancel(handle, grace=1.0)
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status == "cancelled", result

    async def test_attempts_lists_what_runs_and_forgets_what_was_collected(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(attempt_request("sleeps", params={"seconds": 60}))
            await _until_started(executor, handle, tideflow_contract_timeout)
            await executor.cancel(handle, grace=0.5)
            await _wait(executor, handle, tideflow_contract_timeout)
            assert handle.ref not in {h.ref for h in await executor.attempts()}

    async def test_a_new_instance_reattaches_to_a_running_attempt(
        self,
        tideflow_executor_factory: ExecutorFactory,
        tideflow_executor_reattaches: bool,
        tideflow_contract_timeout: float,
    ) -> None:
        """A new instance (a restarted orchestrator) finds a running attempt and
        collects its real outcome; one that cannot re-attach must not list it, so
        that the orchestrator counts it lost instead of waiting for it forever."""
        first = tideflow_executor_factory()
        seconds = 1 if tideflow_executor_reattaches else 60
        handle = await first.start(attempt_request("sleeps", params={"seconds": seconds}))
        await _until_started(first, handle, tideflow_contract_timeout)
        if not tideflow_executor_reattaches:
            async with tideflow_executor_factory() as second:
                assert handle.ref not in {h.ref for h in await second.attempts()}
            await first.aclose()
            return
        # the orchestrator that started it is gone; a new one finds it and collects it
        await first.aclose()
        async with tideflow_executor_factory() as second:
            held = {h.ref: h for h in await second.attempts()}
            assert handle.ref in held
            result = await _wait(second, held[handle.ref], tideflow_contract_timeout)
            assert result.status == "success", result
            assert handle.ref not in {h.ref for h in await second.attempts()}

    async def test_results_use_the_documented_statuses(
        self, tideflow_executor_factory: ExecutorFactory, tideflow_contract_timeout: float
    ) -> None:
        async with tideflow_executor_factory() as executor:
            handle = await executor.start(attempt_request("succeeds"))
            result = await _wait(executor, handle, tideflow_contract_timeout)
        assert result.status in ATTEMPT_RESULT_STATUSES

    async def test_aclose_is_idempotent(self, tideflow_executor_factory: ExecutorFactory) -> None:
        executor = tideflow_executor_factory()
        await executor.aclose()
        await executor.aclose()
