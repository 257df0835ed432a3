"""Jobs on a `kubernetes` executor through `tideflow run`, as a user runs them:
real orchestrator processes, a real SQLite state store, `tideflow cancel` and
`tideflow logs`, SIGKILL for the orchestrator.

No Kubernetes API server can run on this machine (nor on CI's): the orchestrator
talks to `FakeKubernetes` (tests/plugins/fake_kubernetes.py), a local stand-in
for the API server started in the test process, through a kubeconfig, exactly as
it would talk to a cluster. Its "kubelet" runs each pod's container command as a
local process, with the environment the Job's manifest gives and the
`secretKeyRef`s resolved from a Secret added to the fake. Every wait has a hang
limit.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tideflow.runtime.model import AttemptStatus, JobRunRow, RunStatus
from tideflow.runtime.store import Store
from tideflow.runtime.store.leases import lease_key


def _load_fake() -> Any:
    """The fake API server module, loaded by name as tests/plugins/conftest.py does
    (pytest's importlib mode puts no test folder on sys.path)."""
    if "fake_kubernetes" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "plugins" / "fake_kubernetes.py"
        spec = importlib.util.spec_from_file_location("fake_kubernetes", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_kubernetes"] = module
        spec.loader.exec_module(module)
    return sys.modules["fake_kubernetes"]


FakeKubernetes = _load_fake().FakeKubernetes

pytestmark = pytest.mark.integration

TIDEFLOW = [sys.executable, "-m", "tideflow"]
#: the longest anything here may take before the test fails instead of hanging
HANG_LIMIT = 60.0
#: a short lease, so that a restarted orchestrator takes over soon after a SIGKILL
LEASE = ("--lease", "4s", "--renew", "0.5s")
NAMESPACE = "shop-jobs"
SECRET = "shop-jobs"
TOKEN = "tok-3141-never-stored"

T = TypeVar("T")

JOBS = """
import os
import subprocess
import time
from pathlib import Path


def extract(ctx):
    Path(ctx.params["out"], "extract").write_text(f"{os.getpid()} {os.environ['HOSTNAME']}")
    print("extracted 3 rows")
    # the test gives the token reversed, so that the manifest can be searched for it
    print("token present:", os.environ.get("API_TOKEN", "")[::-1] == ctx.params["reversed"])
    ctx.logger.info("extract done")


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
        marks.write(f"{ctx.attempt} {os.getpid()} {os.environ['HOSTNAME']}\\n")
    if ctx.attempt == 1:
        time.sleep(300)  # its pod is deleted meanwhile
    print(f"attempt {ctx.attempt} made it")


def until_go(ctx):
    Path(ctx.params["out"], "until_go").write_text(str(os.getpid()))
    go = Path(ctx.params["out"], "go")
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("went")
"""


def wait_until(condition: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + HANG_LIMIT
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {HANG_LIMIT:g}s for {what}")
        time.sleep(0.05)  # polling a condition, not assuming an outcome


def started_at(pid: int) -> str | None:
    """When live process `pid` started (clock ticks since boot), or None when it has
    ended (a zombie nobody reaped yet counts as ended). With its pid, this names one
    process even after the pid is reused: this box wraps around its 32768 pids
    quickly while test suites run."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # field 22, starttime


def alive(process: tuple[int, str | None]) -> bool:
    """Whether the process `(pid, started_at(pid))` still runs."""
    pid, started = process
    return started is not None and started_at(pid) == started


def processes(*pids: int) -> list[tuple[int, str | None]]:
    return [(pid, started_at(pid)) for pid in pids]


class Project:
    def __init__(self, root: Path, api: Any) -> None:
        self.root = root
        self.api = api
        self.out = root / "out"
        self.out.mkdir()
        self.state = f"sqlite:///{root / 'state.db'}"
        self.kubeconfig = api.write_kubeconfig(root / "kubeconfig")
        self.processes: list[subprocess.Popen[str]] = []
        (root / "k8s_e2e_jobs.py").write_text(JOBS)

    def flow(self, body: str) -> Path:
        path = self.root / "cluster.flow"
        head = f'''\
            flow "onk8s" {{
              timezone = "UTC"
              executor = executor.k8s
            }}
            executor "k8s" {{
              kind          = "kubernetes"
              image         = "registry.example.com/shop/jobs:1.4.2"
              namespace     = "{NAMESPACE}"
              secret_name   = "{SECRET}"
              kubeconfig    = "kubeconfig"
              poll_interval = 100ms
              grace_period  = 2s
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
        # the orchestrator has no API_TOKEN: the pods get it from the Secret
        env = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
        process = subprocess.Popen(
            [*TIDEFLOW, "run", str(flow), "--no-live", "--grace", "2s", *LEASE],
            cwd=self.root,
            env={**env, "TIDEFLOW_STATE": self.state},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        with self.store() as store:

            def leading() -> bool:
                lease = store.lease(lease_key(["onk8s"]))
                ours = [
                    o.id for o in store.live_orchestrators(["onk8s"], 30) if o.pid == process.pid
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
def project(tmp_path: Path) -> Iterator[Project]:
    with FakeKubernetes(user=f"system:serviceaccount:{NAMESPACE}:tideflow") as api:
        api.add_secret(SECRET, {"API_TOKEN": TOKEN}, namespace=NAMESPACE)
        made = Project(tmp_path, api)
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


def test_a_dag_runs_in_pods_and_logs_show_it_as_for_a_local_attempt(project: Project) -> None:
    """Through the local fake API server (no real one can run here)."""
    flow = project.flow(f'''
        job "extract" {{
          run    = "k8s_e2e_jobs:extract"
          params = {{ out = "{project.out}", reversed = "{TOKEN[::-1]}" }}
          env    = {{ API_TOKEN = secret("API_TOKEN") }}
          resources {{
            cpu    = 0.5
            memory = 256Mi
          }}
        }}
        job "report" {{
          after = [job.extract]
          run   = "k8s_e2e_jobs:report"
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "extract")
    report = project.run_of("report", RunStatus.FAILED)
    output = stop(orchestrator)
    assert "Traceback" not in output

    extract = project.run_of("extract", RunStatus.SUCCESS)
    extract_pid, pod = project.file("extract").split()
    assert int(extract_pid) != orchestrator.pid
    assert pod.startswith("onk8s-extract-")  # the Job's pod
    with project.store() as store:
        (attempt,) = store.attempts(extract.id)
    assert attempt.executor_ref is not None and pod.startswith(attempt.executor_ref)
    assert "token present: True" in attempt.stdout
    assert TOKEN not in attempt.stdout
    extract_logs = project.cli("logs", str(extract.id)).stdout
    assert "extracted 3 rows" in extract_logs and "extract done" in extract_logs

    logs = project.cli("logs", str(report.id))
    assert logs.returncode == 0, logs.stderr
    assert "rendering the report" in logs.stdout
    assert "the numbers look odd" in logs.stdout and "WARNING" in logs.stdout
    assert "ValueError: negative total: -1" in logs.stdout
    assert 'raise ValueError(f"negative total: {total}")' in logs.stdout
    assert "k8s_e2e_jobs.check" in logs.stdout
    # every collected Job is gone, with its pod
    assert project.api.job_names(namespace=NAMESPACE) == []
    [created, *_] = project.api.requests_to("POST", f"/namespaces/{NAMESPACE}/jobs")
    assert TOKEN not in str(created.body)
    [container] = created.body["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == {"cpu": "500m", "memory": "256Mi"}


def test_a_timeout_and_a_cancel_kill_the_pods_processes(project: Project) -> None:
    """Through the local fake API server (no real one can run here), whose pods are
    local processes."""
    flow = project.flow(f'''
        job "slow" {{
          run     = "k8s_e2e_jobs:with_child"
          params  = {{ out = "{project.out}" }}
          timeout = 2s
        }}
        job "long" {{
          run    = "k8s_e2e_jobs:with_child"
          params = {{ out = "{project.out}" }}
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "slow")
    project.trigger(flow, "long")
    long_pids = processes(*map(int, project.file("long").split()))
    with project.store() as store:
        (long,) = store.job_runs(job="long")
    cancelled = project.cli("cancel", str(long.id))
    assert cancelled.returncode == 0, cancelled.stderr
    project.run_of("long", RunStatus.CANCELLED)
    slow = project.run_of("slow", RunStatus.FAILED)
    stop(orchestrator)
    with project.store() as store:
        (attempt,) = store.attempts(slow.id)
    assert attempt.status is AttemptStatus.TIMEOUT
    killed = list(long_pids)
    if (project.out / "slow").exists():  # it may time out before it writes its pids
        killed += processes(*map(int, (project.out / "slow").read_text().split()))
    for process in killed:
        wait_until(lambda p=process: not alive(p), f"process {process[0]} to be killed")
    wait_until(lambda: project.api.job_names(namespace=NAMESPACE) == [], "the Jobs to go")


def test_a_deleted_pod_makes_the_attempt_lost_and_the_retry_succeeds(project: Project) -> None:
    """The pod is deleted in the local fake API server (no real one can run here), as
    a drained node's would be."""
    flow = project.flow(f'''
        job "fragile" {{
          run    = "k8s_e2e_jobs:fragile"
          params = {{ out = "{project.out}" }}
          retry {{
            attempts = 2
            backoff  = fixed(1s)
          }}
        }}
    ''')
    orchestrator = project.start(flow)
    project.trigger(flow, "fragile")
    _, first_pid, pod = project.file("fragile").split()
    [first] = processes(int(first_pid))
    project.api.delete_pod(pod, namespace=NAMESPACE)
    run = project.run_of("fragile", RunStatus.SUCCESS, RunStatus.FAILED)
    stop(orchestrator)
    assert run.status is RunStatus.SUCCESS
    with project.store() as store:
        attempts = store.attempts(run.id)
    assert [a.status for a in attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCESS]
    assert "attempt 2 made it" in attempts[1].stdout
    marks = [line.split() for line in (project.out / "fragile").read_text().splitlines()]
    assert [m[0] for m in marks] == ["1", "2"]  # Kubernetes did not run attempt 1 again
    assert marks[1][2] != pod  # the retry ran in a pod of its own
    assert not alive(first)


def test_a_restarted_orchestrator_adopts_a_running_attempt_and_records_its_success(
    project: Project,
) -> None:
    """The Job runs on in the local fake API server (no real one can run here) while
    no orchestrator watches; the next one re-attaches by label."""
    flow = project.flow(f'''
        job "until_go" {{
          run    = "k8s_e2e_jobs:until_go"
          params = {{ out = "{project.out}" }}
          retry {{ attempts = 2 }}
        }}
    ''')
    first = project.start(flow)
    project.trigger(flow, "until_go")
    [job] = processes(int(project.file("until_go")))
    first.kill()  # SIGKILL: no clean-up at all
    first.communicate(timeout=HANG_LIMIT)
    assert alive(job)  # the attempt runs on without its orchestrator

    second = project.start(flow)
    (project.out / "go").touch()
    run = project.run_of("until_go", RunStatus.SUCCESS, RunStatus.FAILED)
    stop(second)
    assert run.status is RunStatus.SUCCESS
    with project.store() as store:
        attempts = store.attempts(run.id)
    assert [a.status for a in attempts] == [AttemptStatus.SUCCESS]  # adopted, not retried
    assert "went" in attempts[0].stdout
    assert project.api.job_names(namespace=NAMESPACE) == []
