"""Command jobs, secrets, and publishing (from Python jobs and from a command's stdout)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler.ir import (
    EnvRef,
    FlowIR,
    JobNode,
    RetryPolicy,
    SecretRef,
    TopicNode,
)
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import AttemptRow, AttemptStatus, RunStatus
from tideflow.runtime.store import Store

from .jobs_for_tests.flows import file_broker, make_flow
from .jobs_for_tests.publishers import read_messages

pytestmark = pytest.mark.anyio
HERE = Path(__file__).resolve().parent
FILE_PUBLISHER = "jobs_for_tests.publishers:make_file_publisher"
SECRET = "hunter2-Zq8v"


@pytest.fixture(autouse=True)
def workers_import_test_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        yield store


@asynccontextmanager
async def executor(flow: FlowIR, store: Store, **options: Any) -> AsyncIterator[Executor]:
    options.setdefault("kill_grace", 0.5)
    async with Executor(flow, store, **options) as running:
        yield running


async def run_one(
    flow: FlowIR, store: Store, job: str, **options: Any
) -> tuple[RunStatus, list[AttemptRow]]:
    """Run `job` alone; its flow run's status and the job's attempts."""
    async with executor(flow, store, **options) as ex:
        flow_run = await ex.submit(RunRequest(job))
        status = await ex.wait(flow_run)
    (run,) = [r for r in store.job_runs(flow_run_id=flow_run) if r.job == job]
    return status, store.attempts(run.id)


# --- commands ---------------------------------------------------------------------------------


async def test_a_command_runs_as_argv_and_its_output_is_recorded(sqlite: Store) -> None:
    job = JobNode("hello", command=("sh", "-c", 'echo "out $1"; echo err >&2', "sh", "a b"))
    status, (attempt,) = await run_one(make_flow([job]), sqlite, "hello")
    assert status is RunStatus.SUCCESS
    assert (attempt.status, attempt.exit_code) == (AttemptStatus.SUCCESS, 0)
    assert (attempt.stdout, attempt.stderr) == ("out a b\n", "err\n")
    assert attempt.pid is not None and attempt.error is None


async def test_a_non_zero_exit_fails_the_attempt_with_its_code(sqlite: Store) -> None:
    job = JobNode(
        "bad",
        command=("sh", "-c", "echo 'disk full on /data' >&2; exit 3"),
        retry=RetryPolicy(attempts=2),
    )
    status, attempts = await run_one(make_flow([job]), sqlite, "bad")
    assert status is RunStatus.FAILED
    assert [(a.status, a.exit_code) for a in attempts] == [(AttemptStatus.FAILED, 3)] * 2
    error = attempts[0].error
    assert error is not None and error.type == "tideflow.runtime.commands.CommandFailed"
    assert error.message == "`sh` exited with code 3: disk full on /data"


async def test_a_command_killed_by_a_signal_crashed(sqlite: Store) -> None:
    job = JobNode("dies", command=("sh", "-c", "kill -SEGV $$"))
    _, (attempt,) = await run_one(make_flow([job]), sqlite, "dies")
    assert (attempt.status, attempt.exit_code) == (AttemptStatus.CRASHED, -11)
    assert attempt.error is not None and "was killed by SIGSEGV" in attempt.error.message


async def test_a_program_that_does_not_exist_fails_without_retrying(sqlite: Store) -> None:
    job = JobNode("typo", command=("no-such-program-tf",), retry=RetryPolicy(attempts=3))
    status, attempts = await run_one(make_flow([job]), sqlite, "typo")
    assert status is RunStatus.FAILED and len(attempts) == 1
    error = attempts[0].error
    assert error is not None and error.type == "FileNotFoundError"
    assert error.message.startswith("cannot run `no-such-program-tf`:")


async def test_shell_runs_the_string_through_sh(sqlite: Store) -> None:
    job = JobNode("piped", command="printf 'b\\na\\n' | sort | tr -d '\\n'", shell=True)
    status, (attempt,) = await run_one(make_flow([job]), sqlite, "piped")
    assert status is RunStatus.SUCCESS and attempt.stdout == "ab"


async def test_a_command_timeout_kills_its_process_group(sqlite: Store, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $$ $! > {pids}; wait"
    job = JobNode("hangs", command=("sh", "-c", script), timeout=0.5)
    _, (attempt,) = await run_one(make_flow([job]), sqlite, "hangs")
    assert attempt.status is AttemptStatus.TIMEOUT and attempt.exit_code == -15
    from .jobs_for_tests.harness import process_gone, until

    shell, sleeper = (int(p) for p in pids.read_text().split())
    await until(lambda: process_gone(shell) and process_gone(sleeper))


async def test_commands_get_the_orchestrators_env_and_the_jobs(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_INHERITED", "from-orchestrator")
    monkeypatch.setenv("TF_TEST_TARGET", "prod")
    job = JobNode(
        "env",
        command=(
            "sh",
            "-c",
            'echo "$TF_TEST_INHERITED $TARGET $1"',
            "sh",
            EnvRef("TF_TEST_TARGET"),
        ),
        env={"TARGET": EnvRef("TF_TEST_TARGET")},
    )
    _, (attempt,) = await run_one(make_flow([job]), sqlite, "env")
    assert attempt.stdout == "from-orchestrator prod prod\n"


# --- secrets ----------------------------------------------------------------------------------


def _assert_no_secret(attempts: list[AttemptRow], store: Store) -> None:
    for attempt in attempts:
        texts = [attempt.stdout, attempt.stderr]
        if attempt.error is not None:
            texts += [attempt.error.message, attempt.error.traceback]
        texts += [line.message for line in store.logs(attempt.id)]
        assert all(SECRET not in text for text in texts), texts


async def test_secrets_never_reach_a_failed_commands_records(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_TOKEN", SECRET)
    script = 'echo "token=$TOKEN arg=$1"; echo "bad token $TOKEN" >&2; exit 2'
    job = JobNode(
        "leaky",
        command=("sh", "-c", script, "sh", SecretRef("TF_TEST_TOKEN")),
        env={"TOKEN": SecretRef("TF_TEST_TOKEN")},
    )
    status, attempts = await run_one(make_flow([job]), sqlite, "leaky")
    assert status is RunStatus.FAILED
    (attempt,) = attempts
    _assert_no_secret(attempts, sqlite)
    assert attempt.stdout == "token=[secret] arg=[secret]\n"
    assert attempt.error is not None
    assert attempt.error.message == "`sh` exited with code 2: bad token [secret]"


async def test_secrets_never_reach_a_failed_python_jobs_records(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TF_TEST_TOKEN", SECRET)
    job = JobNode(
        "leaky", run="jobs_for_tests.jobs:leak_secret", env={"TOKEN": SecretRef("TF_TEST_TOKEN")}
    )
    status, attempts = await run_one(make_flow([job]), sqlite, "leaky")
    assert status is RunStatus.FAILED
    (attempt,) = attempts
    _assert_no_secret(attempts, sqlite)
    assert attempt.stdout == "token is [secret]\n"
    assert attempt.error is not None and attempt.error.message == "rejected token [secret]"
    assert [line.message for line in sqlite.logs(attempt.id)] == ["token [secret]"]


@pytest.mark.parametrize("kind", ["python", "command"])
async def test_a_missing_secret_fails_naming_the_variable(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.delenv("TF_TEST_ABSENT", raising=False)
    fields: dict[str, Any] = (
        {"run": "jobs_for_tests.jobs:noop"} if kind == "python" else {"command": ("true",)}
    )
    job = JobNode(
        "needs", env={"DB": SecretRef("TF_TEST_ABSENT")}, retry=RetryPolicy(attempts=3), **fields
    )
    status, attempts = await run_one(make_flow([job]), sqlite, "needs")
    assert status is RunStatus.FAILED and len(attempts) == 1  # retrying cannot help
    error = attempts[0].error
    assert error is not None
    assert error.message == (
        "environment variable `TF_TEST_ABSENT` is not set "
        '(read by secret("TF_TEST_ABSENT") in the env of job "needs")'
    )


async def test_an_env_default_is_used_and_a_missing_env_names_the_variable(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TF_TEST_ABSENT", raising=False)
    job = JobNode("argv", command=("echo", EnvRef("TF_TEST_ABSENT")))
    status, attempts = await run_one(make_flow([job]), sqlite, "argv")
    assert status is RunStatus.FAILED and attempts[0].error is not None
    assert '`TF_TEST_ABSENT` is not set (read by env("TF_TEST_ABSENT") in the command of job' in (
        attempts[0].error.message
    )
    job = JobNode("argv", command=("echo", EnvRef("TF_TEST_ABSENT", "fallback")))
    _, attempts = await run_one(make_flow([job], name="other"), sqlite, "argv")
    assert attempts[0].stdout == "fallback\n"


# --- publishing -------------------------------------------------------------------------------


def _publishing_flow(tmp_path: Path, *jobs: JobNode) -> tuple[FlowIR, Path]:
    sink = tmp_path / "published.jsonl"
    flow = make_flow(
        jobs,
        brokers=[file_broker(str(sink))],
        topics=[TopicNode("events", broker="files"), TopicNode("elsewhere", broker="files")],
    )
    return flow, sink


async def test_a_python_job_publishes_to_its_topics(sqlite: Store, tmp_path: Path) -> None:
    job = JobNode("pub", run="jobs_for_tests.jobs:publish_some", publishes=("events",))
    flow, sink = _publishing_flow(tmp_path, job)
    status, (attempt,) = await run_one(flow, sqlite, "pub", publisher=FILE_PUBLISHER)
    assert status is RunStatus.SUCCESS
    messages = read_messages(sink)
    assert [(m["topic"], m["value"], m["key"]) for m in messages] == [
        ("events", '{"n":1}', None),
        ("events", "two", "k2"),
        ("events", "three", None),
    ]
    assert {m["pid"] for m in messages} == {attempt.pid}  # published from the worker


async def test_publishing_to_an_undeclared_topic_fails_the_attempt(
    sqlite: Store, tmp_path: Path
) -> None:
    job = JobNode("pub", run="jobs_for_tests.jobs:publish_undeclared", publishes=("events",))
    flow, sink = _publishing_flow(tmp_path, job)
    status, (attempt,) = await run_one(flow, sqlite, "pub", publisher=FILE_PUBLISHER)
    assert status is RunStatus.FAILED and read_messages(sink) == []
    error = attempt.error
    assert error is not None and error.type == "tideflow.runtime.context.PublishError"
    assert error.message == (
        'job "pub" publishes to topic `elsewhere`, which is not in its `publishes` list '
        "(declared: `events`)"
    )
    assert error.function == "jobs_for_tests.jobs.publish_undeclared"  # the job's frame


async def test_a_command_publishes_each_stdout_line(sqlite: Store, tmp_path: Path) -> None:
    script = "for i in $(seq 1 1200); do echo line-$i; done; echo; echo last"
    job = JobNode("lines", command=("sh", "-c", script), publishes=("events",), publish_stdout=True)
    flow, sink = _publishing_flow(tmp_path, job)
    status, (attempt,) = await run_one(flow, sqlite, "lines", publisher=FILE_PUBLISHER)
    assert status is RunStatus.SUCCESS
    values = [m["value"] for m in read_messages(sink)]
    assert values == [f"line-{i}" for i in range(1, 1201)] + ["last"]  # the empty line is not
    assert attempt.stdout.endswith("line-1200\n\nlast\n")


async def test_a_publisher_that_cannot_be_built_fails_the_attempt(
    sqlite: Store, tmp_path: Path
) -> None:
    job = JobNode("pub", run="jobs_for_tests.jobs:publish_some", publishes=("events",))
    flow, _ = _publishing_flow(tmp_path, job)
    # the default factory looks for a broker plugin called "file", which does not exist
    status, (attempt,) = await run_one(flow, sqlite, "pub")
    assert status is RunStatus.FAILED
    assert attempt.error is not None and 'broker "file"' in attempt.error.message
