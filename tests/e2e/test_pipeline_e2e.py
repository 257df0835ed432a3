"""A supplier job publishes 100,000 messages; consumer instances drain them.

The whole path as a user runs it, on each built-in broker (the embedded one,
NATS JetStream and Kafka, the servers started by fixtures): `tideflow run` fires
the job in a worker process, which publishes through the broker; `tideflow
worker` instances started by the local scaler consume; one of them is killed
with SIGKILL mid-run and replaced. Every message must be handled at least once;
the number handled twice is printed (at-least-once delivery allows some).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from tideflow.runtime.model import RunStatus
from tideflow.runtime.store import Store

from tideflow.testing.kafka import kafka_bootstrap, kafka_server
from tideflow.testing.nats import nats_server, nats_url

__all__ = ["kafka_bootstrap", "kafka_server", "nats_server", "nats_url"]  # fixtures

MESSAGES = 100_000

HANDLERS = """
import os, pathlib

OUT = pathlib.Path(__file__).parent / "handled"

def supply(ctx):
    for number in range(int(ctx.params["count"])):
        ctx.publish("numbers", str(number), key=str(number % 97))

def handle(ctx, message):
    OUT.mkdir(exist_ok=True)
    with open(OUT / f"{os.getpid()}.txt", "a") as out:
        out.write(f"{message.value}\\n")
"""


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def handled(root: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in (root / "handled").glob("*.txt"):
        counts.update(line for line in path.read_text().splitlines() if line)
    return counts


def workers_of(flow: Path) -> list[int]:
    """pids of `tideflow worker` processes running this flow file."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and str(flow).encode() in argv:
            found.append(int(entry.name))
    return found


def broker_block(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "embedded":
        # a killed instance's leased messages come back after the visibility timeout
        return 'broker "b" { kind = "embedded"  visibility_timeout = 3s }'
    if backend == "nats":
        url = request.getfixturevalue("nats_url")
        # a killed instance's messages come back after ack_wait
        return f'broker "b" {{ kind = "nats"  servers = ["{url}"]  ack_wait = 3s }}'
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    # short sessions: the group notices the killed instance within seconds
    return (
        f'broker "b" {{ kind = "kafka"  bootstrap = "{bootstrap}"  '
        "session_timeout = 2s  heartbeat_interval = 500ms }"
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["embedded", "nats", "kafka"])
def test_100k_messages_from_a_job_to_three_instances_one_killed(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    (tmp_path / "pipeline.py").write_text(HANDLERS)
    flow = tmp_path / "numbers.flow"
    broker = broker_block(backend, request)
    flow.write_text(
        textwrap.dedent(f"""
        flow "numbers" {{}}
        {broker}
        topic "numbers" {{ partitions = 6 }}
        job "supply" {{
          run       = "pipeline:supply"
          publishes = topic.numbers
          params    = {{ count = {MESSAGES} }}
          timeout   = 5m
        }}
        consumer "counters" {{
          consumes      = topic.numbers
          run           = "pipeline:handle"
          batch_size    = 500
          max_in_flight = 500
          scale {{
            min              = 3
            max              = 3
            lag_per_instance = 1000
            poll             = 1s
          }}
        }}
    """)
    )
    state = f"sqlite:///{tmp_path / 'state.db'}"
    env = {**os.environ, "TIDEFLOW_STATE": state}
    orchestrator = subprocess.Popen(
        [sys.executable, "-m", "tideflow", "run", str(flow), "--no-live"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: len(workers_of(flow)) == 3, 60)
        trigger = subprocess.run(
            [sys.executable, "-m", "tideflow", "trigger", str(flow), "supply", "--wait"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr
        started = time.monotonic()
        wait_until(lambda: sum(handled(tmp_path).values()) > MESSAGES // 4, 120)
        victim = workers_of(flow)[0]
        os.kill(victim, signal.SIGKILL)  # mid-run: it holds unacknowledged messages
        wait_until(lambda: victim not in workers_of(flow) and len(workers_of(flow)) == 3, 60)
        wait_until(lambda: len(handled(tmp_path)) == MESSAGES, 240)
        drained = time.monotonic() - started
    finally:
        orchestrator.send_signal(signal.SIGTERM)
        output, _ = orchestrator.communicate(timeout=120)
    assert orchestrator.returncode == 0, output
    counts = handled(tmp_path)
    assert set(counts) == {str(n) for n in range(MESSAGES)}, "a message was lost"
    twice = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\n{backend}: {MESSAGES:,} messages drained in {drained:.1f} s; "
        f"handled more than once: {twice}"
    )
    assert workers_of(flow) == [], "instances outlived the orchestrator"
    with Store.open(state) as store:
        (run,) = store.job_runs(job="supply")
        assert run.status is RunStatus.SUCCESS
