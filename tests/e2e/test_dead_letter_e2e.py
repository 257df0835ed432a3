"""Dead letters as a user meets them: `tideflow run` with a consumer whose handler
fails on one message, a `command` notifier listening to `dead_letter`, then
`tideflow logs --consumer`, `tideflow dlq list` and `tideflow dlq replay` once the
handler is fixed. Real processes, the embedded broker, a SQLite state store."""

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
from tideflow.runtime.store import Store

TIDEFLOW = [sys.executable, "-m", "tideflow"]

HANDLERS = """
import pathlib

HERE = pathlib.Path(__file__).parent


def supply(ctx):
    for number in range(4):
        ctx.publish("orders", {"id": number, "poison": number == 2}, key=str(number))


def handle(ctx, message):
    ctx.logger.info("handling order %s", message.value["id"])
    if message.value["poison"] and not (HERE / "fixed").exists():
        raise ValueError(f"cannot ship order {message.value['id']}")
    with open(HERE / "handled.txt", "a") as out:
        out.write(f"{message.value['id']}\\n")
"""

NOTIFIER = """
import pathlib, sys

with open(pathlib.Path(__file__).parent / "events.jsonl", "a") as out:
    out.write(sys.stdin.read().strip() + "\\n")
"""

FLOW = """
flow "shop" {{ timezone = "UTC" }}
broker "b" {{ kind = "embedded"  path = "broker.db" }}
topic "orders" {{}}
topic "dead" {{}}
job "supply" {{
  run       = "dlqhandlers:supply"
  publishes = topic.orders
}}
consumer "workers" {{
  consumes     = topic.orders
  run          = "dlqhandlers:handle"
  dead_letter  = topic.dead
  max_failures = 2
}}
notify "ops" {{
  kind    = "command"
  command = ["{python}", "{notifier}"]
  on      = dead_letter
}}
"""


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "dlqhandlers.py").write_text(HANDLERS)
    (tmp_path / "notify.py").write_text(NOTIFIER)
    flow = FLOW.format(python=sys.executable, notifier=tmp_path / "notify.py")
    (tmp_path / "shop.flow").write_text(textwrap.dedent(flow))
    yield tmp_path


def test_a_dead_letter_is_notified_logged_listed_and_replayed(root: Path) -> None:
    state = f"sqlite:///{root / 'state.db'}"
    env = {**os.environ, "TIDEFLOW_STATE": state}
    flow = str(root / "shop.flow")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TIDEFLOW, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120
        )

    orchestrator = subprocess.Popen(
        [*TIDEFLOW, "run", flow, "--no-live"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Store.open(state) as store:
            wait_until(lambda: store.live_orchestrators(["shop"], 30) != [], what="the start")
        triggered = cli("trigger", flow, "supply")
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        events = root / "events.jsonl"
        wait_until(events.exists, what="the dead_letter notification")
        (event,) = [json.loads(line) for line in events.read_text().splitlines()]
        assert (event["event"], event["flow"], event["consumer"]) == (
            "dead_letter",
            "shop",
            "workers",
        )
        assert event["details"]["count"] == 1
        (described,) = event["details"]["messages"]
        assert described["error"] == "ValueError: cannot ship order 2"
        assert (described["topic"], described["dead_letter_topic"]) == ("orders", "dead")

        with Store.open(state) as store:
            wait_until(
                lambda: any(
                    "dead-lettered" in line.message
                    for line in store.consumer_logs("shop", "workers")
                ),
                what="the instance's log lines in the store",
            )
        logs = cli("logs", "--consumer", "workers")
        assert logs.returncode == 0, logs.stderr
        assert "handling order 2" in logs.stdout and "dead-lettered" in logs.stdout

        listed = cli("dlq", "list", flow, "workers", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        (message,) = json.loads(listed.stdout)["messages"]
        assert json.loads(message["value"]) == {"id": 2, "poison": True}
        assert message["error"] == "ValueError: cannot ship order 2"

        (root / "fixed").touch()
        replayed = cli("dlq", "replay", flow, "workers", "--all")
        assert replayed.returncode == 0, replayed.stderr
        assert 'replayed 1 message of consumer "workers" to topic "orders"' in replayed.stdout
        handled = root / "handled.txt"
        wait_until(
            lambda: handled.exists() and "2" in handled.read_text().split(), what="the replay"
        )
        assert sorted(handled.read_text().split()) == ["0", "1", "2", "3"]
        assert "no dead letters" in cli("dlq", "list", flow, "workers").stdout
    finally:
        orchestrator.send_signal(signal.SIGTERM)
        output, _ = orchestrator.communicate(timeout=60)
    assert orchestrator.returncode == 0, output
    assert "Traceback" not in output
