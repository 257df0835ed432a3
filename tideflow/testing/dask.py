"""A real dask.distributed cluster for tests: a `dask scheduler` and `dask worker`
processes from this environment's `dask` command, on loopback.

    from tideflow.testing.dask import dask_cluster  # noqa: F401

    async def test_runs_there(dask_cluster):
        executor = DaskExecutor({"scheduler": dask_cluster.address})

`dask_cluster` is one cluster per test session: a scheduler and three workers
(two threads each, behind a nanny that restarts a worker that dies), named
``cpu-1``, ``cpu-2`` and ``gpu``; only ``gpu`` declares a resource, ``GPU=1``.
Outside pytest, `running_dask_cluster()` is a context manager giving a started
`DaskCluster` with the workers asked for. The scheduler listens on a port of its
own choosing and tells it through its scheduler file, so no port is guessed.

Needs the `tideflow[dask]` extra (dask.distributed); imported on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import pytest

__all__ = [
    "DaskCluster",
    "DaskClusterError",
    "TlsFiles",
    "WorkerSpec",
    "dask_cluster",
    "running_dask_cluster",
]

#: Longest the scheduler and the workers may take to be up.
START_TIMEOUT: Final = 60.0
#: Longest a process may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 10.0


class DaskClusterError(RuntimeError):
    """The `dask` command is missing, or the cluster did not start."""


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate, and a certificate and key it signed, as PEM files."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def self_signed(cls, folder: Path) -> TlsFiles:
        """A self-signed certificate (its own CA) for every member of a test cluster,
        made with `openssl`."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / "cert.pem", folder / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                *("-subj", "/CN=dask-internal", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        return cls(cert, cert, key)

    def args(self) -> list[str]:
        return [
            "--tls-ca-file",
            str(self.ca),
            "--tls-cert",
            str(self.cert),
            "--tls-key",
            str(self.key),
        ]


@dataclass(frozen=True)
class WorkerSpec:
    """One `dask worker` process: its name, threads and declared resources."""

    name: str
    nthreads: int = 2
    resources: Mapping[str, float] = field(default_factory=dict)


DEFAULT_WORKERS: Final = (
    WorkerSpec("cpu-1"),
    WorkerSpec("cpu-2"),
    WorkerSpec("gpu", resources={"GPU": 1}),
)


def find_dask() -> Path:
    """The `dask` command of this environment (the `tideflow[dask]` extra)."""
    command = Path(sys.executable).parent / "dask"
    if command.is_file() and os.access(command, os.X_OK):
        return command
    raise DaskClusterError(
        'no `dask` command beside this Python; install it with `pip install "tideflow[dask]"`'
    )


class DaskCluster:
    """A `dask scheduler` and its `dask worker` processes, in a folder of their own."""

    def __init__(
        self,
        folder: Path,
        workers: Sequence[WorkerSpec] = DEFAULT_WORKERS,
        *,
        tls: TlsFiles | None = None,
    ) -> None:
        self.folder = folder
        self.specs = tuple(workers)
        self.tls = tls  # every member talks TLS, with these files
        self.command = find_dask()
        self.scheduler_file = folder / "scheduler.json"
        self.address = ""
        self._processes: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the scheduler and the workers; return once every worker has joined."""
        self.folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        self._spawn_scheduler(0)
        self.address = self._wait_address(deadline)
        for spec in self.specs:
            self._spawn_worker(spec)
        self.wait_for_workers(len(self.specs), timeout=max(deadline - time.monotonic(), 1.0))

    def _spawn_scheduler(self, port: int) -> None:
        argv = ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        argv += ["--scheduler-file", str(self.scheduler_file), *self._tls_args()]
        self._spawn("scheduler", argv, first=True)

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler: every client and worker loses it, with its state."""
        process, log = self._processes.pop(0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
        log.close()

    def restart_scheduler(self, timeout: float = START_TIMEOUT) -> None:
        """Kill the scheduler and start a new one (empty) at the same address. The
        workers do not come back: a Dask worker that loses its scheduler ends."""
        self.kill_scheduler()
        self.scheduler_file.unlink(missing_ok=True)
        self._spawn_scheduler(int(self.address.rpartition(":")[2]))
        self._wait_address(time.monotonic() + timeout)

    def _spawn_worker(self, spec: WorkerSpec, *, nanny: bool = True) -> None:
        argv = [
            "worker",
            "--scheduler-file",
            str(self.scheduler_file),
            "--name",
            spec.name,
            "--nthreads",
            str(spec.nthreads),
            "--no-dashboard",
            "--host",
            "127.0.0.1",
            "--local-directory",
            str(self.folder / spec.name),
        ]
        if spec.resources:
            declared = " ".join(f"{k}={v:g}" for k, v in spec.resources.items())
            argv += ["--resources", declared]
        if not nanny:
            argv.append("--no-nanny")
        argv += self._tls_args()
        self._spawn(f"worker-{spec.name}", argv)

    def add_worker(
        self, spec: WorkerSpec, *, nanny: bool = True, timeout: float = START_TIMEOUT
    ) -> str:
        """Start one more worker (not counted by `wait_for_workers`); returns its
        address once it has joined. Without a `nanny`, a worker killed stays dead."""
        self._spawn_worker(spec, nanny=nanny)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for address, worker in self.workers().items():
                if worker["name"] == spec.name:
                    return address
            time.sleep(0.05)  # polling for the worker to join
        raise DaskClusterError(
            f"worker {spec.name} did not join:\n{self.log_tail(f'worker-{spec.name}')}"
        )

    def _tls_args(self) -> list[str]:
        return ["--protocol", "tls", *self.tls.args()] if self.tls is not None else []

    def _spawn(self, name: str, argv: list[str], *, first: bool = False) -> None:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [str(self.command), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,  # the worker's nanny, worker and attempts end together
        )
        self._processes.insert(0 if first else len(self._processes), (process, log))

    def _wait_address(self, deadline: float) -> str:
        delay = 0.01
        while time.monotonic() < deadline:
            scheduler = self._processes[0][0]
            if scheduler.poll() is not None:
                raise DaskClusterError(
                    f"dask scheduler exited with status {scheduler.returncode}:\n"
                    f"{self.log_tail('scheduler')}"
                )
            with contextlib.suppress(OSError, ValueError):
                address = json.loads(self.scheduler_file.read_text())["address"]
                if isinstance(address, str) and address:
                    return address
            time.sleep(delay)  # polling for the file, with a growing interval
            delay = min(delay * 2, 0.2)
        raise DaskClusterError(f"dask scheduler did not start:\n{self.log_tail('scheduler')}")

    def client(self, timeout: float = 10.0) -> Any:
        """A synchronous `distributed.Client` to the scheduler (close it after use)."""
        import distributed

        dask: Any = distributed  # its Client is untyped
        security = None
        if self.tls is not None:
            security = dask.Security(
                tls_ca_file=str(self.tls.ca),
                tls_client_cert=str(self.tls.cert),
                tls_client_key=str(self.tls.key),
                require_encryption=True,
            )
        return dask.Client(self.address, timeout=timeout, set_as_default=False, security=security)

    def wait_for_workers(self, count: int | None = None, timeout: float = START_TIMEOUT) -> None:
        """Return once `count` workers (all of them by default) are in the cluster."""
        with self.client() as client:
            client.wait_for_workers(count or len(self.specs), timeout=timeout)

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers now in the cluster, by address: their name, resources and pid."""
        with self.client() as client:
            info = client.scheduler_info(n_workers=-1)["workers"]
            pids = client.run(os.getpid)
        return {
            address: {
                "name": str(worker.get("name")),
                "resources": dict(worker.get("resources") or {}),
                "pid": pids.get(address),
            }
            for address, worker in info.items()
        }

    def kill_worker(self, address: str) -> int:
        """SIGKILL the worker process at `address` (its nanny starts a new one);
        returns the pid killed."""
        pid = self.workers()[address]["pid"]
        os.kill(pid, signal.SIGKILL)
        return int(pid)

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.folder / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """End the workers, then the scheduler, and whatever they started."""
        for process, log in reversed(self._processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
            log.close()
        self._processes.clear()


@contextlib.contextmanager
def running_dask_cluster(
    workers: Sequence[WorkerSpec] = DEFAULT_WORKERS, *, tls: bool = False
) -> Iterator[DaskCluster]:
    """A started cluster in a temporary folder, stopped (and the folder removed) on
    exit; with `tls`, its members talk TLS with a self-signed certificate
    (`cluster.tls`)."""
    folder = Path(tempfile.mkdtemp(prefix="tideflow-dask-"))
    files = TlsFiles.self_signed(folder / "tls") if tls else None
    cluster = DaskCluster(folder, workers, tls=files)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[DaskCluster]:
    """A scheduler and three workers (`cpu-1`, `cpu-2`, and `gpu` with GPU=1) for the session."""
    with running_dask_cluster() as cluster:
        yield cluster
