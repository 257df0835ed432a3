"""The built-in notifiers pass the notifier contract third parties run
(`tideflow.testing.NotifierContract`)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tideflow.plugins.notifiers import CommandNotifier, WebhookNotifier

from tideflow.testing import NotifierContract, NotifierDelivered, NotifierFactory


class _Receiver:
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it and answers
    `status`."""

    def __init__(self, status: int) -> None:
        received: list[Mapping[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(204)
    yield server
    server.close()


@pytest.fixture
def refusing_receiver() -> Iterator[_Receiver]:
    server = _Receiver(500)
    yield server
    server.close()


class TestWebhookNotifier(NotifierContract):
    @pytest.fixture
    def tideflow_notifier_factory(self, receiver: _Receiver) -> NotifierFactory:
        return lambda: WebhookNotifier({"url": receiver.url})

    @pytest.fixture
    def tideflow_notifier_delivered(self, receiver: _Receiver) -> NotifierDelivered:
        return lambda: list(receiver.received)

    @pytest.fixture
    def tideflow_failing_notifier_factory(
        self, refusing_receiver: _Receiver
    ) -> NotifierFactory | None:
        return lambda: WebhookNotifier({"url": refusing_receiver.url})


# appends the JSON event read on stdin to the file named by its argument, one per line
APPEND = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read().strip() + '\\n')"


class TestCommandNotifier(NotifierContract):
    @pytest.fixture
    def events_file(self, tmp_path: Path) -> Path:
        return tmp_path / "events.jsonl"

    @pytest.fixture
    def tideflow_notifier_factory(self, events_file: Path) -> NotifierFactory:
        command = [sys.executable, "-c", APPEND, str(events_file)]
        return lambda: CommandNotifier({"command": command})

    @pytest.fixture
    def tideflow_notifier_delivered(self, events_file: Path) -> NotifierDelivered:
        def delivered() -> Sequence[Mapping[str, Any]]:
            if not events_file.exists():
                return []
            return [json.loads(line) for line in events_file.read_text().splitlines()]

        return delivered

    @pytest.fixture
    def tideflow_failing_notifier_factory(self) -> NotifierFactory | None:
        return lambda: CommandNotifier({"command": [sys.executable, "-c", "raise SystemExit(3)"]})
