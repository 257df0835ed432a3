"""Notifications: the webhook against a real local HTTP server, the command notifier
with a real program, and which notify blocks hear which events."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tideflow.compiler import compile_source
from tideflow.compiler.ir import FlowIR
from tideflow.plugins.api import BackendContext, BackendError, NotifyEvent
from tideflow.plugins.notifiers import CommandNotifier, WebhookNotifier
from tideflow.runtime.executor import RunEvent
from tideflow.runtime.notify import Notifications

pytestmark = pytest.mark.anyio

AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


class Receiver:
    """A local HTTP server that records what is POSTed to it."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), json.loads(body)))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def event(name: str = "failure", job: str = "extract", attempt: int | None = 3) -> RunEvent:
    return RunEvent(name, "orders", job, 7, 42, attempt, "failed", "KeyError: 'sku'", AT)


def flow(body: str) -> FlowIR:
    result = compile_source('flow "orders" {}\n' + body, "orders.flow")
    assert result.ir is not None, result.diagnostics
    return result.ir


JOBS = """
job "extract" {
  run = "shop.jobs:extract"
  retry { attempts = 3 }
}
job "report" { run = "shop.jobs:report" }
"""


async def test_webhook_posts_the_json_event(receiver: Receiver) -> None:
    notifier = WebhookNotifier(
        {"url": receiver.url, "headers": {"X-Team": "data"}}, context=BackendContext(block="ops")
    )
    async with notifier:
        await notifier.send(NotifyEvent("failure", "orders", "boom", AT, job="extract"))
    ((headers, body),) = receiver.received
    assert body["event"] == "failure" and body["job"] == "extract"
    assert body["occurred_at"] == AT.isoformat()
    assert headers["X-Team"] == "data" and headers["User-Agent"].startswith("tideflow")


async def test_webhook_errors_never_show_the_address() -> None:
    with Receiver(status=500) as failing:
        notifier = WebhookNotifier({"url": failing.url}, context=BackendContext(block="ops"))
        async with notifier:
            with pytest.raises(
                BackendError, match='notify "ops": the server answered HTTP 500'
            ) as e:
                await notifier.send(NotifyEvent("failure", "orders", "boom", AT))
    assert failing.url not in str(e.value)
    closed = WebhookNotifier({"url": "http://127.0.0.1:9/secret-token-in-path"})
    async with closed:
        with pytest.raises(BackendError, match="the request failed") as e:
            await closed.send(NotifyEvent("failure", "orders", "boom", AT))
    assert "secret-token-in-path" not in str(e.value)


async def test_command_gets_the_event_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "event.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read())"
    notifier = CommandNotifier({"command": [sys.executable, "-c", script]})
    async with notifier:
        await notifier.send(NotifyEvent("success", "orders", "ok", AT, job="report"))
    assert json.loads(out.read_text())["job"] == "report"


async def test_command_failure_says_how(tmp_path: Path) -> None:
    script = "import sys; sys.stderr.write('no route to pager\\n'); sys.exit(4)"
    notifier = CommandNotifier({"command": [sys.executable, "-c", script]})
    with pytest.raises(BackendError, match="exited with 4: no route to pager"):
        await notifier.send(NotifyEvent("failure", "orders", "boom", AT))
    slow = CommandNotifier(
        {"command": [sys.executable, "-c", "import time; time.sleep(30)"], "timeout": 0.3}
    )
    with pytest.raises(BackendError, match=r"ran longer than 0\.3s"):
        await slow.send(NotifyEvent("failure", "orders", "boom", AT))


async def test_blocks_hear_only_their_events_and_jobs(receiver: Receiver) -> None:
    ir = flow(
        JOBS
        + f"""
notify "all" {{ kind = "webhook"  url = "{receiver.url}"  on = [failure, success] }}
notify "report_only" {{
  kind = "webhook"  url = "{receiver.url}"  on = success  jobs = [job.report]
}}
"""
    )
    notifications = Notifications(ir)
    assert [b.name for b in notifications.listeners(event("success", "report"))] == [
        "all",
        "report_only",
    ]
    assert [b.name for b in notifications.listeners(event("success", "extract"))] == ["all"]
    assert notifications.listeners(event("retry")) == []


async def test_one_message_when_failure_and_retries_exhausted_both_listen(
    receiver: Receiver,
) -> None:
    ir = flow(
        JOBS
        + f"""
notify "ops" {{ kind = "webhook"  url = "{receiver.url}"  on = [failure, retries_exhausted] }}
"""
    )
    notifications = Notifications(ir)
    await notifications.deliver(event("failure", attempt=3))
    await notifications.deliver(event("retries_exhausted", attempt=3))
    # a failure before the attempts ran out (a job that can never start) still tells
    await notifications.deliver(event("failure", attempt=1))
    await notifications.aclose()
    assert [body["event"] for _, body in receiver.received] == ["retries_exhausted", "failure"]
    assert receiver.received[0][1]["details"]["error"] == "KeyError: 'sku'"


async def test_a_failed_delivery_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPS_HOOK", raising=False)
    ir = flow(JOBS + 'notify "ops" { kind = "webhook"  url = secret("OPS_HOOK") }\n')
    notifications = Notifications(ir)
    await notifications.deliver(event("failure", attempt=1))
    assert notifications.failed == 1
    assert "environment variable `OPS_HOOK` is not set" in caplog.text


async def test_a_dead_letter_event_counts_and_describes_the_messages(receiver: Receiver) -> None:
    from tideflow.runtime.model import DeadLetterRow
    from tideflow.runtime.notify import dead_letter_event

    ir = flow(
        JOBS
        + f"""
notify "ops" {{ kind = "webhook"  url = "{receiver.url}"  on = [dead_letter] }}
notify "jobs" {{ kind = "webhook"  url = "{receiver.url}"  on = dead_letter  jobs = job.report }}
"""
    )
    rows = [
        DeadLetterRow("orders", "workers", "w-1", AT, "orders", 2, str(n), 5, "dead", "E: boom")
        for n in (11, 12)
    ]
    summary, details = dead_letter_event("workers", rows)
    notifications = Notifications(ir)
    await notifications.consumer_event("dead_letter", "workers", summary, details)
    await notifications.aclose()
    ((_, body),) = receiver.received  # the block limited to jobs hears no consumer event
    assert body["event"] == "dead_letter" and body["consumer"] == "workers"
    assert body["summary"] == (
        'consumer "workers" of flow "orders" dead-lettered 2 messages to topic "dead"; '
        "last: id 12 of topic orders (partition 2) after 5 failures: E: boom"
    )
    assert body["details"]["count"] == 2
    assert [m["id"] for m in body["details"]["messages"]] == ["11", "12"]
