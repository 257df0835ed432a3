"""`tideflow worker FILE CONSUMER` as a real process: configuration problems and their
exit statuses, SIGTERM mid-batch (drain, exit 0, nothing lost), a SIGTERM again
(still draining) and a SIGINT while draining (exit at once),
SIGKILL mid-batch (another instance gets the messages), and its rows in the state
store. The handler is a module written next to the flow file; it records `start ID`
and `done ID` lines in a file per instance."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.ir import FlowIR
from tideflow.plugins.api import OutgoingMessage
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.model import InstanceStatus
from tideflow.runtime.store import Store

pytestmark = pytest.mark.integration

HANDLERS = """\
import os
import time


def record(ctx, line):
    with open(os.path.join(ctx.params["out"], ctx.instance_id + ".log"), "a") as stream:
        stream.write(line + "\\n")


def handle(ctx, message):
    record(ctx, f"start {message.value['id']}")
    time.sleep(float(ctx.params["sleep"]))
    record(ctx, f"done {message.value['id']}")
"""

FLOW = """\
flow "shop" {{
}}

broker "main" {{
  kind               = "embedded"
  path               = "broker.db"
  visibility_timeout = 1s
}}

topic "orders" {{
  broker     = broker.main
  partitions = 2
}}

consumer "workers" {{
  consumes      = topic.orders
  run           = "{run}"
  batch_size    = 5
  max_in_flight = 5
  params        = {{ out = "{out}", sleep = {sleep} }}
{extra}
  scale {{
    max           = 2
    drain_timeout = {drain}
  }}
}}
"""


class Workspace:
    """A flow, its handler module and a state store in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.out = folder / "out"
        self.out.mkdir()
        self.state = f"sqlite:///{folder / 'state.db'}"
        (folder / "shop_worker_handlers.py").write_text(HANDLERS)
        self.flow_path = folder / "shop.flow"
        self.processes: list[subprocess.Popen[bytes]] = []

    def write_flow(
        self,
        *,
        sleep: float = 0.0,
        drain: str = "10s",
        run: str = "shop_worker_handlers:handle",
        extra: str = "",
    ) -> FlowIR:
        self.flow_path.write_text(
            FLOW.format(run=run, out=self.out, sleep=sleep, drain=drain, extra=extra)
        )
        result = compile_flow(self.flow_path)
        assert result.ir is not None, result.diagnostics
        return result.ir

    def worker(self, instance_id: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{instance_id}.stderr").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tideflow",
                "worker",
                str(self.flow_path),
                "workers",
                "--state",
                self.state,
                "--instance-id",
                instance_id,
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        log.close()
        self.processes.append(process)
        return process

    def output(self, instance_id: str) -> str:
        return (self.folder / f"{instance_id}.stderr").read_text()

    def lines(self, instance_id: str, kind: str) -> list[int]:
        path = self.out / f"{instance_id}.log"
        if not path.exists():
            return []
        found = [line.split() for line in path.read_text().splitlines()]
        return [int(number) for word, number in found if word == kind]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    Store.open(workspace.state).close()  # migrated once, before instances start
    yield workspace
    for process in workspace.processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tideflow", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def publish(flow: FlowIR, count: int) -> None:
    async def main() -> None:
        async with open_topic_broker(flow, "orders") as broker:
            await broker.ensure_topic("orders", ["workers"])
            await broker.publish(
                "orders",
                [OutgoingMessage(encode_payload({"id": i}), str(i).encode()) for i in range(count)],
            )

    asyncio.run(main())


def backlog(flow: FlowIR) -> int:
    async def main() -> int:
        async with open_topic_broker(flow, "orders") as broker:
            return (await broker.backlog("orders", "workers")).total

    return asyncio.run(main())


# --- configuration problems -----------------------------------------------------------------


def test_an_unknown_consumer_is_a_usage_error_with_a_suggestion(work: Workspace) -> None:
    work.write_flow()
    result = run(["worker", str(work.flow_path), "wrokers"], work.folder)
    assert result.returncode == 2, result.stderr
    assert 'error: flow "shop"' in result.stderr
    assert "has no consumer `wrokers`; did you mean `workers`?" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_flow_file_is_a_usage_error(work: Workspace) -> None:
    result = run(["worker", str(work.folder / "nope.flow"), "workers"], work.folder)
    assert result.returncode == 2
    assert "nope.flow" in result.stderr


def test_a_handler_that_cannot_be_imported_is_a_configuration_problem(work: Workspace) -> None:
    work.write_flow(run="shop_worker_missing:handle")
    result = run(["worker", str(work.flow_path), "workers", "--state", work.state], work.folder)
    assert result.returncode == 1, result.stderr
    assert (
        'error: cannot load the handler of consumer "workers": cannot import '
        "`shop_worker_missing:handle`: ModuleNotFoundError"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unset_environment_variable_is_a_configuration_problem(work: Workspace) -> None:
    work.write_flow(extra='  env           = { API_KEY = secret("TF_TEST_UNSET_SECRET") }')
    result = run(["worker", str(work.flow_path), "workers", "--state", work.state], work.folder)
    assert result.returncode == 1, result.stderr
    assert "environment variable `TF_TEST_UNSET_SECRET` is not set" in result.stderr


# --- signals --------------------------------------------------------------------------------


def test_sigterm_mid_batch_drains_acknowledges_and_exits_0(work: Workspace) -> None:
    flow = work.write_flow(sleep=0.3)
    publish(flow, 40)
    worker = work.worker("w-term")
    wait_for(lambda: len(work.lines("w-term", "start")) >= 3, what="handlers started")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0, work.output("w-term")

    started, done = work.lines("w-term", "start"), work.lines("w-term", "done")
    assert sorted(started) == sorted(done), "what was in flight was finished"
    assert 0 < len(done) < 40
    assert backlog(flow) == 40 - len(done), "and acknowledged, and nothing else taken"
    output = work.output("w-term")
    assert "draining (received SIGTERM)" in output
    assert f"stopped: {len(done)} handled, 0 failed, 0 dead-lettered" in output

    with Store.open(work.state) as store:
        (row,) = store.instances(consumer="workers")
    assert row.id == "w-term"
    assert row.pid == worker.pid
    assert row.stats.status is InstanceStatus.STOPPED
    assert row.stats.handled == len(done)

    # the rest, by another instance: nothing lost, nothing handled twice
    rest = work.worker("w-rest")
    wait_for(lambda: len(work.lines("w-rest", "done")) == 40 - len(done), what="the rest")
    rest.send_signal(signal.SIGINT)
    assert rest.wait(15) == 0
    assert sorted(done + work.lines("w-rest", "done")) == list(range(40))


def test_sigint_while_draining_exits_at_once(work: Workspace) -> None:
    flow = work.write_flow(sleep=60, drain="60s")
    publish(flow, 1)
    worker = work.worker("w-twice")
    wait_for(lambda: work.lines("w-twice", "start") == [0], what="the handler to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in work.output("w-twice"), what="draining")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(15) == 128 + signal.SIGINT
    assert "SIGINT while stopping, exiting at once" in work.output("w-twice")
    assert work.lines("w-twice", "done") == []


def test_a_repeated_sigterm_still_drains(work: Workspace) -> None:
    """Issue 11: one stop can deliver SIGTERM twice (to the process and to its
    group); the instance must drain, not exit at once."""
    flow = work.write_flow(sleep=5, drain="60s")
    publish(flow, 1)
    worker = work.worker("w-again")
    wait_for(lambda: work.lines("w-again", "start") == [0], what="the handler to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in work.output("w-again"), what="draining")
    worker.send_signal(signal.SIGTERM)  # the same stop, delivered a second time
    assert worker.wait(30) == 0, work.output("w-again")
    assert work.lines("w-again", "done") == [0], "what was in flight was finished"
    output = work.output("w-again")
    assert "draining (received SIGTERM)" in output
    assert "SIGTERM again, still draining" in output
    assert backlog(flow) == 0


def test_sigkill_mid_batch_loses_nothing(work: Workspace) -> None:
    flow = work.write_flow(sleep=0.2)
    publish(flow, 30)
    victim = work.worker("w-victim")
    wait_for(
        lambda: len(work.lines("w-victim", "start")) > len(work.lines("w-victim", "done")) >= 2,
        what="messages in flight",
    )
    victim.kill()
    victim.wait(10)
    unfinished = set(work.lines("w-victim", "start")) - set(work.lines("w-victim", "done"))
    assert unfinished

    heir = work.worker("w-heir")
    wait_for(lambda: backlog(flow) == 0, timeout=30, what="the backlog to drain")
    heir.send_signal(signal.SIGTERM)
    assert heir.wait(15) == 0
    taken_over = work.lines("w-heir", "done")
    assert unfinished <= set(taken_over), "what the killed instance held was delivered again"
    assert set(work.lines("w-victim", "done")) | set(taken_over) == set(range(30))
