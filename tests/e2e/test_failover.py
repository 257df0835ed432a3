"""Failover, as users run it: several `tideflow run` processes on one flow and one real
PostgreSQL store (127.0.0.1:5432, a schema per test). One leads through the lease,
the others stand by; the leader is SIGKILLed, frozen (SIGSTOP past its lease, then
SIGCONT), cut off from the store (through a TCP proxy the test cuts) or stopped
with SIGTERM, and the run history must show every schedule instant fired once.

The lease is 2 s and renewed every 0.5 s, to keep the file fast. Every wait is for
a condition; HANG only bounds a hang. The bounds asserted on takeover times are the
issue's (lease + 1 s after a SIGKILL); the SIGTERM hand-over is asserted under a
bound generous for a loaded machine and its figure is recorded (the target, 1 s,
is reported by bench/failover_bench.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from tideflow.compiler import compile_flow
from tideflow.plugins.api import OutgoingMessage
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.store import LeaseState, Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIDEFLOW = [sys.executable, "-m", "tideflow"]
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"
LEASE, RENEW = 2.0, 0.5
HANG = 60.0

JOBS = """\
import os
import time


def tick(ctx):
    pass


def handle(ctx, message):
    time.sleep(0.01)
    path = os.path.join(ctx.params["out"], f"{os.getpid()}.ids")
    with open(path, "a") as stream:
        stream.write(f"{message.value['id']}\\n")
"""

TICK_FLOW = """\
flow "demo" { timezone = "UTC" }

job "tick" {
  schedule = every(1s)
  catch_up = all
  overlap  = allow
  run      = "failover_jobs:tick"
}
"""

CONSUMER_FLOW = """\
flow "demo" { timezone = "UTC" }

broker "main" {
  kind               = "embedded"
  path               = "broker.db"
  visibility_timeout = 2s
}

topic "orders" {
  broker     = broker.main
  partitions = 2
}

consumer "workers" {
  consumes      = topic.orders
  run           = "failover_jobs:handle"
  batch_size    = 1
  max_in_flight = 1
  params        = { out = "@OUT@" }
  scale {
    backend          = "local"
    min              = 1
    max              = 2
    lag_per_instance = 50
    poll             = 500ms
    drain_timeout    = 2s
    restart_backoff  = 200ms
  }
}
"""


def until(condition: Callable[[], object], what: str, timeout: float = HANG) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def _postgres_reachable() -> str | None:
    try:
        engine = sa.create_engine(POSTGRES.format(port=5432), connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return str(exc).splitlines()[0]
    return None


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut: its connections are closed and
    its port refuses new ones, as when a network link to the database fails."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.cut_off:
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            self.listener.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


class Member:
    """One `tideflow run` process, its output in a file."""

    def __init__(self, root: Path, flow: Path, state: str, name: str) -> None:
        self.log_path = root / f"{name}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                *TIDEFLOW,
                "run",
                str(flow),
                "--no-live",
                "--grace",
                "3s",
                "--lease",
                f"{LEASE:g}s",
                "--renew",
                f"{RENEW:g}s",
            ],
            cwd=root,
            env={**os.environ, "TIDEFLOW_STATE": state},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def roles(self) -> list[tuple[str, float]]:
        """(role, epoch time) of each role line printed, in order."""
        return [
            (m.group(1), datetime.fromisoformat(m.group(2)).timestamp())
            for m in re.finditer(r": (leader|standby) .*, since (\S+)$", self.output, re.M)
        ]

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()


class Cluster:
    def __init__(self, root: Path, schema: str) -> None:
        self.root = root
        self.schema = schema
        self.state = self.url(5432)
        self.members: list[Member] = []
        self.flow = root / "demo.flow"
        (root / "failover_jobs.py").write_text(JOBS)
        self.flow.write_text(TICK_FLOW)
        self.store = Store.open(self.state)  # created before anyone polls it

    def url(self, port: int) -> str:
        return f"{POSTGRES.format(port=port)}?options=-csearch_path%3D{self.schema}"

    def start(self, count: int = 1, state: str | None = None) -> list[Member]:
        started = [
            Member(self.root, self.flow, state or self.state, f"m{len(self.members) + i}")
            for i in range(count)
        ]
        self.members += started
        return started

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDEFLOW, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=HANG,
            env={**os.environ, "TIDEFLOW_STATE": self.state},
        )

    def lease(self) -> LeaseState | None:
        return self.store.lease("demo")

    def leader(self) -> Member | None:
        """The member holding a live lease, once it says so."""
        lease = self.lease()
        if lease is None or not lease.led:
            return None
        pids = {o.id: o.pid for o in self.store.orchestrators(stale_after=60, limit=100)}
        pid = pids.get(lease.holder) if lease.holder is not None else None
        return next((m for m in self.members if m.pid == pid), None)

    def standing_by(self, count: int) -> bool:
        return sum(1 for m in self.members if m.roles() and m.roles()[-1][0] == "standby") >= count

    def instants(self) -> list[int]:
        return [
            int(r.scheduled_at.timestamp())
            for r in self.store.job_runs(flow="demo", job="tick", limit=None)
            if r.scheduled_at is not None
        ]

    def ticks(self) -> int:
        return len(self.instants())

    def assert_each_instant_once(self) -> list[int]:
        instants = self.instants()
        twice = sorted(i for i, n in Counter(instants).items() if n > 1)
        assert not twice, f"instants fired twice: {twice}"
        seconds = sorted(instants)
        missing = sorted(set(range(seconds[0], seconds[-1] + 1)) - set(seconds))
        assert not missing, f"instants never fired: {missing}"
        return seconds

    def close(self) -> None:
        for member in self.members:
            member.close()
        self.store.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    problem = _postgres_reachable()
    if problem:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {problem}")
    schema = f"tf_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES.format(port=5432))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    made = Cluster(tmp_path, schema)
    try:
        yield made
    finally:
        made.close()
        for pid in worker_pids(made.flow):  # whatever a failed test left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def mid_second() -> None:
    """Until the middle of a second: instants fire on whole seconds, so a signal sent
    now never falls between recording an instant and starting its run."""
    until(lambda: 0.4 < time.time() % 1 < 0.6, "the middle of a second", 5)


def settled(cluster: Cluster, standbys: int) -> Member:
    """Wait for one leader that has fired a few instants and `standbys` standbys."""
    until(cluster.leader, "a leader")
    until(lambda: cluster.standing_by(standbys), f"{standbys} standby(s)")
    start = cluster.ticks()
    until(lambda: cluster.ticks() >= start + 2, "two ticks by the leader")
    leader = cluster.leader()
    assert leader is not None
    return leader


def new_leader(cluster: Cluster, old: Member) -> Member:
    def other() -> Member | None:
        found = cluster.leader()
        return found if found is not None and found is not old else None

    until(other, "a standby to take over")
    found = other()
    assert found is not None
    return found


@pytest.mark.parametrize("members", [2, 3])
def test_a_standby_takes_over_a_killed_leader_within_the_lease(
    cluster: Cluster, members: int, record_property: Callable[[str, object], None]
) -> None:
    cluster.start(members)
    leader = settled(cluster, members - 1)
    takeovers: list[float] = []
    for _ in range(members - 1):  # kill each leader in turn, down to the last member
        mid_second()
        killed_at = time.time()
        leader.process.kill()
        successor = new_leader(cluster, leader)
        lease = cluster.lease()
        assert lease is not None
        takeovers.append(lease.acquired_at - killed_at)
        assert lease.acquired_at - killed_at <= LEASE + 1.0, f"took over after {takeovers[-1]}"
        start = cluster.ticks()
        until(lambda: cluster.ticks() >= start + 3, "ticks by the new leader")  # noqa: B023
        leader = successor
    seconds = cluster.assert_each_instant_once()
    assert len(seconds) >= 5
    record_property("takeover_seconds", [round(t, 3) for t in takeovers])


def test_a_frozen_leader_wakes_deposed_and_fires_nothing(cluster: Cluster) -> None:
    cluster.start(2)
    old = settled(cluster, 1)
    old_id = next(o.id for o in cluster.store.orchestrators(stale_after=60) if o.pid == old.pid)
    mid_second()
    old.process.send_signal(signal.SIGSTOP)
    successor = new_leader(cluster, old)
    lease = cluster.lease()
    assert lease is not None and lease.previous_holder == old_id
    took_over = lease.acquired_at
    start = cluster.ticks()
    until(lambda: cluster.ticks() >= start + 2, "ticks by the new leader")
    cluster.store.request_trigger("demo", "tick", requested_by="test")

    old.process.send_signal(signal.SIGCONT)
    until(lambda: old.roles()[-1][0] == "standby", "the old leader to step down")
    start = cluster.ticks()
    until(lambda: cluster.ticks() >= start + 2, "more ticks by the new leader")
    assert cluster.leader() is successor

    # nothing the old leader did after the takeover: no attempt, no trigger taken
    since = sa.text(
        "SELECT count(*) FROM attempts WHERE orchestrator_id = :o "
        "AND started_at >= to_timestamp(:t)"
    )
    claimed = sa.text("SELECT count(*) FROM trigger_requests WHERE claimed_by = :o")
    with cluster.store.engine.connect() as conn:
        assert conn.execute(since, {"o": old_id, "t": took_over}).scalar() == 0
        assert conn.execute(claimed, {"o": old_id}).scalar() == 0
    cluster.assert_each_instant_once()
    assert "Traceback" not in old.output, old.output


def test_a_leader_cut_off_from_the_store_stops_before_its_lease_ends(cluster: Cluster) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    (cut_off,) = cluster.start(1, state=cluster.url(proxy.port))
    until(lambda: cluster.leader() is cut_off, "the proxied member to lead")
    cluster.start(1)
    settled(cluster, 1)
    mid_second()
    proxy.cut()
    until(lambda: cut_off.roles()[-1][0] == "standby", "the cut-off leader to step down")
    stepped_down = cut_off.roles()[-1][1]
    new_leader(cluster, cut_off)
    lease = cluster.lease()
    assert lease is not None and lease.previous_expires_at is not None
    # its lease, as the database had it when it was cut off, ended after it stopped
    assert stepped_down < lease.previous_expires_at, (stepped_down, lease.previous_expires_at)
    start = cluster.ticks()
    until(lambda: cluster.ticks() >= start + 2, "ticks by the new leader")
    cluster.assert_each_instant_once()
    # stopped while its store is still unreachable: a clean exit, not a crash
    cut_off.process.send_signal(signal.SIGTERM)
    assert cut_off.process.wait(HANG) == 0, cut_off.output
    assert "internal error" not in cut_off.output and "Traceback" not in cut_off.output


def test_sigterm_hands_over_at_once(
    cluster: Cluster, record_property: Callable[[str, object], None]
) -> None:
    cluster.start(2)
    leader = settled(cluster, 1)
    status = cluster.cli("status", str(cluster.flow))
    assert status.returncode == 0, status.stderr
    assert "running (leader: orchestrator" in status.stdout
    assert "standing by: orchestrator" in status.stdout
    mid_second()
    leader.process.send_signal(signal.SIGTERM)
    new_leader(cluster, leader)
    lease = cluster.lease()
    assert lease is not None and lease.previous_expires_at is not None
    handover = lease.acquired_at - lease.previous_expires_at  # release to takeover
    record_property("handover_seconds", round(handover, 3))
    # the target is 1 s (bench/failover_bench.py reports it); a loaded machine may be slow
    assert handover < LEASE, f"the hand-over took {handover:.3f}s: as long as the lease"
    assert leader.process.wait(HANG) == 0, leader.output
    start = cluster.ticks()
    until(lambda: cluster.ticks() >= start + 2, "ticks by the new leader")
    cluster.assert_each_instant_once()


def worker_pids(flow: Path) -> set[int]:
    """Live `tideflow worker FILE ...` processes of this flow file."""
    wanted = str(flow)
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        words = [part.decode(errors="replace") for part in argv]
        if "worker" in words and wanted in words and state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


def handled(out: Path) -> Counter[int]:
    counts: Counter[int] = Counter()
    for path in out.glob("*.ids"):
        counts.update(int(line) for line in path.read_text().splitlines() if line)
    return counts


def test_a_scaled_consumer_keeps_draining_across_a_failover(cluster: Cluster) -> None:
    out = cluster.root / "out"
    out.mkdir()
    cluster.flow.write_text(CONSUMER_FLOW.replace("@OUT@", str(out)))
    result = compile_flow(cluster.flow)
    assert result.ir is not None, result.diagnostics
    cluster.start(2)
    until(cluster.leader, "a leader")
    until(lambda: cluster.standing_by(1), "a standby")
    leader = cluster.leader()
    assert leader is not None
    until(lambda: worker_pids(cluster.flow) & children(leader.pid), "the leader's instance")
    count = 400

    async def publish() -> None:
        async with open_topic_broker(result.ir, "orders") as broker:  # type: ignore[arg-type]
            await broker.publish(
                "orders", [OutgoingMessage(encode_payload({"id": i})) for i in range(count)]
            )

    asyncio.run(publish())
    until(lambda: len(handled(out)) >= count // 8, "an eighth handled")
    # the leader's host dies: the orchestrator and its instances at once
    instances = worker_pids(cluster.flow) & children(leader.pid)
    leader.process.kill()
    for pid in instances:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert len(handled(out)) < count, "the failover came after the drain"
    successor = new_leader(cluster, leader)
    until(lambda: worker_pids(cluster.flow) & children(successor.pid), "the new leader's instance")
    until(lambda: len(handled(out)) == count, "every message handled")
    assert set(handled(out)) == set(range(count)), "nothing lost"
