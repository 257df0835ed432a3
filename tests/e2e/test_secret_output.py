"""No `secret()` value in any output: the orchestrator's, its consumer instances'
(`tideflow worker`), its job worker processes', or the state store.

One flow uses a secret everywhere a flow can: a webhook notifier's URL (with the
token in its query string, as httpx logs it), a command notifier's argument (the
command prints it on its stderr and fails), a NATS broker's token (a real
`nats-server --auth`), a Kafka broker's bootstrap address (with librdkafka's
debug log on, which names it), and the env of a job and of two consumers, whose
code prints and logs it through client libraries' loggers and raises it in an
error. Every logger runs at DEBUG (`TIDEFLOW_LOG`). Then every byte of output and
every file the flow wrote is searched for every secret value.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tideflow.runtime.model import RunStatus
from tideflow.runtime.store import Store

from tideflow.testing.kafka import kafka_bootstrap, kafka_server
from tideflow.testing.nats import NatsServer

__all__ = ["kafka_bootstrap", "kafka_server"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODE = """
import logging, os, pathlib, sys

HERE = pathlib.Path(__file__).parent


def supply(ctx):
    token = os.environ["API_TOKEN"]
    print("job token", token)
    print("job token on stderr", token, file=sys.stderr)
    ctx.logger.info("job logs its token %s", token)
    logging.getLogger("httpx").warning("GET https://api.example/?token=%s", token)
    ctx.publish("events", {"n": ctx.attempt})
    ctx.publish("orders", {"n": ctx.attempt})


def handle(ctx, message):
    token = os.environ["API_TOKEN"]
    print("handler token", token, "and key", os.environ["HANDLER_KEY"])
    logging.getLogger("urllib3.connectionpool").warning("retrying with token %s", token)
    ctx.logger.warning("handler logs its token %s", token)
    if message.delivery_count == 1:
        raise RuntimeError(f"token {token} was refused")
    (HERE / f"handled-{message.topic}").touch()
"""


class _Hook(BaseHTTPRequestHandler):
    received = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        type(self).received.set()

    def log_message(self, format: str, *args: object) -> None:  # keep the test quiet
        return


@pytest.fixture
def webhook() -> Iterator[tuple[int, threading.Event]]:
    received = threading.Event()
    handler = type("Hook", (_Hook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout:g}s: {what}")
        time.sleep(0.1)


def test_no_secret_value_reaches_any_output_or_the_store(
    tmp_path: Path, kafka_bootstrap: str, webhook: tuple[int, threading.Event]
) -> None:
    port, hook_received = webhook
    secrets = {
        "OPS_WEBHOOK": f"http://127.0.0.1:{port}/hook?token=HOOK{uuid.uuid4().hex}",
        "PAGER_TOKEN": f"PAGER{uuid.uuid4().hex}",
        "NATS_TOKEN": f"NATS{uuid.uuid4().hex}",
        "KAFKA_BOOTSTRAP": kafka_bootstrap,
        "API_TOKEN": f"API{uuid.uuid4().hex}",
        "HANDLER_KEY": f"KEY{uuid.uuid4().hex}",  # only the consumers' (printed, not logged)
    }
    nats = NatsServer(tmp_path / "nats", args=["--auth", secrets["NATS_TOKEN"]])
    nats.start()
    workdir = tmp_path / "flow"
    workdir.mkdir()
    (workdir / "leaky.py").write_text(CODE)
    flow = workdir / "leaky.flow"
    flow.write_text(
        textwrap.dedent(f"""
        flow "leaky" {{}}

        broker "nats" {{
          kind     = "nats"
          servers  = ["{nats.url}"]
          token    = secret("NATS_TOKEN")
          ack_wait = 5s
        }}

        broker "kafka" {{
          kind               = "kafka"
          bootstrap          = secret("KAFKA_BOOTSTRAP")
          offset_reset       = "earliest"
          session_timeout    = 6s
          heartbeat_interval = 500ms
          config             = {{ "debug" = "broker" }}
        }}

        topic "events" {{ broker = broker.nats }}
        topic "orders" {{ broker = broker.kafka }}

        job "supply" {{
          schedule  = every(2s)
          overlap   = skip
          run       = "leaky:supply"
          publishes = [topic.events, topic.orders]
          env       = {{ API_TOKEN = secret("API_TOKEN") }}
        }}

        consumer "events_worker" {{
          consumes = topic.events
          run      = "leaky:handle"
          env      = {{ API_TOKEN = secret("API_TOKEN"), HANDLER_KEY = secret("HANDLER_KEY") }}
          scale {{
            min = 1
            max = 1
          }}
        }}

        consumer "orders_worker" {{
          consumes = topic.orders
          run      = "leaky:handle"
          env      = {{ API_TOKEN = secret("API_TOKEN"), HANDLER_KEY = secret("HANDLER_KEY") }}
          scale {{
            min = 1
            max = 1
          }}
        }}

        notify "hook" {{
          kind = "webhook"
          url  = secret("OPS_WEBHOOK")
          on   = [success]
        }}

        notify "pager" {{
          kind    = "command"
          command = ["sh", "-c", "echo rejected $0 >&2; touch paged; exit 3", secret("PAGER_TOKEN")]
          on      = [success]
        }}
    """)
    )
    state = workdir / "state.db"
    env = {
        **os.environ,
        **secrets,
        "TIDEFLOW_STATE": f"sqlite:///{state}",
        # every logger at its chattiest: redaction must hold without the quiet
        "TIDEFLOW_LOG": "debug,"
        + ",".join(f"tideflow.{name}=debug" for name in ("worker", "executor", "plugins")),
    }
    output_path = tmp_path / "orchestrator.out"
    try:
        with output_path.open("w") as output:
            orchestrator = subprocess.Popen(
                [sys.executable, "-m", "tideflow", "run", str(flow), "--no-live"],
                cwd=workdir,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until(hook_received.is_set, 120, "the webhook was called")
                wait_until((workdir / "paged").exists, 60, "the command notifier ran")
                for topic in ("events", "orders"):
                    wait_until(
                        (workdir / f"handled-{topic}").exists, 120, f"a message of {topic} handled"
                    )
            finally:
                orchestrator.send_signal(signal.SIGTERM)
                orchestrator.wait(timeout=120)
    finally:
        nats.stop()
    text = output_path.read_text(errors="replace")
    assert orchestrator.returncode == 0, text[-5000:]
    with Store.open(f"sqlite:///{state}") as store:
        runs = store.job_runs(job="supply")
        assert any(run.status is RunStatus.SUCCESS for run in runs)
    # the output did carry what the secrets were used for
    assert "[secret]" in text
    files = [path for path in workdir.rglob("*") if path.is_file()]
    assert state in files
    for name, value in secrets.items():
        assert value not in text, f"{name} in the orchestrator's output"
        for path in files:
            if path.name == "leaky.py":
                continue
            assert value.encode() not in path.read_bytes(), f"{name} in {path.name}"


WORKER_CODE = """
import logging, os

def handle(ctx, message):
    secret = os.environ["WORKER_SECRET"]
    print("handler prints", secret)
    print(f"inside a line: {secret}!", flush=True)
    logging.getLogger("kubernetes.client.rest").warning("response for %s", secret)
    ctx.logger.info("handler logs %s", secret)
    open("handled", "w").close()
"""


def test_a_worker_run_by_hand_prints_no_secret(tmp_path: Path) -> None:
    """`tideflow worker` as Kubernetes runs it: its stdout and stderr are the output,
    a handler's `print` included."""
    secret = f"WORKER{uuid.uuid4().hex}"
    (tmp_path / "by_hand.py").write_text(WORKER_CODE)
    flow = tmp_path / "by_hand.flow"
    flow.write_text(
        textwrap.dedent("""
        broker "main" { kind = "embedded" }
        topic "orders" {}
        consumer "workers" {
          consumes = topic.orders
          run      = "by_hand:handle"
          env      = { WORKER_SECRET = secret("WORKER_SECRET") }
        }
    """)
    )
    env = {**os.environ, "WORKER_SECRET": secret, "TIDEFLOW_STATE": str(tmp_path / "state.db")}
    publish = (
        "import asyncio\n"
        "from tideflow.cli.common import load_flow\n"
        "from tideflow.plugins.api import OutgoingMessage\n"
        "from tideflow.runtime.backends import open_topic_broker\n"
        "async def main():\n"
        f"    async with open_topic_broker(load_flow({str(flow)!r}), 'orders') as broker:\n"
        "        await broker.ensure_topic('orders', ['workers'])\n"
        "        await broker.publish('orders', [OutgoingMessage(b'{}')])\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", publish], cwd=tmp_path, env=env, check=True, timeout=60)
    stdout, stderr = tmp_path / "worker.out", tmp_path / "worker.err"
    with stdout.open("w") as out, stderr.open("w") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tideflow", "worker", str(flow), "workers"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
        )
        try:
            wait_until((tmp_path / "handled").exists, 60, "the message was handled")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    output = stdout.read_text() + stderr.read_text()
    assert worker.returncode == 0, output
    assert "handler prints [secret]" in output
    assert "inside a line: [secret]!" in output
    assert "response for [secret]" in output
    assert "handler logs [secret]" in output
    assert secret not in output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path.name
