"""The `local` scaler with real `tideflow worker` processes: the contract suite,
counts, which instances a scale-down stops and the drain they get, restarts with
backoff, crash loops, no orphans after `kill -9` of the orchestrator, and reaping
what a dead orchestrator left (and nothing else). Processes are found by scanning
/proc, without psutil."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler import compile_flow
from tideflow.compiler.ir import FlowIR
from tideflow.plugins.api import BackendConfigError, BackendContext, OutgoingMessage
from tideflow.plugins.local import LocalScaler
from tideflow.plugins.local.process import find_leftovers, process_start
from tideflow.plugins.local.protocol import PARENT_ENV
from tideflow.plugins.manager import load_plugins
from tideflow.runtime.backends import open_topic_broker
from tideflow.runtime.context import encode_payload
from tideflow.runtime.store import Store

from tideflow.testing import ScalerContract

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

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
  visibility_timeout = 2s
}}

topic "orders" {{
  broker     = broker.main
  partitions = 3
}}

consumer "workers" {{
  consumes      = topic.orders
  run           = "{run}"
  batch_size    = 1
  max_in_flight = 1
  params        = {{ out = "{out}", sleep = {sleep} }}
  scale {{
    backend          = "local"
    max              = 3
    drain_timeout    = {drain}
    restart_backoff  = {backoff}
    crash_loop_after = 3
{scale_extra}
  }}
}}
"""

PARENT = """\
import asyncio, json, sys
from pathlib import Path
from tideflow.compiler import compile_flow
from tideflow.plugins.api import BackendContext
from tideflow.plugins.local import LocalScaler


async def main():
    path, count = Path(sys.argv[1]), int(sys.argv[2])
    consumer = compile_flow(path).ir.consumers["workers"]
    scaler = LocalScaler(consumer.scale.options, consumer, context=BackendContext("workers", path))
    await scaler.scale(count)
    while scaler.health()["running"] < count:
        await asyncio.sleep(0.02)
    print(json.dumps([i["pid"] for i in scaler.health()["instances"]]), flush=True)
    await asyncio.sleep(3600)


asyncio.run(main())
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Workspace:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.out = folder / "out"
        self.out.mkdir()
        self.flow_path = folder / "shop.flow"
        (folder / "shop_scaled_handlers.py").write_text(HANDLERS)
        self.flow = self.write_flow()
        self.scalers: list[LocalScaler] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def write_flow(
        self,
        *,
        run: str = "shop_scaled_handlers:handle",
        sleep: float = 0.0,
        drain: str = "5s",
        backoff: str = "200ms",
        scale_extra: str = "",
    ) -> FlowIR:
        text = FLOW.format(
            run=run,
            out=self.out,
            sleep=sleep,
            drain=drain,
            backoff=backoff,
            scale_extra=scale_extra,
        )
        self.flow_path.write_text(text)
        result = compile_flow(self.flow_path)
        assert result.ir is not None, result.diagnostics
        self.flow = result.ir
        return result.ir

    def scaler(self, **tuning: Any) -> LocalScaler:
        consumer = self.flow.consumers["workers"]
        assert consumer.scale is not None
        scaler = LocalScaler(
            consumer.scale.options,
            consumer,
            context=BackendContext("workers", self.flow_path),
            **tuning,
        )
        self.scalers.append(scaler)
        return scaler

    def lines(self, instance_id: str, kind: str) -> list[int]:
        path = self.out / f"{instance_id}.log"
        if not path.exists():
            return []
        found = [line.split() for line in path.read_text().splitlines()]
        return [int(number) for word, number in found if word == kind]


@pytest.fixture
async def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Workspace]:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    Store.open(state).close()
    monkeypatch.setenv("TIDEFLOW_STATE", state)  # what the orchestrator sets
    workspace = Workspace(tmp_path)
    yield workspace
    for scaler in workspace.scalers:
        await scaler.aclose()
    for process in workspace.processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


# --- /proc ---------------------------------------------------------------------------------


def my_marker() -> str:
    return f"{os.getpid()}:{process_start(os.getpid())}"


def environ_of(pid: int) -> dict[str, str]:
    try:
        data = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(
        item.decode(errors="replace").split("=", 1) for item in data.split(b"\0") if b"=" in item
    )


def instances_started_by(marker: str) -> set[int]:
    """Live processes whose environment says `marker`'s process started them."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and process_start(int(entry.name)) is not None
            and environ_of(int(entry.name)).get(PARENT_ENV) == marker
        ):
            found.add(int(entry.name))
    return found


def gone(pid: int) -> bool:
    return process_start(pid) is None


async def until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


def exit_of(scaler: LocalScaler, pid: int) -> dict[str, Any] | None:
    """The scaler's record of the exit of `pid`, once it noticed it."""
    found = [e for e in scaler.health()["recent_exits"] if e["pid"] == pid]
    return found[-1] if found else None


def restarted(scaler: LocalScaler, old_pid: int) -> Callable[[], bool]:
    """Whether the scaler's only instance runs under another pid than `old_pid`."""
    return lambda: scaler.health()["instances"][0]["pid"] not in (None, old_pid)


def running_pids(scaler: LocalScaler) -> list[int]:
    return [i["pid"] for i in scaler.health()["instances"] if i["state"] == "running"]


async def publish(flow: FlowIR, ids: range) -> None:
    async with open_topic_broker(flow, "orders") as broker:
        await broker.ensure_topic("orders", ["workers"])
        await broker.publish(
            "orders",
            [OutgoingMessage(encode_payload({"id": i}), f"key-{i}".encode()) for i in ids],
        )


# --- registration, configuration, the contract ---------------------------------------------


def test_the_hook_registers_the_class() -> None:
    plugins = load_plugins(
        default_plugins=("tideflow.plugins.embedded", "tideflow.plugins.local"),
        environ={"TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert plugins.scaler_class("local") is LocalScaler
    assert [p.message for p in plugins.problems] == []


def test_the_flow_file_is_required(tmp_path: Path) -> None:
    flow = Workspace(tmp_path).flow
    consumer = flow.consumers["workers"]
    with pytest.raises(BackendConfigError, match="needs the flow file"):
        LocalScaler({}, consumer)


class TestLocalScalerContract(ScalerContract):
    @pytest.fixture
    def tideflow_scaler_factory(self, work: Workspace) -> Callable[[], LocalScaler]:
        return work.scaler


# --- scaling ---------------------------------------------------------------------------------


async def test_scaling_starts_and_stops_worker_processes(work: Workspace) -> None:
    scaler = work.scaler()
    marker = my_marker()
    began = time.monotonic()
    await scaler.scale(3)
    assert await scaler.current() == 3
    await until(lambda: len(running_pids(scaler)) == 3, what="3 running instances")
    print(f"\n3 instances consuming {time.monotonic() - began:.2f}s after scale(3)")
    assert instances_started_by(marker) == set(running_pids(scaler))
    for pid in running_pids(scaler):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:6] == [
            b"-m",
            b"tideflow",
            b"worker",
            str(work.flow_path).encode(),
            b"workers",
        ]
        assert os.getpgid(pid) == pid, "each instance leads a process group of its own"

    await scaler.scale(1)
    assert await scaler.current() == 1
    await until(lambda: len(instances_started_by(marker)) == 1, what="2 instances stopped")
    await scaler.scale(0)
    await until(lambda: not instances_started_by(marker), what="every instance stopped")
    await until(lambda: len(scaler.health()["recent_exits"]) == 3, what="3 exits noticed")
    health = scaler.health()
    assert health["desired"] == 0
    assert [e["requested"] for e in health["recent_exits"]] == [True, True, True]
    assert [e["exit_code"] for e in health["recent_exits"]] == [0, 0, 0]


async def test_scaling_down_stops_the_newest_and_lets_them_finish(work: Workspace) -> None:
    # a drain that runs out would take 60 s: finishing the message takes 1.5 s (more
    # on a loaded machine, never near 30)
    work.write_flow(sleep=1.5, drain="60s")
    scaler = work.scaler()
    await scaler.scale(1)
    await until(lambda: len(running_pids(scaler)) == 1, what="the first instance")
    await scaler.scale(3)
    await until(lambda: len(running_pids(scaler)) == 3, what="3 instances")
    oldest, *newest = scaler.health()["instances"]
    await publish(work.flow, range(12))

    def holds_a_message(instance: dict[str, Any]) -> bool:
        return len(work.lines(instance["instance_id"], "start")) > len(
            work.lines(instance["instance_id"], "done")
        )

    await until(lambda: all(holds_a_message(i) for i in newest), what="newest ones busy")
    stopped_at = time.monotonic()
    await scaler.scale(1)
    assert await scaler.current() == 1
    (kept,) = scaler.health()["instances"]
    assert kept["pid"] == oldest["pid"]

    await until(
        lambda: all(exit_of(scaler, i["pid"]) for i in newest), 60, what="the newest to exit"
    )
    assert time.monotonic() - stopped_at < 30
    for instance in newest:
        record = exit_of(scaler, instance["pid"])
        assert record is not None
        assert record["exit_code"] == 0, "drained, not killed"
        assert record["requested"] is True
        started = work.lines(instance["instance_id"], "start")
        assert sorted(started) == sorted(work.lines(instance["instance_id"], "done"))
    assert not gone(oldest["pid"])


async def test_an_instance_that_outlives_its_drain_is_killed(work: Workspace) -> None:
    work.write_flow(sleep=60, drain="1s")
    scaler = work.scaler()
    await scaler.scale(1)
    await until(lambda: len(running_pids(scaler)) == 1, what="the instance")
    (instance,) = scaler.health()["instances"]
    await publish(work.flow, range(1))
    await until(lambda: work.lines(instance["instance_id"], "start") == [0], what="busy")
    await scaler.scale(0)
    await until(lambda: exit_of(scaler, instance["pid"]) is not None, timeout=30, what="the end")
    (record,) = scaler.health()["recent_exits"]
    # the instance gives up at its own drain deadline (exit 4) or is killed at the scaler's
    assert record["exit_code"] in (4, -signal.SIGKILL)
    assert record["ran_for"] < 30


# --- crashes ---------------------------------------------------------------------------------


async def test_a_crashed_instance_is_restarted_with_a_growing_backoff(work: Workspace) -> None:
    work.write_flow(backoff="300ms")
    scaler = work.scaler(stable_after=60.0)
    await scaler.scale(1)
    delays: list[float] = []
    for crash in (1, 2):
        await until(lambda: len(running_pids(scaler)) == 1, what="a running instance")
        (before,) = scaler.health()["instances"]
        os.kill(before["pid"], signal.SIGKILL)
        await until(restarted(scaler, before["pid"]), what="the restart")
        (after,) = scaler.health()["instances"]
        assert after["crashes_in_row"] == crash
        assert after["restarts"] == crash
        assert after["last_exit"] == "killed by SIGKILL"
        assert after["last_exit_code"] == -signal.SIGKILL
        exited = after["last_exit_at"]
        delays.append(_seconds_between(exited, after["started_at"]))
        assert await scaler.current() == 1
    assert delays[0] >= 0.3
    assert delays[1] >= 0.6
    assert not scaler.crash_looping


async def test_an_instance_that_stays_up_ends_the_crash_streak(work: Workspace) -> None:
    scaler = work.scaler(stable_after=1.0)
    await scaler.scale(1)
    await until(lambda: len(running_pids(scaler)) == 1, what="a running instance")
    (first,) = scaler.health()["instances"]
    os.kill(first["pid"], signal.SIGKILL)
    await until(lambda: scaler.health()["instances"][0]["crashes_in_row"] == 1)
    await until(lambda: scaler.health()["instances"][0]["crashes_in_row"] == 0, what="reset")
    assert scaler.health()["instances"][0]["restarts"] == 1


async def test_a_crash_loop_is_reported_and_retried(
    work: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    work.write_flow(run="shop_missing_module:handle", backoff="100ms")
    scaler = work.scaler(max_backoff=0.4)
    with caplog.at_level(logging.WARNING, logger="tideflow.local_scaler"):
        await scaler.scale(1)
        await until(lambda: scaler.crash_looping, timeout=30, what="the crash loop")
        health = scaler.health()
        assert health["crash_looping"] is True
        loop = health["crash_loop"]
        assert loop["exit_code"] == 1
        assert loop["exit"] == "exit status 1"
        assert any("cannot load the handler" in line for line in loop["output"])
        assert await scaler.current() == 1, "a crash-looping instance still counts"
        restarts = health["instances"][0]["restarts"]
        await until(
            lambda: scaler.health()["instances"][0]["restarts"] > restarts,
            what="another restart at the capped delay",
        )
        waiting = scaler.health()["instances"][0]["next_restart_in"]
        assert waiting is None or waiting <= 0.4, "the delay stays capped at max_backoff"
    reports = [r for r in caplog.records if "is crash-looping" in r.getMessage()]
    assert len(reports) == 1, "reported once, not at every crash"
    assert "shop_missing_module" in reports[0].getMessage()


async def test_an_interpreter_that_cannot_start_is_a_crash_loop_too(work: Workspace) -> None:
    work.write_flow(backoff="50ms", scale_extra='    python           = "no/such/python"')
    scaler = work.scaler(max_backoff=0.2)
    assert scaler.python == str(work.folder / "no" / "such" / "python")
    await scaler.scale(1)
    await until(lambda: scaler.crash_looping, what="the crash loop")
    loop = scaler.health()["crash_loop"]
    assert loop["exit"] == "did not start"
    assert loop["output"][0].startswith(f"cannot start {scaler.python}: ")
    assert await scaler.current() == 1


async def test_the_python_option_names_the_interpreter(work: Workspace) -> None:
    wrapper = work.folder / "bin" / "python"
    wrapper.parent.mkdir()
    marker = work.folder / "wrapper-used"
    wrapper.write_text(f'#!/bin/sh\ntouch "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    work.write_flow(scale_extra='    python           = "bin/python"')
    scaler = work.scaler()
    await scaler.scale(1)
    await until(lambda: len(running_pids(scaler)) == 1, what="an instance")
    assert marker.exists()


def _seconds_between(earlier: str, later: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


# --- no orphans ------------------------------------------------------------------------------


def start_orchestrator(work: Workspace, count: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """A process that scales the consumer to `count` and waits; returns it and the pids."""
    script = work.folder / "orchestrator.py"
    script.write_text(PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(work.flow_path), str(count)],
        stdout=subprocess.PIPE,
    )
    work.processes.append(parent)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line, "the orchestrator-like process printed no pids"
    return parent, json.loads(line)


async def test_instances_exit_by_themselves_when_the_orchestrator_is_killed(
    work: Workspace,
) -> None:
    parent, pids = start_orchestrator(work, 2)
    assert len(pids) == 2
    assert all(not gone(pid) for pid in pids)
    parent.kill()
    parent.wait(10)
    began = time.monotonic()
    # bounds a hang only: the lifeline ends them at once, however loaded the machine
    await until(lambda: all(gone(pid) for pid in pids), timeout=60, what="no orphans")
    took = time.monotonic() - began
    print(f"\ninstances ended {took:.2f}s after their orchestrator was killed")


@pytest.fixture
def decoys(work: Workspace) -> Iterator[Callable[[dict[str, str], str], int]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(extra_env: dict[str, str], consumer: str) -> int:
        # looks like an instance: `... tideflow worker FILE CONSUMER`
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time; time.sleep(120)",
                "tideflow",
                "worker",
                str(work.flow_path),
                consumer,
            ],
            env={**os.environ, **extra_env},
            start_new_session=True,
        )
        started.append(process)
        return process.pid

    yield start
    for process in started:
        process.kill()
        process.wait(10)


async def test_a_new_scaler_reaps_what_a_dead_orchestrator_left_and_nothing_else(
    work: Workspace, decoys: Callable[[dict[str, str], str], int]
) -> None:
    work.write_flow(drain="1s")
    parent, (stuck, free) = start_orchestrator(work, 2)
    dead_marker = f"{parent.pid}:{process_start(parent.pid)}"
    os.kill(stuck, signal.SIGSTOP)  # it cannot notice anything: a leftover
    unmarked = decoys({}, "workers")
    live_parent = decoys({PARENT_ENV: my_marker()}, "workers")
    other_consumer = decoys({PARENT_ENV: dead_marker}, "other_workers")
    parent.kill()
    parent.wait(10)
    await until(lambda: gone(free), timeout=30, what="the free instance to exit")

    assert [leftover.pid for leftover in find_leftovers(work.flow_path, "workers")] == [stuck]
    scaler = work.scaler()
    assert await scaler.reap_leftovers() == [stuck]
    await until(lambda: gone(stuck), timeout=60, what="the leftover to be reaped")
    await asyncio.sleep(0.2)
    assert not any(gone(pid) for pid in (unmarked, live_parent, other_consumer))
    assert await scaler.current() == 0


async def test_the_first_scale_reaps_leftovers_by_itself(work: Workspace) -> None:
    work.write_flow(drain="1s")
    parent, pids = start_orchestrator(work, 1)
    os.kill(pids[0], signal.SIGSTOP)
    parent.kill()
    parent.wait(10)
    scaler = work.scaler()
    await scaler.scale(1)
    await until(lambda: gone(pids[0]), timeout=30, what="the leftover to be reaped")
    await until(lambda: len(running_pids(scaler)) == 1, what="the new instance")
    assert running_pids(scaler) != pids


async def test_aclose_stops_every_instance(work: Workspace) -> None:
    scaler = work.scaler()
    marker = my_marker()
    await scaler.scale(2)
    await until(lambda: len(running_pids(scaler)) == 2, what="2 instances")
    pids = running_pids(scaler)
    await scaler.aclose()
    assert all(gone(pid) for pid in pids)
    assert not instances_started_by(marker)
