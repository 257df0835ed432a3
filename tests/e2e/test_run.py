"""`tideflow run | trigger | status | upcoming` as a user runs them: real processes,
a real SQLite state store, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tideflow.runtime.model import AttemptStatus, RunStatus
from tideflow.runtime.store import Store

TIDEFLOW = [sys.executable, "-m", "tideflow"]

JOBS = """
import os, pathlib, time

def tick(ctx):
    ctx.logger.info("tick at %s", ctx.scheduled_at)

def slow(ctx):
    pathlib.Path(ctx.params["started"]).write_text(str(os.getpid()))
    time.sleep(float(ctx.params.get("seconds", 60)))

def hello(ctx):
    print("hello", ctx.params.get("who", "nobody"))
"""


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = f"sqlite:///{root / 'state.db'}"
        self.processes: list[subprocess.Popen[str]] = []
        (root / "testjobs.py").write_text(JOBS)

    def flow(self, body: str, name: str = "demo") -> Path:
        path = self.root / f"{name}.flow"
        path.write_text(f'flow "{name}" {{ timezone = "UTC" }}\n' + textwrap.dedent(body))
        return path

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDEFLOW, *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "TIDEFLOW_STATE": self.state},
        )

    def start(self, flow: Path, *extra: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*TIDEFLOW, "run", str(flow), "--no-live", *extra],
            cwd=self.root,
            env={**os.environ, "TIDEFLOW_STATE": self.state},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.processes.append(process)
        return process

    def store(self) -> Store:
        return Store.open(self.state)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    made = Project(tmp_path)
    yield made
    for process in made.processes:  # whatever a failed test left running
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    process.send_signal(sig)
    output, _ = process.communicate(timeout=60)
    return output


def test_run_fires_schedules_and_stops_gracefully(project: Project) -> None:
    flow = project.flow("""
        job "tick" {
          schedule = every(1s)
          run      = "testjobs:tick"
        }
        job "after" {
          after = [job.tick]
          run   = "testjobs:hello"
        }
    """)
    process = project.start(flow)
    with project.store() as store:
        wait_until(lambda: len(store.job_runs(job="after", status=RunStatus.SUCCESS)) >= 2)
    output = stop(process)
    assert process.returncode == 0, output
    assert "demo.tick run" in output and "success" in output
    assert "Traceback" not in output
    with project.store() as store:
        instants = [r.scheduled_at for r in store.job_runs(job="tick", limit=None)]
        assert len(instants) == len(set(instants))  # each instant once
        assert all(i is not None and i.microsecond == 0 for i in instants)


def test_sigterm_lets_running_attempts_finish_then_interrupts(project: Project) -> None:
    started = project.root / "started"
    flow = project.flow(f'''
        job "slow" {{
          run    = "testjobs:slow"
          params = {{ started = "{started}", seconds = 60 }}
        }}
    ''')
    process = project.start(flow, "--grace", "1s")
    with project.store() as store:
        wait_until(lambda: store.live_orchestrators(["demo"], 30) != [])
    assert project.cli("trigger", str(flow), "slow").returncode == 0
    wait_until(started.exists)
    worker = int(started.read_text())
    output = stop(process)
    assert process.returncode == 0, output
    with project.store() as store:
        (run,) = store.job_runs(job="slow")
        assert run.status is RunStatus.CANCELLED
        assert store.attempts(run.id)[0].status is AttemptStatus.INTERRUPTED
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


def test_kill_9_then_restart_never_refires_and_recovers_the_zombie(project: Project) -> None:
    started = project.root / "started"
    flow = project.flow(f'''
        job "tick" {{
          schedule = every(1s)
          catch_up = all
          run      = "testjobs:tick"
        }}
        job "slow" {{
          run    = "testjobs:slow"
          params = {{ started = "{started}", seconds = 2 }}
          retry {{ attempts = 2 }}
        }}
    ''')
    first = project.start(flow)
    with project.store() as store:
        wait_until(lambda: len(store.job_runs(job="tick", status=RunStatus.SUCCESS)) >= 2)
    assert project.cli("trigger", str(flow), "slow").returncode == 0
    wait_until(started.exists)
    first.kill()  # SIGKILL: no clean-up at all
    first.communicate(timeout=30)
    with project.store() as store:
        before = {r.scheduled_at for r in store.job_runs(job="tick", limit=None)}
    time.sleep(2.5)  # the schedule keeps going while nothing runs it

    second = project.start(flow)
    with project.store() as store:
        wait_until(lambda: store.job_runs(job="slow", status=RunStatus.SUCCESS) != [], 30)
        wait_until(lambda: len(store.job_runs(job="tick", limit=None)) >= len(before) + 4)
    output = stop(second)
    assert second.returncode == 0, output

    with project.store() as store:
        ticks = sorted(r.scheduled_at for r in store.job_runs(job="tick", limit=None))
        (slow,) = store.job_runs(job="slow")
        attempts = store.attempts(slow.id)
    assert len(ticks) == len(set(ticks)), "an instant fired twice"
    seconds = [int(t.timestamp()) for t in ticks if t is not None]
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds))), "catch_up = all skipped"
    assert [a.status for a in attempts] == [AttemptStatus.LOST, AttemptStatus.SUCCESS]
    assert slow.status is RunStatus.SUCCESS


def test_a_second_orchestrator_of_the_same_flow_stands_by(project: Project) -> None:
    flow = project.flow('job "tick" {\n  schedule = every(1s)\n  run = "testjobs:tick"\n}\n')
    process = project.start(flow)
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["demo"], 30) != [])
        again = project.cli("run", str(flow), "--no-live", "--duration", "1s")
        assert again.returncode == 0, again.stderr
        assert ": standby (another orchestrator leads demo" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        stop(process)


def test_on_sqlite_a_standby_on_the_same_host_takes_over(project: Project) -> None:
    """Several orchestrators on one host share a SQLite file: the leader is SIGKILLed,
    the standby leads within the lease (+ 1 s), and no instant fires twice or never."""
    flow = project.flow("""
        job "tick" {
          schedule = every(1s)
          catch_up = all
          overlap  = allow
          run      = "testjobs:tick"
        }
    """)
    lease = ("--lease", "2s", "--renew", "500ms")
    first = project.start(flow, *lease)
    with project.store() as store:
        wait_until(lambda: store.job_runs(job="tick", status=RunStatus.SUCCESS) != [])
        second = project.start(flow, *lease)
        wait_until(lambda: len(store.live_orchestrators(["demo"], 30)) == 2)
        state = store.lease("demo")
        assert state is not None and state.holder is not None
        pids = {o.id: o.pid for o in store.orchestrators(stale_after=60)}
        leader, standby = (first, second) if pids[state.holder] == first.pid else (second, first)
        wait_until(lambda: 0.4 < time.time() % 1 < 0.6)  # between two instants
        killed_at = time.time()
        leader.kill()
        leader.communicate(timeout=30)

        def taken_over() -> bool:
            now = store.lease("demo")
            return now is not None and now.led and now.holder != state.holder

        wait_until(taken_over)
        took_over = store.lease("demo")
        assert took_over is not None and took_over.acquired_at - killed_at <= 3.0
        count = len(store.job_runs(job="tick", limit=None))
        wait_until(lambda: len(store.job_runs(job="tick", limit=None)) >= count + 3)
        instants = [r.scheduled_at for r in store.job_runs(job="tick", limit=None)]
    output = stop(standby)
    assert standby.returncode == 0, output
    assert "Traceback" not in output
    seconds = sorted(int(i.timestamp()) for i in instants if i is not None)
    assert len(seconds) == len(set(seconds)), "an instant fired twice"
    assert seconds == list(range(seconds[0], seconds[-1] + 1)), "an instant never fired"


def test_an_orchestrator_of_an_overlapping_set_of_flows_is_refused(project: Project) -> None:
    flow = project.flow('job "tick" {\n  schedule = every(1s)\n  run = "testjobs:tick"\n}\n')
    other = project.flow('job "hello" {\n  run = "testjobs:hello"\n}\n', name="other")
    process = project.start(flow)
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["demo"], 30) != [])
        again = project.cli("run", str(flow), str(other), "--no-live", "--duration", "1s")
        assert again.returncode == 1
        assert "is already run by orchestrator" in again.stderr
        assert "exactly the same set" in again.stderr
        assert "Traceback" not in again.stderr
    finally:
        stop(process)


def test_a_store_no_other_orchestrator_can_share_is_refused(project: Project) -> None:
    flow = project.flow('job "hello" {\n  run = "testjobs:hello"\n}\n')
    memory = project.cli("run", str(flow), "--no-live", "--state", "sqlite://", "--duration", "1s")
    assert memory.returncode == 1
    assert "in-memory SQLite database" in memory.stderr and "Traceback" not in memory.stderr
    renew = project.cli("run", str(flow), "--no-live", "--lease", "1s", "--renew", "2s")
    assert renew.returncode == 2
    assert "must be above zero and shorter than --lease" in renew.stderr


def test_trigger_wait_reports_the_outcome(project: Project) -> None:
    flow = project.flow('job "hello" { run = "testjobs:hello" }\n')
    process = project.start(flow)
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["demo"], 30) != [])
        result = project.cli("trigger", str(flow), "hello", "--param", "who=ops", "--wait")
        assert result.returncode == 0, result.stderr
        assert "flow run" in result.stdout and "success" in result.stdout
        logs = project.cli("logs", result.stdout.split()[2])
    finally:
        stop(process)
    assert "hello ops" in logs.stdout


def test_trigger_without_an_orchestrator_waits_in_the_store(project: Project) -> None:
    flow = project.flow('job "hello" { run = "testjobs:hello" }\n')
    result = project.cli("trigger", str(flow), "hello")
    assert result.returncode == 0
    assert "no orchestrator is running flow 'demo'" in result.stdout
    misspelt = project.cli("trigger", str(flow), "helo")
    assert misspelt.returncode == 1 and "did you mean `hello`?" in misspelt.stderr


def test_status_and_upcoming(project: Project) -> None:
    flow = project.flow("""
        job "nightly" {
          schedule = cron("30 1 * * *")
          timezone = "Europe/Lisbon"
          run      = "testjobs:tick"
        }
    """)
    upcoming = project.cli(
        "upcoming", str(flow), "--from", "2026-03-28", "--until", "2026-03-30", "--format", "json"
    )
    assert upcoming.returncode == 0, upcoming.stderr
    instants = [i["at"] for i in json.loads(upcoming.stdout)["instants"]]
    # 01:30 local is WET (UTC+0) before the spring-forward night and WEST (UTC+1) after;
    # on 2026-03-29 it falls in the gap (01:00 -> 02:00) and fires once right after it
    assert instants == [
        "2026-03-28T01:30:00+00:00",
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:30:00+00:00",
    ]
    status = project.cli("status", str(flow), "--format", "json")
    assert status.returncode == 0, status.stderr
    (report,) = json.loads(status.stdout)["flows"]
    assert report["orchestrator"] is None
    assert report["jobs"][0]["schedule"] == "cron 30 1 * * * Europe/Lisbon"
    assert report["jobs"][0]["next_run"] is not None


def test_a_job_runs_after_a_job_of_another_flow_once(project: Project) -> None:
    billing = project.flow('job "close" { run = "testjobs:hello" }\n', name="billing")
    reports = project.flow(
        """
        job "monthly" {
          run   = "testjobs:hello"
          after = [flow.billing.job.close]
        }
        job "alarm" {
          run     = "testjobs:hello"
          after   = [flow.billing.job.close]
          trigger = one_failed
        }
        """,
        name="reports",
    )
    process = project.start(billing, str(reports))
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["reports"], 30) != [])
        done = project.cli("trigger", str(billing), "close", "--wait")
        assert done.returncode == 0, done.stderr
        with project.store() as store:
            wait_until(lambda: store.job_runs(flow="reports", job="monthly") != [])
            (monthly,) = store.job_runs(flow="reports", job="monthly")
            assert monthly.trigger.value == "flow"
            wait_until(lambda: store.job_runs(flow="reports", status=RunStatus.SUCCESS) != [])
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    again = project.start(billing, str(reports))  # a restart must not act on it again
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["reports"], 30) != [])
            time.sleep(1.5)  # three trigger polls: time for a wrong second start to show
            assert len(store.job_runs(flow="reports", job="monthly")) == 1
            assert store.job_runs(flow="reports", job="alarm") == []  # close succeeded
    finally:
        stop(again)


def test_a_failed_flow_run_as_the_reading_commands_show_it(project: Project) -> None:
    (project.root / "failing.py").write_text(
        "def extract(ctx):\n    ctx.logger.warning('reading [/tmp/in] as [secret]')\n"
        "    raise KeyError('sku')\n"
    )
    flow = project.flow("""
        job "extract" { run = "failing:extract" }
        job "transform" {
          run   = "testjobs:hello"
          after = [job.extract]
        }
    """)
    withdrawn = project.cli("trigger", str(flow), "extract", "--wait", "--timeout", "300ms")
    assert withdrawn.returncode == 1 and "withdrawn" in withdrawn.stdout, withdrawn.stdout
    process = project.start(flow)
    try:
        with project.store() as store:
            wait_until(lambda: store.live_orchestrators(["demo"], 30) != [])
        done = project.cli("trigger", str(flow), "extract", "--wait")
        assert done.returncode == 1, done.stdout + done.stderr
    finally:
        stop(process)
    flow_runs = project.cli("flow-runs")
    assert flow_runs.returncode == 0, flow_runs.stderr
    (row,) = [line for line in flow_runs.stdout.splitlines() if "demo" in line]  # one: the
    assert "failed" in row and "1 failed, 1 upstream_failed" in row  # withdrawn never ran
    number = row.split()[0]
    shown = project.cli("flow-runs", number)
    assert "extract failed (KeyError: 'sku')" in shown.stdout, shown.stdout
    assert "trigger rule all_success: a dependency failed (`extract` failed)" in shown.stdout
    status = project.cli("status", str(flow))
    assert f"last flow run {number} (from extract): failed" in status.stdout, status.stdout
    runs = project.cli("runs")
    (transform,) = [line for line in runs.stdout.splitlines() if "upstream_failed" in line]
    logs = project.cli("logs", transform.split()[0])
    assert "a dependency failed (`extract` failed)" in logs.stdout
    (extract,) = [line for line in runs.stdout.splitlines() if "KeyError" in line]
    logs = project.cli("logs", extract.split()[0])
    assert logs.returncode == 0, logs.stderr
    assert "reading [/tmp/in] as [secret]" in logs.stdout
