"""The `kubernetes` executor, driven through the official `kubernetes` client.

No Kubernetes API server can run on this machine (nor on CI's): every test here
talks to `FakeKubernetes` (tests/plugins/fake_kubernetes.py), a local stand-in
for the API server started per test on a free loopback port. For these tests it
serves batch/v1 Jobs (create, get, list by label, delete with a propagation
policy, `activeDeadlineSeconds`, `backoffLimit`), their pods and the pods' logs,
and its "kubelet" runs each pod's container command as a local process (the
container's `python` is this interpreter; the termination-message file is a
temporary file), with the environment the manifest gives and `secretKeyRef`s
resolved from Secrets added to the fake. The client reaches it through a
kubeconfig written to `tmp_path`, exactly as it would reach a cluster.

The contract suite runs too (`TestContract`), as a third party runs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from tideflow.compiler import compile_source
from tideflow.plugins.api import (
    AttemptRequest,
    AttemptResources,
    BackendError,
    SecretEnv,
    check_backend_class,
)
from tideflow.plugins.kubernetes_executor import (
    KubernetesExecutor,
    attempt_outcome,
    job_manifest,
    job_name,
)
from tideflow.plugins.kubernetes_executor.executor import KubernetesAccessError
from tideflow.plugins.kubernetes_executor.outcome import split_logs
from tideflow.plugins.manager import load_plugins

from tideflow.testing import ExecutorContract, ExecutorFactory


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

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
NAMESPACE = "batch-jobs"
SECRET = "job-secrets"
IMAGE = "registry.example.com/shop/jobs:1.4.2"
#: longest any test waits for something that must happen (a loaded CI box)
HANG_LIMIT = 60.0

Maker = Callable[..., KubernetesExecutor]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_api() -> Iterator[Any]:
    with FakeKubernetes(user=f"system:serviceaccount:{NAMESPACE}:tideflow") as api:
        api.add_secret(SECRET, {"API_TOKEN": "s3cr3t-value"}, namespace=NAMESPACE)
        yield api


@pytest.fixture
def make_executor(tmp_path: Path, fake_api: Any) -> Iterator[Maker]:
    kubeconfig = fake_api.write_kubeconfig(tmp_path / "kubeconfig")

    def make(**options: Any) -> KubernetesExecutor:
        config = {
            "image": IMAGE,
            "namespace": NAMESPACE,
            "kubeconfig": str(kubeconfig),
            "secret_name": SECRET,
            "poll_interval": 0.05,
            "grace_period": 2.0,
            **options,
        }
        return KubernetesExecutor({k: v for k, v in config.items() if v is not None})

    yield make


@pytest.fixture
async def executor(make_executor: Maker) -> AsyncIterator[KubernetesExecutor]:
    async with make_executor() as executor:
        yield executor


async def _wait(executor: KubernetesExecutor, handle: Any) -> Any:
    return await asyncio.wait_for(executor.wait(handle), HANG_LIMIT)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {HANG_LIMIT}s for {what}")
        time.sleep(0.02)


def _started_at(pid: int) -> str | None:
    """When live process `pid` started, or None when it has ended (a zombie nobody
    reaped counts as ended). With its pid, this names one process even after the
    pid is reused: this box wraps around its 32768 pids quickly under test suites."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # field 22, starttime


def _gone(process: tuple[int, str | None]) -> bool:
    pid, started = process
    return started is None or _started_at(pid) != started


def _group_members(group: int) -> list[int]:
    """The live processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def _pids(stdout: str) -> tuple[int, int]:
    found = re.search(r"pid=(\d+) child=(\d+)", stdout)
    assert found is not None, stdout
    return int(found.group(1)), int(found.group(2))


def _printed_pids(api: Any, job: str) -> tuple[int, int]:
    """The pids the `sleeps` job printed, read from its pod's log in the fake."""
    text: list[str] = []

    def printed() -> bool:
        pods = api.pods_of(job, namespace=NAMESPACE)
        text[:] = [line for pod in pods for _, line in list(pod.log)]
        return "child=" in "".join(text)

    _until(printed, f"the pids printed by Job {job}")
    return _pids("".join(text))


def request(
    job: str = "succeeds",
    *,
    flow: str = "nightly",
    run: int = 7,
    attempt: int = 1,
    **fields: Any,
) -> AttemptRequest:
    target = None if "command" in fields else f"tideflow.testing.executor_jobs:{job}"
    name = job.replace("_", "-")
    return AttemptRequest(
        key=f"{flow}/{name}/{run}/{attempt}",
        flow=flow,
        job=name,
        job_run_id=run,
        attempt=attempt,
        target=target,
        labels={"flow": flow, "job": name, "run": str(run), "attempt": str(attempt)},
        **fields,
    )


# --- the class ----------------------------------------------------------------------------


def test_the_class_declares_what_the_compiler_reads() -> None:
    """Checks a class attribute only: no API server is involved (none can run here)."""
    assert check_backend_class(KubernetesExecutor) == []
    assert KubernetesExecutor.remote is True
    assert KubernetesExecutor.secrets_by_reference is True
    assert KubernetesExecutor.capacity({"image": IMAGE}) is None
    assert KubernetesExecutor.capacity(
        {"image": IMAGE, "max_cpu": 8, "max_memory": 64 * 2**30, "max_gpu": 1}
    ) == {"cpu": 8.0, "memory": float(64 * 2**30), "gpu": 1.0}
    plugins = load_plugins()
    assert plugins.executor_class("kubernetes") is KubernetesExecutor


def test_job_names_are_dns_safe_short_unique_and_stable() -> None:
    """Pure naming: no API server is involved (none can run here)."""
    long = request(flow="Orders_Nightly_" * 6, job="Export_All_Customers_To_The_Warehouse")
    name = job_name(long)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert len(name) <= 52
    assert name.endswith("-7-1-" + name.rsplit("-", 1)[1])
    assert job_name(long) == name  # a create tried again finds its own Job
    assert job_name(request(attempt=2)) != job_name(request(attempt=1))
    assert job_name(request()).startswith("nightly-succeeds-7-1-")


def _ended_job(condition: str, reason: str | None = None) -> dict[str, Any]:
    status = {"type": condition, "status": "True"}
    if reason is not None:
        status["reason"] = reason
    return {
        "metadata": {"name": "nightly-report-7-1-abc", "namespace": NAMESPACE},
        "spec": {"activeDeadlineSeconds": 60},
        "status": {"conditions": [status]},
    }


def _pod(terminated: dict[str, Any] | None, **status: Any) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated is not None else {"running": {}}
    return {
        "metadata": {"name": "nightly-report-7-1-abc-x1y2z"},
        "spec": {"nodeName": "node-3"},
        "status": {"containerStatuses": [{"name": "attempt", "state": state}], **status},
    }


@pytest.mark.parametrize(
    ("job", "pod", "status", "exit_code", "error_type", "message_part"),
    [
        (_ended_job("Complete"), _pod({"exitCode": 0}), "success", 0, None, None),
        (
            _ended_job("Failed", "BackoffLimitExceeded"),
            _pod({"exitCode": 137, "reason": "OOMKilled"}),
            "crashed",
            137,
            "tideflow.runtime.executor.WorkerCrashed",
            "memory limit (OOMKilled)",
        ),
        (
            _ended_job("Failed", "BackoffLimitExceeded"),
            _pod({"exitCode": 143, "reason": "Error", "message": "last lines of the log"}),
            "crashed",
            143,
            "tideflow.runtime.executor.WorkerCrashed",
            "SIGTERM",
        ),
        (
            _ended_job("Failed", "BackoffLimitExceeded"),
            _pod({"exitCode": 2, "reason": "Error", "message": "usage: ..."}),
            "crashed",
            2,
            "tideflow.runtime.executor.WorkerCrashed",
            "exited with code 2 without a reply",
        ),
        (
            _ended_job("Failed", "BackoffLimitExceeded"),
            _pod(
                {"exitCode": 137, "reason": "Error"},
                reason="Preempting",
                message="Preempted in order to admit critical pod",
            ),
            "lost",
            137,
            "tideflow.plugins.kubernetes_executor.PodLost",
            "its pod was Preempting: Preempted in order to admit critical pod",
        ),
        (
            _ended_job("Failed", "BackoffLimitExceeded"),
            _pod(
                {"exitCode": 143, "reason": "Error"},
                conditions=[
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "DeletionByTaintManager",
                    }
                ],
            ),
            "lost",
            143,
            "tideflow.plugins.kubernetes_executor.PodLost",
            "its pod was DeletionByTaintManager",
        ),
        (
            _ended_job("Failed", "DeadlineExceeded"),
            None,
            "timeout",
            None,
            "tideflow.runtime.executor.AttemptTimeout",
            "activeDeadlineSeconds (60s)",
        ),
    ],
    ids=["complete", "oom", "sigterm", "no-summary", "preempted", "node-taint", "deadline"],
)
def test_the_outcome_of_an_ended_job(
    job: dict[str, Any],
    pod: dict[str, Any] | None,
    status: str,
    exit_code: int | None,
    error_type: str | None,
    message_part: str | None,
) -> None:
    """Job and pod documents as the API returns them, read without any server."""
    result = attempt_outcome(job, pod, "2026-12-02T13:00:00.123456789Z a line\n")
    assert (result.status, result.exit_code) == (status, exit_code)
    assert result.stdout == "a line\n"
    if error_type is None:
        assert result.error is None
    else:
        assert result.error is not None
        assert result.error.type == error_type
        assert message_part is not None and message_part in result.error.message
    expected_where = f"pod {NAMESPACE}/nightly-report-7-1-abc-x1y2z on node node-3"
    assert result.where == (expected_where if pod else f"job {NAMESPACE}/nightly-report-7-1-abc")


def test_log_lines_in_the_runners_format_become_records() -> None:
    """Pure parsing of a pod log read with timestamps; no server."""
    stdout, records = split_logs(
        "2026-12-02T13:00:00.123456789Z out: hello\n"
        "2026-12-02T13:00:01.5Z INFO loaded 3 rows\n"
        "2026-12-02T13:00:02+01:00 WARNING odd\n"
        "no stamp at all\n"
    )
    assert stdout == "out: hello\nno stamp at all\n"
    assert [(at.isoformat(), level, message) for at, level, message in records] == [
        ("2026-12-02T13:00:01.500000+00:00", "INFO", "loaded 3 rows"),
        ("2026-12-02T12:00:02+00:00", "WARNING", "odd"),
    ]


# --- the manifest -------------------------------------------------------------------------


async def test_the_job_manifest(make_executor: Maker, fake_api: Any) -> None:
    """The Job as the client sent it to the API server (the local fake, as no real
    one can run here; its pods are held Pending so nothing runs)."""
    fake_api.run_pods = False
    options = {
        "service_account": "nightly-jobs",
        "node_selector": {"pool": "gpu"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "yes", "tolerationSeconds": 300},
        ],
        "ttl_seconds_after_finished": 3600,
        "image_pull_policy": "IfNotPresent",
        "python": "/opt/venv/bin/python",
        "grace_period": 45.0,
    }
    attempt = request(
        env={"REGION": "eu-west"},
        secret_env={"API_TOKEN": SecretEnv("API_TOKEN", "s3cr3t-value")},
        resources=AttemptResources(cpu=1.5, memory=2 * 2**30, gpu=1),
        timeout=90.5,
    )
    async with make_executor(**options) as executor:
        handle = await executor.start(attempt)
    [sent] = fake_api.requests_to("POST", f"/namespaces/{NAMESPACE}/jobs")
    job = sent.body
    assert "s3cr3t-value" not in json.dumps(job)  # secrets by reference only
    assert handle.ref == job["metadata"]["name"] == job_name(attempt)
    assert handle.key == attempt.key
    labels = {
        "tideflow.dev/flow": "nightly",
        "tideflow.dev/job": "succeeds",
        "tideflow.dev/run": "7",
        "tideflow.dev/attempt": "1",
        "app.kubernetes.io/managed-by": "tideflow",
    }
    assert job["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"] == {"tideflow.dev/key": attempt.key}
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 91
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "nightly-jobs"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == options["tolerations"]
    assert pod["terminationGracePeriodSeconds"] == 45
    [container] = pod["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == [
        "/opt/venv/bin/python",
        "-m",
        "tideflow.runtime.job_worker",
        "--once",
        "env:TIDEFLOW_ATTEMPT",
        "--termination-log",
        "/dev/termination-log",
    ]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    amounts = {"cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "1"}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    env = {e["name"]: e for e in container["env"]}
    assert env["REGION"] == {"name": "REGION", "value": "eu-west"}
    assert env["API_TOKEN"] == {
        "name": "API_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "API_TOKEN"}},
    }
    shipped = AttemptRequest.from_json(env["TIDEFLOW_ATTEMPT"]["value"])
    assert shipped.secret_env == {"API_TOKEN": SecretEnv("API_TOKEN", None)}
    assert shipped.key == attempt.key and shipped.timeout == 90.5
    # the API server's copy is what was sent (nothing dropped on the way)
    stored = fake_api.job(handle.ref, namespace=NAMESPACE)
    assert stored["spec"]["template"]["spec"]["tolerations"] == options["tolerations"]


async def test_a_job_without_resources_or_timeout_leaves_them_to_the_cluster(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """Against the local fake API server (no real one can run here)."""
    fake_api.run_pods = False
    await executor.start(request())
    [sent] = fake_api.requests_to("POST", "/jobs")
    [container] = sent.body["spec"]["template"]["spec"]["containers"]
    assert "resources" not in container
    assert "activeDeadlineSeconds" not in sent.body["spec"]
    assert sent.body["spec"]["ttlSecondsAfterFinished"] == 86400
    assert "serviceAccountName" not in sent.body["spec"]["template"]["spec"]


async def test_a_secret_without_secret_name_is_refused_before_any_job(
    make_executor: Maker, fake_api: Any
) -> None:
    """Against the local fake API server (no real one can run here)."""
    async with make_executor(secret_name=None) as executor:
        with pytest.raises(BackendError, match=r'secret\("API_TOKEN"\).*`secret_name`'):
            await executor.start(
                request(secret_env={"API_TOKEN": SecretEnv("API_TOKEN", "s3cr3t-value")})
            )
    assert fake_api.requests_to("POST") == []


async def test_a_create_tried_again_adopts_its_own_job(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """A create whose answer was lost finds its Job (409) and takes it; a Job of that
    name for another attempt is an error. Against the local fake API server."""
    fake_api.run_pods = False
    attempt = request()
    first = await executor.start(attempt)
    again = await executor.start(attempt)
    assert again == first
    assert fake_api.job_names(namespace=NAMESPACE) == [first.ref]


# --- running attempts ---------------------------------------------------------------------


async def test_a_python_job_succeeds_with_its_log_and_records(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """The pod runs as a local process of the fake API server (no real cluster can
    run here); its log is read back through the pods/log endpoint."""
    handle = await executor.start(request(params={"size": 3}))
    result = await _wait(executor, handle)
    assert result.status == "success", result
    assert result.exit_code == 0
    assert "out: params=[('size', 3)] attempt=1" in result.stdout
    assert "err: a line on stderr" in result.stdout  # the pod's log mixes both streams
    assert [(level, message) for _, level, message in result.logs] == [
        ("INFO", "an info record from succeeds"),
        ("WARNING", "a warning record"),
    ]
    assert "a warning record" not in result.stdout
    assert result.where is not None
    assert result.where.startswith(f"pod {NAMESPACE}/{handle.ref}-")
    assert result.where.endswith(" on node fake-node")
    # collected: the Job is deleted with its pod
    assert fake_api.job_names(namespace=NAMESPACE) == []
    [delete] = fake_api.requests_to("DELETE", f"/jobs/{handle.ref}")
    assert delete.body["propagationPolicy"] == "Background"


async def test_a_python_failure_reads_the_error_from_the_termination_message(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """The runner's summary reaches the executor as the container's terminated
    `message` (the fake reads the file the container was told to write; no real
    cluster can run here)."""
    handle = await executor.start(request("fails", params={"why": "bad input"}))
    pid_seen: list[Any] = []

    def ended() -> bool:
        pods = fake_api.pods_of(handle.ref, namespace=NAMESPACE)
        pid_seen[:] = [p.state.get("terminated") for p in pods]
        return bool(pods) and "terminated" in pods[0].state

    await asyncio.to_thread(_until, ended, "the failing pod's end")
    [terminated] = pid_seen
    summary = json.loads(terminated["message"])
    assert summary["ok"] is False and summary["error"][0] == "ValueError"
    result = await _wait(executor, handle)
    assert result.status == "failed", result
    assert result.exit_code == 1
    assert result.error is not None
    assert result.error.type == "ValueError"
    assert result.error.message == "bad input"
    assert result.error.function == "tideflow.testing.executor_jobs._raise_value_error"
    assert "raise ValueError(why)" in result.error.traceback
    assert result.error.location is not None and "executor_jobs.py" in result.error.location
    assert "about to fail" in result.stdout


async def test_a_command_job_and_its_exit_code(executor: KubernetesExecutor) -> None:
    """Against the local fake API server, whose pods are local processes."""
    handle = await executor.start(
        request("report", command=("sh", "-c", "echo to-out; echo to-err >&2; exit 3"))
    )
    result = await _wait(executor, handle)
    assert result.status == "failed", result
    assert result.exit_code == 3
    assert "to-out" in result.stdout and "to-err" in result.stdout
    assert result.error is not None and "exited with code 3" in result.error.message


async def test_env_and_secrets_reach_the_pod(executor: KubernetesExecutor) -> None:
    """The secret's value comes from the Secret (created in the local fake API
    server: no real one can run here), never from the request."""
    handle = await executor.start(
        request(
            "prints_env",
            params={"expect": {"REGION": "eu-west", "API_TOKEN": "s3cr3t-value"}},
            env={"REGION": "eu-west"},
            secret_env={"API_TOKEN": SecretEnv("API_TOKEN", None)},
        )
    )
    result = await _wait(executor, handle)
    assert result.status == "success", result
    assert "REGION: match" in result.stdout
    assert "API_TOKEN: match" in result.stdout


async def test_the_deadline_ends_the_attempt_as_a_timeout(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """`activeDeadlineSeconds` is enforced by the local fake API server's Job
    controller (no real one can run here): the Job fails with DeadlineExceeded and
    the pod's processes are killed."""
    handle = await executor.start(request("sleeps", timeout=2.0))
    # the pod's process leads its own process group (the job's child `sleep` too)
    group = await asyncio.to_thread(
        fake_api.wait_for_pod_process, handle.ref, namespace=NAMESPACE, timeout=HANG_LIMIT
    )
    result = await _wait(executor, handle)
    assert result.status == "timeout", result
    assert result.error is not None and "activeDeadlineSeconds (2s)" in result.error.message
    await asyncio.to_thread(_until, lambda: not _group_members(group), "the killed processes")


async def test_cancel_deletes_the_job_and_kills_the_processes(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """Deleting the Job (Foreground) makes the local fake API server kill the pod's
    process group (no real cluster can run here); `wait` says cancelled."""
    handle = await executor.start(request("sleeps"))
    pid, child = await asyncio.to_thread(_printed_pids, fake_api, handle.ref)
    processes = [(pid, _started_at(pid)), (child, _started_at(child))]
    await executor.cancel(handle, grace=1.0)
    result = await _wait(executor, handle)
    assert result.status == "cancelled", result
    assert f"pid={pid} child={child}" in result.stdout
    assert fake_api.job_names(namespace=NAMESPACE) == []
    [delete] = fake_api.requests_to("DELETE", f"/jobs/{handle.ref}")
    assert delete.body["propagationPolicy"] == "Foreground"
    await asyncio.to_thread(_until, lambda: all(map(_gone, processes)), "the killed processes")
    assert await executor.attempts() == []


async def test_a_new_instance_reattaches_by_label(make_executor: Maker, fake_api: Any) -> None:
    """A restarted orchestrator lists the running Job by its managed-by label and
    collects its real outcome. Against the local fake API server (no real one can
    run here)."""
    first = make_executor()
    started = await first.start(request("sleeps", params={"seconds": 1}))
    await first.aclose()
    async with make_executor() as second:
        [found] = await second.attempts()
        assert found.ref == started.ref and found.key == started.key
        result = await _wait(second, found)
        assert result.status == "success", result
        assert await second.attempts() == []
    listings = [r.path for r in fake_api.requests if f"/namespaces/{NAMESPACE}/jobs?" in r.path]
    assert listings
    assert all(
        "labelSelector=app.kubernetes.io/managed-by=tideflow" in unquote(p) for p in listings
    )


async def test_a_deleted_pod_makes_the_attempt_lost(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """The pod disappears (drained node, someone's `kubectl delete pod`): the local
    fake API server's Job controller fails the Job, and the attempt is `lost`."""
    handle = await executor.start(request("sleeps"))
    await asyncio.to_thread(_printed_pids, fake_api, handle.ref)
    [pod] = fake_api.pods_of(handle.ref, namespace=NAMESPACE)
    fake_api.delete_pod(pod.name, namespace=NAMESPACE)
    result = await _wait(executor, handle)
    assert result.status == "lost", result
    assert result.error is not None
    assert result.error.type == "tideflow.plugins.kubernetes_executor.PodLost"
    assert "its pod was deleted" in result.error.message


async def test_an_evicted_pod_makes_the_attempt_lost(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """Eviction as a kubelet under memory pressure does it, in the local fake API
    server (no real cluster can run here)."""
    handle = await executor.start(request("sleeps"))
    await asyncio.to_thread(_printed_pids, fake_api, handle.ref)
    [pod] = fake_api.pods_of(handle.ref, namespace=NAMESPACE)
    fake_api.evict_pod(pod.name, namespace=NAMESPACE)
    result = await _wait(executor, handle)
    assert result.status == "lost", result
    assert result.error is not None and "Evicted" in result.error.message


async def test_a_job_deleted_by_someone_else_is_lost(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """Against the local fake API server (no real one can run here)."""
    handle = await executor.start(request("sleeps"))
    await asyncio.to_thread(_printed_pids, fake_api, handle.ref)
    fake_api._delete_job(
        fake_api._jobs[(NAMESPACE, handle.ref)], {"propagationPolicy": "Background"}, {}
    )
    result = await _wait(executor, handle)
    assert result.status == "lost", result


async def test_a_pod_that_cannot_start_fails_the_attempt_with_the_reason(
    make_executor: Maker, fake_api: Any
) -> None:
    """A key missing from the Secret leaves the container waiting
    (CreateContainerConfigError, as the local fake API server's kubelet reports it:
    no real cluster can run here); past `start_timeout` the attempt fails with the
    kubelet's message and its Job is deleted."""
    async with make_executor(start_timeout=1.0) as executor:
        handle = await executor.start(
            request(secret_env={"API_TOKEN": SecretEnv("NOT_IN_THE_SECRET")})
        )
        result = await _wait(executor, handle)
    assert result.status == "failed", result
    assert result.error is not None
    assert result.error.type == "tideflow.plugins.kubernetes_executor.PodNotStarted"
    assert result.error.message == (
        "the attempt's pod did not start within 1s (start_timeout): "
        "CreateContainerConfigError: couldn't find key NOT_IN_THE_SECRET in Secret "
        f"{NAMESPACE}/{SECRET}"
    )
    assert fake_api.job_names(namespace=NAMESPACE) == []


async def test_a_pod_that_started_is_never_late(make_executor: Maker, fake_api: Any) -> None:
    """Once the Job counts a ready pod, its age does not matter. Against the local
    fake API server (no real one can run here)."""
    async with make_executor(start_timeout=0.2) as executor:
        handle = await executor.start(request("sleeps", params={"seconds": 1.5}))
        await asyncio.to_thread(
            fake_api.wait_for_pod_process, handle.ref, namespace=NAMESPACE, timeout=HANG_LIMIT
        )
        result = await _wait(executor, handle)
    assert result.status == "success", result


# --- the API refusing -----------------------------------------------------------------------


async def test_a_forbidden_list_fails_the_wait_naming_the_role(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """RBAC as the local fake API server applies it (no real one can run here)."""
    fake_api.run_pods = False
    handle = await executor.start(request())
    fake_api.deny("list", "jobs")
    with pytest.raises(
        KubernetesAccessError, match=r'forbidden to list jobs in namespace "batch-jobs"'
    ):
        await _wait(executor, handle)


async def test_an_api_outage_while_waiting_does_not_end_the_attempt(
    executor: KubernetesExecutor, fake_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every read answers 503 for a while (the local fake API server injects it; no
    real one can run here): the attempt is still followed to its real end, and the
    outage is logged once."""
    handle = await executor.start(request("sleeps", params={"seconds": 1}))
    fake_api.fail_next(503, count=16, method="GET")
    result = await _wait(executor, handle)
    assert result.status == "success", result
    outage = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(outage) == 1, [r.getMessage() for r in outage]


async def test_a_quota_refusing_the_job_is_not_blamed_on_the_role(
    executor: KubernetesExecutor, fake_api: Any
) -> None:
    """A ResourceQuota's refusal is a 403 too (the local fake API server answers as
    the quota admission plugin does; no real one can run here)."""
    said = (
        'jobs.batch "x" is forbidden: exceeded quota: batch-quota, requested: count/jobs.batch=1, '
        "used: count/jobs.batch=20, limited: count/jobs.batch=20"
    )
    fake_api.fail_next(403, method="POST", message=said)
    with pytest.raises(BackendError) as refused:
        await executor.start(request())
    assert not isinstance(refused.value, KubernetesAccessError)
    assert str(refused.value) == (
        f'a ResourceQuota in namespace "{NAMESPACE}" refused to create jobs: {said}'
    )


async def test_the_documented_role_is_enough(executor: KubernetesExecutor, fake_api: Any) -> None:
    """Every call the executor makes is allowed by the Role in docs/kubernetes.md
    (enforced by the local fake API server; no real one can run here)."""
    role = next(
        d
        for d in yaml.safe_load_all(_yaml_blocks(DOC))
        if d and d.get("kind") == "Role" and d["metadata"]["name"] == "tideflow-executor"
    )
    grants = {
        (verb, resource)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    fake_api.allow_only(grants)
    ok = await executor.start(request())
    sleeper = await executor.start(request("sleeps"))
    assert {h.ref for h in await executor.attempts()} == {ok.ref, sleeper.ref}
    assert (await _wait(executor, ok)).status == "success"
    await asyncio.to_thread(_printed_pids, fake_api, sleeper.ref)
    await executor.cancel(sleeper, grace=1.0)
    assert (await _wait(executor, sleeper)).status == "cancelled"
    refused = [r for r in fake_api.requests if r.status == 403]
    assert refused == []


def _yaml_blocks(path: Path) -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)
    return "\n---\n".join(blocks)


def _doc_flow() -> str:
    """The page's flow example of the executor (the one with an `executor` block)."""
    blocks = re.findall(r"^```flow\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)
    (found,) = [b for b in blocks if 'kind            = "kubernetes"' in b]
    return str(found)


def test_the_documented_job_is_the_one_the_executor_makes() -> None:
    """The page's flow compiles, and the Job the page shows for it is what
    `job_manifest` gives (the request's JSON aside). Pure: no API server."""
    result = compile_source('flow "shop" {\n  timezone = "UTC"\n}\n' + _doc_flow(), "shop.flow")
    assert result.diagnostics == (), result.diagnostics
    assert result.ir is not None
    block = result.ir.executors["k8s"]
    assert block.kind == "kubernetes"
    job = result.ir.jobs["train"]
    assert job.resources is not None
    attempt = AttemptRequest(
        key="shop/train/412/1",
        flow="shop",
        job="train",
        job_run_id=412,
        attempt=1,
        target=job.run,
        env={"REGION": "eu-west"},
        secret_env={"API_TOKEN": SecretEnv("API_TOKEN")},
        resources=AttemptResources(
            cpu=job.resources.cpu, memory=job.resources.memory, gpu=job.resources.gpu
        ),
        timeout=job.timeout,
        labels={"flow": "shop", "job": "train", "run": "412", "attempt": "1"},
    )
    made = job_manifest(attempt, job_name(attempt), KubernetesExecutor.with_defaults(block.options))
    documented = next(
        d for d in yaml.safe_load_all(_yaml_blocks(DOC)) if d and d.get("kind") == "Job"
    )

    def without_request(manifest: dict[str, Any]) -> dict[str, Any]:
        [container] = manifest["spec"]["template"]["spec"]["containers"]
        container["env"] = [e for e in container["env"] if e["name"] != "TIDEFLOW_ATTEMPT"]
        return manifest

    assert without_request(documented) == without_request(made)


# --- the contract -------------------------------------------------------------------------


class TestContract(ExecutorContract):
    """The executor contract, against the local fake API server (no real one can
    run here), whose pods are local processes."""

    @pytest.fixture
    def tideflow_contract_timeout(self) -> float:
        return HANG_LIMIT

    @pytest.fixture
    def tideflow_executor_factory(self, make_executor: Maker) -> ExecutorFactory:
        return make_executor
