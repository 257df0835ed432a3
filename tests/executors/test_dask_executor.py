"""The `dask` executor against a real dask.distributed cluster: a `dask scheduler`
and three `dask worker` processes on loopback (`tideflow.testing.dask`), one of
them declaring `GPU=1`. Nothing is mocked; every wait has a hang limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tideflow.plugins.api import (
    AttemptHandle,
    AttemptRequest,
    AttemptResources,
    BackendConfigError,
    BackendContext,
    BackendError,
)
from tideflow.plugins.dask_executor import DaskExecutor, DaskNotInstalledError
from tideflow.plugins.dask_executor.task import claim_name
from tideflow.plugins.manager import load_plugins

from tideflow.testing import ExecutorContract, ExecutorFactory
from tideflow.testing.dask import DaskCluster, WorkerSpec, dask_cluster, running_dask_cluster
from tideflow.testing.nats import free_port

__all__ = ["dask_cluster"]  # the session's cluster, a fixture

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

#: the longest anything here may take before the test fails instead of hanging
HANG_LIMIT = 60.0

JOBS = """\
import logging
import os
import subprocess
import subprocess
import time
from pathlib import Path


def ok(ctx):
    print(f"hello from {os.getpid()}")
    ctx.logger.warning("working on %s", ctx.job)
    # this process, its parent (the supervisor) and the Dask worker process above it
    stat = Path(f"/proc/{os.getppid()}/stat").read_text()
    worker = stat.rpartition(")")[2].split()[1]
    Path(os.environ["OUT"]).write_text(f"{os.getpid()} {os.getppid()} {worker}")


def boom(ctx):
    print("about to fail")
    check_input(-1)


def check_input(value):
    raise ValueError(f"bad input: {value}")


def with_child(ctx):
    child = subprocess.Popen(["sleep", "300"])
    Path(os.environ["OUT"]).write_text(f"{os.getpid()} {child.pid}")
    child.wait()


def mark_then_sleep(ctx):
    with open(os.environ["OUT"], "a") as marks:
        marks.write(f"{os.getpid()}\\n")
    time.sleep(300)


def until_go(ctx):
    Path(os.environ["OUT"]).write_text(str(os.getpid()))
    go = Path(os.environ["GO"])
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("went")
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def jobs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dask-jobs")
    (folder / "dask_jobs.py").write_text(JOBS)
    return folder


@pytest.fixture
async def executor(dask_cluster: DaskCluster) -> AsyncIterator[DaskExecutor]:
    async with DaskExecutor(
        {"scheduler": dask_cluster.address, "worker_resources": {"GPU": 1}}
    ) as executor:
        yield executor


Request = Callable[..., AttemptRequest]


@pytest.fixture
def request_for(jobs_dir: Path, request: pytest.FixtureRequest) -> Request:
    """Builds a request with a key unique to the test."""
    counter = iter(range(1, 1000))

    def build(
        target: str | None = None,
        *,
        command: tuple[str, ...] | None = None,
        env: dict[str, str] | None = None,
        resources: AttemptResources | None = None,
    ) -> AttemptRequest:
        attempt = next(counter)
        job = request.node.name.replace("[", "-").replace("]", "")
        return AttemptRequest(
            key=f"tests/{job}/{os.getpid()}-{time.monotonic_ns()}/{attempt}",
            flow="tests",
            job=job,
            job_run_id=1,
            attempt=attempt,
            target=target,
            command=command,
            env=env or {},
            sys_path=(str(jobs_dir),),
            resources=resources or AttemptResources(),
        )

    return build


async def wait_for(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + HANG_LIMIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)  # polling a condition, not assuming an outcome
    raise AssertionError(f"waited {HANG_LIMIT:g}s for {what}")


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def worker_of(cluster: DaskCluster, pid: int) -> str:
    """The address of the Dask worker process that `pid` descends from."""
    workers = {info["pid"]: address for address, info in cluster.workers().items()}
    ancestor = pid
    while ancestor > 1:
        if ancestor in workers:
            return workers[ancestor]
        ancestor = parent_of(ancestor)
    raise AssertionError(f"process {pid} does not run under a Dask worker")


async def test_a_python_job_runs_in_a_worker_process_with_its_output_and_logs(
    executor: DaskExecutor, request_for: Request, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    out = tmp_path / "pid"
    handle = await executor.start(request_for("dask_jobs:ok", env={"OUT": str(out)}))
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "success", result
    pid, supervisor, worker_pid = map(int, out.read_text().split())
    assert os.getpid() not in (pid, supervisor, worker_pid)
    assert result.stdout == f"hello from {pid}\n"
    assert [(level, message) for _, level, message in result.logs] == [
        ("WARNING", f"working on {handle.key.split('/')[1]}")
    ]
    workers = {info["pid"]: address for address, info in dask_cluster.workers().items()}
    assert result.where == f"{workers[worker_pid]} pid {supervisor}"
    assert await executor.attempts() == []  # collected: the cluster holds nothing more


async def test_a_failing_python_job_brings_back_its_exception_traceback_and_function(
    executor: DaskExecutor, request_for: Request
) -> None:
    handle = await executor.start(request_for("dask_jobs:boom"))
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "failed", result
    assert result.stdout == "about to fail\n"
    assert result.error is not None
    assert result.error.type.rpartition(".")[2] == "ValueError"
    assert result.error.message == "bad input: -1"
    assert result.error.function == "dask_jobs.check_input"
    assert "dask_jobs.py" in (result.error.location or "")
    assert 'raise ValueError(f"bad input: {value}")' in result.error.traceback


async def test_a_command_job_gives_its_exit_code_and_both_outputs(
    executor: DaskExecutor, request_for: Request
) -> None:
    command = ("sh", "-c", "echo out; echo err >&2; exit 3")
    handle = await executor.start(request_for(command=command))
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert (result.status, result.exit_code) == ("failed", 3)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert result.error is not None
    assert "exited with code 3" in result.error.message


async def test_a_gpu_job_lands_only_on_the_worker_that_declares_a_gpu(
    executor: DaskExecutor, request_for: Request, dask_cluster: DaskCluster
) -> None:
    gpu_worker = next(a for a, w in dask_cluster.workers().items() if w["name"] == "gpu")
    gpu = AttemptResources(gpu=1)
    handles = [
        await executor.start(request_for(command=("true",), resources=gpu)) for _ in range(4)
    ]
    results = await asyncio.wait_for(
        asyncio.gather(*(executor.wait(h) for h in handles)), HANG_LIMIT
    )
    assert [r.status for r in results] == ["success"] * 4
    assert {(r.where or "").split(" pid ")[0] for r in results} == {gpu_worker}


async def test_cancel_kills_the_attempts_process_group(
    executor: DaskExecutor, request_for: Request, tmp_path: Path
) -> None:
    out = tmp_path / "pids"
    handle = await executor.start(request_for("dask_jobs:with_child", env={"OUT": str(out)}))
    pids = await wait_for(lambda: out.exists() and out.read_text(), "the job to start its child")
    job_pid, child_pid = map(int, pids.split())
    await executor.cancel(handle, grace=5.0)
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "cancelled", result
    await wait_for(lambda: not alive(child_pid), "the job's child `sleep` to die")
    await wait_for(lambda: not alive(job_pid), "the job's process to die")


async def test_cancel_of_an_attempt_no_worker_can_take_stops_it_before_it_starts(
    executor: DaskExecutor, request_for: Request
) -> None:
    nowhere = AttemptResources(extras={"TPU": 1})
    handle = await executor.start(request_for(command=("true",), resources=nowhere))
    await executor.cancel(handle, grace=1.0)
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "cancelled"
    assert await executor.attempts() == []


async def test_a_worker_killed_mid_attempt_makes_it_lost_and_dask_does_not_run_it_again(
    executor: DaskExecutor, request_for: Request, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    handle = await executor.start(request_for("dask_jobs:mark_then_sleep", env={"OUT": str(marks)}))
    text = await wait_for(lambda: marks.exists() and marks.read_text(), "the job's side effect")
    job_pid = int(text.split()[0])
    worker = worker_of(dask_cluster, job_pid)
    dask_cluster.kill_worker(worker)
    try:
        result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
        assert result.status == "lost", result
        assert result.error is not None
        assert worker in (result.where or "")
        assert marks.read_text().splitlines() == [str(job_pid)]  # ran once, not re-run
        # the dead worker's attempt does not run on behind it
        await wait_for(lambda: not alive(job_pid), "the orphaned attempt to be killed")
    finally:
        await asyncio.to_thread(dask_cluster.wait_for_workers)  # the nanny's new worker


async def test_a_worker_lost_with_no_other_worker_able_to_rerun_it_is_noticed(
    executor: DaskExecutor, request_for: Request, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """The only worker declaring a resource dies (no nanny brings it back): Dask's
    re-run would wait forever, so `wait` notices that the worker left."""
    solo = dask_cluster.add_worker(WorkerSpec("solo", 1, {"SOLO": 1}), nanny=False)
    marks = tmp_path / "marks"
    handle = await executor.start(
        request_for(
            "dask_jobs:mark_then_sleep",
            env={"OUT": str(marks)},
            resources=AttemptResources(extras={"SOLO": 1}),
        )
    )
    text = await wait_for(lambda: marks.exists() and marks.read_text(), "the job's side effect")
    job_pid = int(text.split()[0])
    assert worker_of(dask_cluster, job_pid) == solo
    dask_cluster.kill_worker(solo)
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "lost", result
    assert result.where is not None and result.where.startswith(solo)
    assert marks.read_text().splitlines() == [str(job_pid)]
    await wait_for(lambda: not alive(job_pid), "the orphaned attempt to be killed")
    assert await executor.attempts() == []


async def test_a_worker_retired_mid_attempt_ends_it_and_it_is_lost(
    executor: DaskExecutor, request_for: Request, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """A worker closing gracefully (scaled down) ends its attempt at once instead of
    leaving it to run until the worker's process exits; the attempt is `lost`."""
    retiring = dask_cluster.add_worker(WorkerSpec("retiring", 1, {"RETIRING": 1}), nanny=False)
    marks = tmp_path / "marks"
    handle = await executor.start(
        request_for(
            "dask_jobs:mark_then_sleep",
            env={"OUT": str(marks)},
            resources=AttemptResources(extras={"RETIRING": 1}),
        )
    )
    text = await wait_for(lambda: marks.exists() and marks.read_text(), "the job's side effect")
    job_pid = int(text.split()[0])

    def retire() -> None:
        with dask_cluster.client() as client:
            client.retire_workers([retiring], close_workers=True)

    await asyncio.to_thread(retire)
    result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert result.status == "lost", result
    await wait_for(lambda: not alive(job_pid), "the attempt to end with its worker")
    assert marks.read_text().splitlines() == [str(job_pid)]


async def test_a_new_executor_reattaches_to_a_running_attempt_and_collects_its_success(
    dask_cluster: DaskCluster, request_for: Request, tmp_path: Path
) -> None:
    out, go = tmp_path / "pid", tmp_path / "go"
    config = {"scheduler": dask_cluster.address}
    async with DaskExecutor(config) as first:
        started = await first.start(
            request_for("dask_jobs:until_go", env={"OUT": str(out), "GO": str(go)})
        )
        await wait_for(out.exists, "the attempt to start")
    # the first orchestrator is gone; the attempt runs on
    async with DaskExecutor(config) as second:
        found = await second.attempts()
        assert started in found
        go.touch()
        result = await asyncio.wait_for(second.wait(started), HANG_LIMIT)
        assert result.status == "success", result
        assert result.stdout == "went\n"
        assert await second.attempts() == []


async def test_a_reattached_handle_the_scheduler_no_longer_holds_is_lost(
    executor: DaskExecutor,
) -> None:
    result = await executor.wait(AttemptHandle("f/j/1/1", "tideflow/f/j/1/1-never-started"))
    assert result.status == "lost"


async def test_attempts_lists_only_its_own_namespace(
    dask_cluster: DaskCluster, request_for: Request, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    env = {"OUT": str(tmp_path / "pid"), "GO": str(go)}
    async with (
        DaskExecutor({"scheduler": dask_cluster.address, "namespace": "one"}) as one,
        DaskExecutor({"scheduler": dask_cluster.address, "namespace": "two"}) as two,
    ):
        handle = await one.start(request_for("dask_jobs:until_go", env=env))
        assert handle.ref.startswith("one/")
        assert await one.attempts() == [handle]
        assert await two.attempts() == []
        go.touch()
        assert (await asyncio.wait_for(one.wait(handle), HANG_LIMIT)).status == "success"


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[DaskCluster]:
    """A cluster of its own whose members only talk TLS (self-signed certificate)."""
    with running_dask_cluster([WorkerSpec("tls-only", 1)], tls=True) as cluster:
        yield cluster


async def test_a_tls_scheduler_is_reached_with_the_tls_files(
    tls_cluster: DaskCluster, request_for: Request, tmp_path: Path
) -> None:
    assert tls_cluster.address.startswith("tls://") and tls_cluster.tls is not None
    files = tls_cluster.tls
    # relative paths are the flow file's directory's
    context = BackendContext(source=files.cert.parent / "cluster.flow")
    config = {
        "scheduler": tls_cluster.address,
        "tls_ca_file": files.ca.name,
        "tls_cert": files.cert.name,
        "tls_key": str(files.key),
    }
    async with DaskExecutor(config, context=context) as executor:
        handle = await executor.start(request_for(command=("sh", "-c", "echo over tls")))
        result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
    assert (result.status, result.stdout) == ("success", "over tls\n")
    with pytest.raises(BackendConfigError, match="a `tls://` scheduler needs"):
        DaskExecutor({"scheduler": tls_cluster.address})
    with pytest.raises(BackendConfigError, match="`tls_key` missing"):
        DaskExecutor({"tls_ca_file": "ca.pem", "tls_cert": "cert.pem"})
    missing = {**config, "tls_key": str(tmp_path / "nowhere.key")}
    async with DaskExecutor(missing, context=context) as executor:
        with pytest.raises(BackendError, match="no file"):
            await executor.start(request_for(command=("true",)))


async def test_a_scheduler_lost_mid_attempt_is_lost_or_a_backend_error(
    request_for: Request, tmp_path: Path
) -> None:
    """A scheduler that restarts has forgotten the attempt: `lost`, not a hang (and
    its worker, which ends with the scheduler, takes the attempt with it). One that
    never comes back: a BackendError once the reconnection gives up."""
    go = tmp_path / "go"
    with running_dask_cluster([WorkerSpec("only", 1)]) as cluster:
        config = {"scheduler": cluster.address, "connect_timeout": 2.0}
        async with DaskExecutor(config) as executor:
            out = tmp_path / "first"
            handle = await executor.start(
                request_for("dask_jobs:until_go", env={"OUT": str(out), "GO": str(go)})
            )
            await wait_for(out.exists, "the attempt to start")
            job_pid = int(out.read_text())
            await asyncio.to_thread(cluster.restart_scheduler)
            result = await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
            assert result.status == "lost", result
            await wait_for(lambda: not alive(job_pid), "the attempt to end with its worker")

            # (the workers ended with the first scheduler: this one stays queued)
            handle = await executor.start(request_for(command=("true",)))
            cluster.kill_scheduler()
            with pytest.raises(BackendError, match="Dask scheduler"):
                await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)
        go.touch()


async def test_an_unreachable_scheduler_is_a_backend_error(request_for: Request) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    async with DaskExecutor({"scheduler": address, "connect_timeout": 0.5}) as executor:
        with pytest.raises(BackendError, match="cannot reach the Dask scheduler"):
            await executor.start(request_for(command=("true",)))


async def test_without_distributed_using_it_says_what_to_install(
    request_for: Request, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    async with DaskExecutor({}) as executor:
        with pytest.raises(DaskNotInstalledError, match=r'pip install "tideflow\[dask\]"'):
            await executor.start(request_for(command=("true",)))


def test_resources_become_dask_worker_resources() -> None:
    declared = DaskExecutor({"worker_resources": {"GPU": 2, "MEMORY": 2**35}})
    plain = DaskExecutor({})
    wanted = AttemptResources(cpu=2, memory=2**30, gpu=1, extras={"licence": 1})
    # cpu and memory constrain only when the workers declare them
    assert declared.dask_resources(wanted) == {"GPU": 1, "MEMORY": 2**30, "licence": 1}
    assert plain.dask_resources(wanted) == {"GPU": 1, "licence": 1}
    assert plain.dask_resources(AttemptResources(cpu=4)) == {}
    with pytest.raises(BackendError, match="not an amount"):
        plain.dask_resources(AttemptResources(extras={"licence": "many"}))


def test_capacity_reads_worker_resources_in_tideflows_words() -> None:
    capacity = DaskExecutor.capacity(
        {"worker_resources": {"GPU": 1, "CPU": 8, "MEMORY": 2**35, "licence": 2}}
    )
    assert capacity == {"gpu": 1, "cpu": 8, "memory": 2**35, "licence": 2}
    assert DaskExecutor.capacity({"worker_resources": {"MEMORY": 2**35}}) == {
        "gpu": 0,
        "memory": 2**35,
    }
    assert DaskExecutor.capacity({}) is None


def test_a_worker_resource_that_is_not_an_amount_is_a_config_error() -> None:
    with pytest.raises(BackendConfigError, match="GPU = 'one'"):
        DaskExecutor({"worker_resources": {"GPU": "one"}})


def test_the_executor_is_a_built_in_plugin() -> None:
    plugins = load_plugins()
    assert plugins.executor_class("dask") is DaskExecutor
    assert DaskExecutor.remote
    assert claim_name("tideflow/f/j/1/1") == "tideflow/f/j/1/1#claim"


class TestDaskExecutorContract(ExecutorContract):
    """The contract every executor passes, on the session's cluster."""

    @pytest.fixture
    def tideflow_executor_factory(self, dask_cluster: DaskCluster) -> ExecutorFactory:
        return lambda: DaskExecutor({"scheduler": dask_cluster.address})


def test_without_distributed_the_executor_is_still_listed() -> None:
    """tideflow without the `dask` extra lists the executor and compiles flows naming it."""
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "from tideflow.plugins.manager import load_plugins\n"
        "print(load_plugins().executor_class('dask').__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_LIMIT
    )
    assert (done.returncode, done.stdout.strip()) == (0, "DaskExecutor"), done.stderr
