"""Jobs on a `dask` executor through `tideflow run`, as a user runs them: a real
`dask scheduler` and three `dask worker` processes on loopback (one declaring
GPU=1; `tideflow.testing.dask`), real orchestrator processes, a real SQLite state
store, `tideflow cancel` and `tideflow logs`, SIGKILL for workers and for the
orchestrator. Nothing is mocked; every wait has a hang limit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from tideflow.runtime.model import AttemptStatus, JobRunRow, RunStatus
from tideflow.runtime.store import Store
from tideflow.runtime.store.leases import lease_key

from tideflow.testing.dask import DaskCluster, dask_cluster

__all__ = ["dask_cluster"]  # the session's cluster, a fixture

pytestmark = pytest.mark.integration

TIDEFLOW = [sys.executable, "-m", "tideflow"]
#: the longest anything here may take before the test fails instead of hanging
HANG_LIMIT = 60.0
#: a short lease, so that a restarted orchestrator takes over soon after a SIGKILL
LEASE = ("--lease", "4s", "--renew", "0.5s")

T = TypeVar("T")

JOBS = '''
import os
import subprocess
import time
from pathlib import Path


def _lineage(ctx):
    """This process, and the Dask worker process it runs under (the supervisor's parent)."""
    stat = Path(f"/proc/{os.getppid()}/stat").read_text()
    return f"{os.getpid()} {stat.rpartition(')')[2].split()[1]}"


def extract(ctx):
    Path(ctx.params["out"], "extract").write_text(_lineage(ctx))
    print("extracted 3 rows")
    ctx.logger.info("extract done")


def train(ctx):
    Path(ctx.params["out"], "train").write_text(_lineage(ctx))
    print("trained on the GPU")


def report(ctx):
    print("rendering the report")
    ctx.logger.warning("the numbers look odd")
    check(-1)


def check(total):
    raise ValueError(f"negative total: {total}")


def with_child(ctx):
    child = subprocess.Popen(["sleep", "300"])
    Path(ctx.params["out"], ctx.job).write_text(f"{os.getpid()} {child.pid}")
    child.wait()


def fragile(ctx):
    with open(Path(ctx.params["out"], "fragile"), "a") as marks:
        marks.write(f"{ctx.attempt} {_lineage(ctx)}\\n")
    if ctx.attempt == 1:
        time.sleep(300)  # its worker is killed meanwhile
    print(f"attempt {ctx.attempt} made it")


def until_go(ctx):
    Path(ctx.params["out"], "until_go").write_text(_lineage(ctx))
    go = Path(ctx.params["out"], "go")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("went")
'''


def wait_until(condition: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + HANG_LIMIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {HANG_LIMIT:g}s for {what}")
        time.sleep(0.05)  # polling a condition, not assuming an outcome


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie nobody reaped yet counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class Project:
    def __init__(self, root: Path, scheduler: str) -> None:
        self.root = root
        self.out = root / "out"
        self.out.mkdir()
        self.state = f"sqlite:///{root / 'state.db'}"
        self.scheduler = scheduler
        self.processes: list[subprocess.Popen[str]] = []
        (root / "dask_e2e_jobs.py").write_text(JOBS)

    def flow(self, body: str) -> Path:
        path = self.root / "cluster.flow"
        head = f'''\
            flow "ondask" {{
              timezone = "UTC"
              executor = executor.cluster
            }}
            executor "cluster" {{
              kind             = "dask"
              scheduler        = "{self.scheduler}"
              worker_resources = {{ GPU = 1 }}
            }}
        '''
        path.write_text(textwrap.dedent(head) + textwrap.dedent(body))
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDEFLOW, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=HANG_LIMIT,
            env={**os.environ, "TIDEFLOW_STATE": self.state},
        )

    def start(self, flow: Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*TIDEFLOW, "run", str(flow), "--no-live", "--grace", "2s", *LEASE],
            cwd=self.root,
            env={**os.environ, "TIDEFLOW_STATE": self.state},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        with self.store() as store:

            def leading() -> bool:
                lease = store.lease(lease_key(["ondask"]))
                ours = [
                    o.id for o in store.live_orchestrators(["ondask"], 30) if o.pid == process.pid
                ]
                return lease is not None and lease.expires_in > 0 and lease.holder in ours

            wait_until(leading, "the orchestrator to lead")
        return process

    def trigger(self, flow: Path, job: str) -> None:
        result = self.cli("trigger", str(flow), job)
        assert result.returncode == 0, result.stderr

    def store(self) -> Store:
        return Store.open(self.state)

    def run_of(self, job: str, *statuses: RunStatus) -> JobRunRow:
        """The job's run, once it has one of `statuses`."""
        with self.store() as store:
            runs: list[JobRunRow] = wait_until(
                lambda: [r for r in store.job_runs(job=job) if r.status in statuses],
                f"job {job} to end {' or '.join(statuses)}",
            )
        return runs[0]

    def file(self, name: str) -> str:
        path = self.out / name
        return wait_until(lambda: path.exists() and path.read_text(), f"out/{name}")


@pytest.fixture
def project(tmp_path: Path, dask_cluster: DaskCluster) -> Iterator[Project]:
    made = Project(tmp_path, dask_cluster.address)
    yield made
    for process in made.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=30)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=HANG_LIMIT)
    return output


def test_a_dag_runs_in_the_workers_processes_and_logs_show_it_as_for_a_local_attempt(
    project: Project, dask_cluster: DaskCluster
) -> None:
    flow = project.flow(f'''
        job "extract" {{
          run    = "dask_e2e_jobs:extract"
          params = {{ out = "{project.out}" }}
        }}
        job "train" {{
          after  = [job.extract]
          run    = "dask_e2e_jobs:train"
          params = {{ out = "{project.out}" }}
          resources {{ gpu = 1 }}
        }}
        job "report" {{
          after  = [job.train]
          run    = "dask_e2e_jobs:report"
          params = {{ out = "{project.out}" }}
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "extract")
    report = project.run_of("report", RunStatus.FAILED)
    workers = {info["pid"]: info["name"] for info in dask_cluster.workers().values()}
    output = stop(orchestrator)
    assert "Traceback" not in output

    for job in ("extract", "train"):
        assert project.run_of(job, RunStatus.SUCCESS)
    extract_pid, extract_worker = map(int, project.file("extract").split())
    train_pid, train_worker = map(int, project.file("train").split())
    assert orchestrator.pid not in (extract_pid, train_pid)
    assert extract_worker in workers  # a Dask worker's own child, not the orchestrator's
    assert workers[train_worker] == "gpu"  # `gpu = 1` runs only where a GPU is declared

    logs = project.cli("logs", str(report.id))
    assert logs.returncode == 0, logs.stderr
    assert "rendering the report" in logs.stdout
    assert "the numbers look odd" in logs.stdout and "WARNING" in logs.stdout
    assert "ValueError: negative total: -1" in logs.stdout
    assert 'raise ValueError(f"negative total: {total}")' in logs.stdout
    assert "dask_e2e_jobs.check" in logs.stdout
    # the attempt's header names its executor and the worker that ran it
    gpu_address = next(a for a, info in dask_cluster.workers().items() if info["name"] == "gpu")
    train_logs = project.cli("logs", str(project.run_of("train", RunStatus.SUCCESS).id)).stdout
    assert 'on executor "cluster"' in train_logs and gpu_address in train_logs
    extract = project.run_of("extract", RunStatus.SUCCESS)
    extract_logs = project.cli("logs", str(extract.id)).stdout
    assert "extracted 3 rows" in extract_logs and "extract done" in extract_logs


def test_a_timeout_and_a_cancel_kill_the_attempt_and_what_it_started(project: Project) -> None:
    flow = project.flow(f'''
        job "slow" {{
          run     = "dask_e2e_jobs:with_child"
          params  = {{ out = "{project.out}" }}
          timeout = 2s
        }}
        job "long" {{
          run    = "dask_e2e_jobs:with_child"
          params = {{ out = "{project.out}" }}
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "slow")
    project.trigger(flow, "long")
    long_job, long_child = map(int, project.file("long").split())
    with project.store() as store:
        (long,) = store.job_runs(job="long")
    cancelled = project.cli("cancel", str(long.id))
    assert cancelled.returncode == 0, cancelled.stderr
    project.run_of("long", RunStatus.CANCELLED)
    slow = project.run_of("slow", RunStatus.FAILED)
    slow_job, slow_child = map(int, project.file("slow").split())
    stop(orchestrator)
    with project.store() as store:
        (attempt,) = store.attempts(slow.id)
    assert attempt.status is AttemptStatus.TIMEOUT
    for pid in (long_job, long_child, slow_job, slow_child):
        wait_until(lambda pid=pid: not alive(pid), f"process {pid} to be killed")


def test_a_worker_killed_mid_attempt_makes_it_lost_and_the_retry_succeeds_elsewhere(
    project: Project, dask_cluster: DaskCluster
) -> None:
    flow = project.flow(f'''
        job "fragile" {{
          run    = "dask_e2e_jobs:fragile"
          params = {{ out = "{project.out}" }}
          retry {{
            attempts = 2
            backoff  = fixed(1s)
          }}
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "fragile")
    _, first_pid, worker_pid = map(int, project.file("fragile").split())
    address = next(a for a, w in dask_cluster.workers().items() if w["pid"] == worker_pid)
    dask_cluster.kill_worker(address)
    try:
        run = project.run_of("fragile", RunStatus.SUCCESS, RunStatus.FAILED)
    finally:
        dask_cluster.wait_for_workers()  # the nanny's new worker, for the tests after
    stop(orchestrator)
    assert run.status is RunStatus.SUCCESS
    with project.store() as store:
        attempts = store.attempts(run.id)
    assert [a.status for a in attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCESS]
    assert "attempt 2 made it" in attempts[1].stdout
    marks = [line.split() for line in (project.out / "fragile").read_text().splitlines()]
    assert [m[0] for m in marks] == ["1", "2"]  # Dask did not run attempt 1 again
    assert int(marks[1][2]) != worker_pid  # the retry ran in another worker process
    assert not alive(first_pid)


def test_a_restarted_orchestrator_adopts_a_running_attempt_and_records_its_success(
    project: Project,
) -> None:
    flow = project.flow(f'''
        job "until_go" {{
          run    = "dask_e2e_jobs:until_go"
          params = {{ out = "{project.out}" }}
          retry {{ attempts = 2 }}
        }}
    ''')
    first = project.start(flow)
    project.trigger(flow, "until_go")
    job_pid = int(project.file("until_go").split()[0])
    first.kill()  # SIGKILL: no clean-up at all
    first.communicate(timeout=HANG_LIMIT)
    assert alive(job_pid)  # the attempt runs on without its orchestrator

    second = project.start(flow)
    (project.out / "go").touch()
    run = project.run_of("until_go", RunStatus.SUCCESS, RunStatus.FAILED)
    stop(second)
    assert run.status is RunStatus.SUCCESS
    with project.store() as store:
        attempts = store.attempts(run.id)
    assert [a.status for a in attempts] == [AttemptStatus.SUCCESS]  # adopted, not retried
    assert "went" in attempts[0].stdout
