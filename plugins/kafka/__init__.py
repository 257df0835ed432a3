"""The `kafka` broker: Apache Kafka, and servers speaking its protocol, through
confluent-kafka (librdkafka).

Clients and threads
    One broker object holds, each made on first use: one idempotent producer, one
    admin client, and one member per (topic, group) it consumes from, a consumer
    of that group. confluent-kafka's synchronous clients are used from threads of
    their own, never blocking the event loop: the producer from one thread, each
    member's consumer from one thread, which fetches up to `PREFETCH` records
    ahead, runs the rebalance callbacks and commits. `consume` takes records from
    that buffer without a thread hop and builds the messages on the event loop.
    librdkafka blocks a consumer call made while another thread runs one of that
    consumer's callbacks, so the event loop never calls a member's consumer: `ack`
    and `nack` update state under a lock. Admin requests return futures, which are
    awaited. The threads are daemons, so that a cluster which stops answering
    cannot keep the process from exiting.

    confluent_kafka.aio (2.16) was measured and not used: `AIOProducer.produce`
    refuses message headers (NotImplementedError), which tideflow messages carry,
    and resolves one asyncio future per message; `AIOConsumer` wraps the same
    synchronous consumer in a thread pool and runs rebalance callbacks as
    coroutines on the event loop while a pool thread waits for them. Figures:
    bench/broker_bench_kafka.py --aio.

Timeouts
    Every wait on the cluster is bounded by `request_timeout`: publish
    acknowledgements, admin requests, commits on revoke and on close (librdkafka's
    `socket.timeout.ms`). A broker that stops answering makes calls raise
    `BackendError` (`backlog` too, which `read_backlog` turns into a failure),
    never hang; `consume` returns what it has after `wait`.

The parts, one module each
    `config`: the options as librdkafka settings; `client`: the library, its
    errors and futures; `producer`: publishing; `member`: consuming,
    acknowledging, committing, nack and redelivery, rebalancing; `ledger`:
    delivery counts; `lag`: the backlog; `broker`: the `Broker` interface over
    them, and its registration.
"""

from __future__ import annotations

from .broker import KafkaBroker, tideflow_register_brokers
from .ledger import LEDGER_LEVELS, ledger_group

__all__ = ["LEDGER_LEVELS", "KafkaBroker", "ledger_group", "tideflow_register_brokers"]
