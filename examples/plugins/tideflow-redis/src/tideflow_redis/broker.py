"""`RedisBroker`: tideflow topics as Redis Streams, consumers as consumer groups.

- A topic is the stream `<key_prefix><topic>`; each message is one entry with the
  fields `v` (value), `k` (key, when there is one) and `h:<name>` (headers).
- A consumer group is created at the start of the stream (id `0`), so a group
  ensured (or first used) late still receives what was published before it.
- A message a consumer took and neither acknowledged nor gave back within
  `visibility_timeout` is claimed by the next consumer of the group that asks
  (`XAUTOCLAIM`), which raises its delivery count. `nack` and `aclose` make
  messages claimable at once by setting their idle time (`XCLAIM ... IDLE`).
- The backlog of a group is `lag + pending` from `XINFO GROUPS`: entries not yet
  delivered to the group plus entries delivered and not yet acknowledged.

Streams have no partitions: ordering holds per stream, and the broker reports
one partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from tideflow.plugins.api import (
    BackendClosedError,
    BackendContext,
    BackendError,
    BacklogReading,
    Broker,
    DurationType,
    Field,
    Message,
    OutgoingMessage,
    StringType,
)

if TYPE_CHECKING:
    # redis is imported on first use: tideflow imports every plugin to build its
    # catalog, and `tideflow lint` should not pay for a client library it never runs
    import redis.asyncio as aioredis
    from redis.typing import EncodableT, FieldT, StreamIdT
    from tideflow.compiler.ir import TopicNode

__all__ = ["RedisBroker"]

VALUE = b"v"
KEY = b"k"
HEADER = b"h:"
# owner of messages a closing consumer gives back, so that its own entry in the
# group can be deleted without deleting them
RELEASED_CONSUMER = "tideflow-released"
# how often a consumer looks for stuck entries to claim (at most; more often when
# the visibility timeout is shorter): each look is one more round trip
CLAIM_INTERVAL = 1.0
# most messages a closing consumer gives back; the rest wait for visibility_timeout
RELEASE_BATCH = 10_000
# closing never waits longer than this for the server
RELEASE_TIMEOUT = 5.0


def _default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@contextlib.contextmanager
def _redis_errors(action: str) -> Iterator[None]:
    """Turns the client's failures into `BackendError`s that say what failed."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError) as exc:
        raise BackendError(f"redis: cannot {action}: {exc}") from exc


def _is_reply(exc: BaseException, code: str) -> bool:
    """Whether `exc` is the server's error reply `code` (BUSYGROUP, NOGROUP, ...)."""
    from redis.exceptions import ResponseError

    return isinstance(exc, ResponseError) and code in str(exc)


# redis-py types its replies loosely; these read the shapes the commands return
Entry: TypeAlias = tuple[str, dict[bytes, bytes]]  # (entry id, fields)


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XRANGE-shaped reply; deleted ones (no fields) left out."""
    return [(_text(entry_id), dict(fields)) for entry_id, fields in reply or () if fields]


def _delivered(reply: Any) -> dict[str, int]:
    """Entry id -> delivery count, from XPENDING's detailed form."""
    return {_text(p["message_id"]): int(p["times_delivered"]) for p in reply}


class RedisBroker(Broker):
    """Redis Streams: consumer groups, XAUTOCLAIM redelivery, backlog from XINFO GROUPS."""

    name: ClassVar[str] = "redis"
    partitioned: ClassVar[bool] = False
    options: ClassVar[tuple[Field, ...]] = (
        Field(
            "url",
            StringType(secretable=True),
            "Server URL, `redis://[user:password@]host:port/db` (or `rediss://`).",
            required=True,
            example='env("REDIS_URL", "redis://localhost:6379/0")',
        ),
        Field(
            "key_prefix",
            StringType(),
            "Prefix of the stream keys; a topic's stream is `<key_prefix><topic>`.",
            default="tideflow:",
            example='"shop:"',
        ),
        Field(
            "visibility_timeout",
            DurationType(),
            "Time after which a delivered, unacknowledged message goes to another consumer.",
            default=30.0,
            example="30s",
        ),
        Field(
            "consumer_name",
            StringType(),
            "Name of this client in its consumer groups (default: host:pid:random).",
            example='"worker-1"',
        ),
        Field(
            "socket_timeout",
            DurationType(),
            "Longest wait for a reply from the server.",
            default=10.0,
            example="5s",
        ),
    )

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[TopicNode] = (),
        *,
        context: BackendContext | None = None,
    ) -> None:
        super().__init__(config, topics, context=context)
        self.consumer_name: str = self.config.get("consumer_name") or _default_consumer_name()
        self._visibility_ms = max(1, round(float(self.config["visibility_timeout"]) * 1000))
        self._client: aioredis.Redis | None = None
        self._closed = False
        # (stream key, group) -> ids this consumer took and has not settled yet
        self._in_flight: dict[tuple[str, str], set[str]] = {}
        # (stream key, group) -> where the next XAUTOCLAIM scan starts, and when
        self._claim_cursor: dict[tuple[str, str], str] = {}
        self._next_claim: dict[tuple[str, str], float] = {}
        self._claim_interval = min(CLAIM_INTERVAL, self._visibility_ms / 2000)

    # -- plumbing ---------------------------------------------------------------------

    def stream_key(self, topic: str) -> str:
        self.topic(topic)  # refuses topics this broker was not given
        return f"{self.config['key_prefix']}{topic}"

    def _connection(self) -> aioredis.Redis:
        if self._closed:
            raise BackendClosedError("the redis broker is closed")
        if self._client is None:
            # created on first use, inside the running event loop
            timeout = float(self.config["socket_timeout"])
            from redis.asyncio import Redis

            self._client = Redis.from_url(
                str(self.config["url"]),
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=False,
            )
        return self._client

    async def _create_group(self, client: aioredis.Redis, key: str, group: str) -> None:
        try:
            await client.xgroup_create(key, group, id="0", mkstream=True)
        except Exception as exc:
            if not _is_reply(exc, "BUSYGROUP"):
                raise

    # -- the Broker interface ---------------------------------------------------------

    async def ensure_topic(self, topic: str, groups: Sequence[str] = ()) -> None:
        key = self.stream_key(topic)
        client = self._connection()
        with _redis_errors(f"create the groups of stream {key}"):
            for group in groups:
                await self._create_group(client, key, group)

    async def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> None:
        key = self.stream_key(topic)
        client = self._connection()
        if not messages:
            return
        retention = self.topics[topic].retention
        minid = f"{int((time.time() - retention) * 1000)}-0" if retention else None
        with _redis_errors(f"publish to stream {key}"):
            async with client.pipeline(transaction=False) as pipe:
                for message in messages:
                    fields: dict[FieldT, EncodableT] = {VALUE: message.value}
                    if message.key is not None:
                        fields[KEY] = message.key
                    for name, value in message.headers.items():
                        fields[HEADER + name.encode()] = value.encode()
                    pipe.xadd(key, fields, minid=minid, approximate=True)
                await pipe.execute()

    async def consume(
        self, topic: str, group: str, *, max_messages: int = 100, wait: float = 1.0
    ) -> list[Message]:
        key = self.stream_key(topic)
        client = self._connection()
        deadline = time.monotonic() + max(wait, 0.0)
        with _redis_errors(f"read stream {key} for group {group}"):
            while True:
                now = time.monotonic()
                if now >= self._next_claim.get((key, group), 0.0):
                    claimed = await self._claim_stuck(client, key, topic, group, max_messages)
                    # a full batch may leave more to claim: look again next time
                    again = len(claimed) >= max_messages
                    self._next_claim[(key, group)] = now + (0 if again else self._claim_interval)
                    if claimed:
                        return claimed
                left = deadline - time.monotonic()
                block = round(min(left, self._claim_interval) * 1000)
                fresh = await self._read_new(client, key, topic, group, max_messages, block)
                if fresh or time.monotonic() >= deadline:
                    return fresh

    async def _read_new(
        self,
        client: aioredis.Redis,
        key: str,
        topic: str,
        group: str,
        count: int,
        block_ms: int,
    ) -> list[Message]:
        # BLOCK 0 would wait forever: below a millisecond, do not block at all
        block = block_ms if block_ms >= 1 else None
        try:
            reply: Any = await client.xreadgroup(
                group, self.consumer_name, {key: ">"}, count=count, block=block
            )
        except Exception as exc:
            if not _is_reply(exc, "NOGROUP"):
                raise
            await self._create_group(client, key, group)
            return []
        messages = [
            self._message(topic, group, entry, delivery_count=1)
            for _, entries in reply or ()
            for entry in _entries(entries)
        ]
        self._in_flight.setdefault((key, group), set()).update(m.id for m in messages)
        return messages

    async def _claim_stuck(
        self, client: aioredis.Redis, key: str, topic: str, group: str, count: int
    ) -> list[Message]:
        cursor = self._claim_cursor.get((key, group), "0-0")
        try:
            reply: Any = await client.xautoclaim(
                key, group, self.consumer_name, self._visibility_ms, cursor, count=count
            )
        except Exception as exc:
            if not _is_reply(exc, "NOGROUP"):
                raise
            return []
        self._claim_cursor[(key, group)] = _text(reply[0])
        # entries trimmed from the stream come back without fields (or not at all)
        entries = _entries(reply[1])
        if not entries:
            return []
        ids = [entry_id for entry_id, _ in entries]
        counts = await self._delivery_counts(client, key, group, ids)
        messages = [
            self._message(topic, group, entry, delivery_count=counts.get(entry[0], 2))
            for entry in entries
        ]
        self._in_flight.setdefault((key, group), set()).update(ids)
        return messages

    async def _delivery_counts(
        self, client: aioredis.Redis, key: str, group: str, ids: Sequence[str]
    ) -> dict[str, int]:
        """Delivery counts of entries this consumer holds (XPENDING's detail form)."""
        ordered = sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
        held = len(self._in_flight.get((key, group), ()))
        reply: Any = await client.xpending_range(
            key, group, ordered[0], ordered[-1], len(ids) + held, self.consumer_name
        )
        wanted = set(ids)
        return {i: n for i, n in _delivered(reply).items() if i in wanted}

    def _message(
        self,
        topic: str,
        group: str,
        entry: Entry,
        *,
        delivery_count: int,
    ) -> Message:
        entry_id, fields = entry
        headers = {
            name[len(HEADER) :].decode(): value.decode()
            for name, value in fields.items()
            if name.startswith(HEADER)
        }
        return Message(
            topic=topic,
            group=group,
            value=fields.get(VALUE, b""),
            key=fields.get(KEY),
            headers=headers,
            partition=0,
            id=entry_id,
            delivery_count=delivery_count,
        )

    async def ack(self, messages: Sequence[Message]) -> None:
        client = self._connection()
        for (key, group), ids in self._by_group(messages).items():
            with _redis_errors(f"acknowledge on stream {key}"):
                await client.xack(key, group, *ids)
            self._in_flight.get((key, group), set()).difference_update(ids)

    async def nack(self, messages: Sequence[Message], *, delay: float = 0.0) -> None:
        client = self._connection()
        # an entry idle for `visibility_timeout` is claimable; setting its idle time
        # to that minus the delay makes it claimable once the delay has passed
        idle = max(0, self._visibility_ms - round(delay * 1000))
        for (key, group), ids in self._by_group(messages).items():
            with _redis_errors(f"give back messages on stream {key}"):
                claimed: list[StreamIdT] = [*ids]
                await client.xclaim(
                    key, group, self.consumer_name, 0, claimed, idle=idle, justid=True
                )
            self._in_flight.get((key, group), set()).difference_update(ids)
            # this consumer claims them back itself as soon as they are due
            due = time.monotonic() + max(delay, 0.0)
            self._next_claim[(key, group)] = min(self._next_claim.get((key, group), due), due)

    def _by_group(self, messages: Sequence[Message]) -> dict[tuple[str, str], list[str]]:
        grouped: dict[tuple[str, str], list[str]] = {}
        for message in messages:
            grouped.setdefault((self.stream_key(message.topic), message.group), []).append(
                message.id
            )
        return grouped

    async def backlog(self, topic: str, group: str) -> BacklogReading:
        key = self.stream_key(topic)
        client = self._connection()
        with _redis_errors(f"read the backlog of stream {key}"):
            total = await self._group_backlog(client, key, group)
        return BacklogReading(topic, group, total, {0: total}, 1, datetime.now(UTC))

    async def _group_backlog(self, client: aioredis.Redis, key: str, group: str) -> int:
        try:
            groups: Any = await client.xinfo_groups(key)
        except Exception as exc:
            if _is_reply(exc, "no such key"):
                return 0
            raise
        for info in groups:
            if _text(info["name"]) != group:
                continue
            pending = int(info["pending"])
            if info.get("lag") is not None:
                return int(info["lag"]) + pending
            # Redis leaves `lag` unset when entries were deleted from the middle of
            # the stream; count what follows the group's last delivered entry
            return await self._entries_after(client, key, _text(info["last-delivered-id"])) + (
                pending
            )
        # not created yet: it will start at the beginning of the stream
        return int(await client.xlen(key))

    @staticmethod
    async def _entries_after(client: aioredis.Redis, key: str, last_id: str) -> int:
        count, start = 0, f"({last_id}"
        while True:
            chunk: Any = await client.xrange(key, min=start, max="+", count=1000)
            count += len(chunk)
            if len(chunk) < 1000:
                return count
            start = f"({_text(chunk[-1][0])}"

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        from redis.exceptions import RedisError

        try:
            # give back what this consumer holds, so the group need not wait for
            # `visibility_timeout` to pass before another consumer gets it
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._release(client), RELEASE_TIMEOUT)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _release(self, client: aioredis.Redis) -> None:
        for key, group in self._in_flight:
            # what this consumer owns now (another may have claimed some already)
            owned: Any = await client.xpending_range(
                key, group, "-", "+", RELEASE_BATCH, self.consumer_name
            )
            ids: list[StreamIdT] = [*_delivered(owned)]
            if ids:
                await client.xclaim(
                    key, group, RELEASED_CONSUMER, 0, ids, idle=self._visibility_ms, justid=True
                )
            if len(ids) < RELEASE_BATCH:
                # nothing left under this consumer's name: drop the name from the group
                await client.xgroup_delconsumer(key, group, self.consumer_name)
        self._in_flight.clear()
