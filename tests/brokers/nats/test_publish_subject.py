"""A job publishes to a NATS topic whose subjects all have wildcards by naming the
subject (`ctx.publish(..., subject=...)`), through the default publisher and a real
server; without one, the error says how."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tideflow.compiler.ir import TopicNode
from tideflow.plugins.api import SUBJECT_HEADER, BackendError
from tideflow.runtime.context import BrokerPublisher, JobContext

from tideflow.testing import unique_name

from .conftest import make_broker

pytestmark = pytest.mark.integration


def job_context(publisher: BrokerPublisher, topic: str) -> JobContext:
    return JobContext(
        run_id=1,
        flow="shop",
        job="supply",
        attempt=1,
        scheduled_at=None,
        params={},
        logger=logging.getLogger("tideflow.job.supply"),
        env={},
        publishes=(topic,),
        publisher_for=lambda _: publisher,
    )


def test_a_job_publishes_on_the_subject_it_names(nats_url: str) -> None:
    name = unique_name("tf-nats")
    topic = TopicNode(name=name, broker="nats", subjects=(f"{name}.changed.>",))
    publisher = BrokerPublisher(make_broker(nats_url, [topic]))
    try:
        ctx = job_context(publisher, name)
        ctx.publish(name, {"id": 1}, subject=f"{name}.changed.eu", headers={"trace": "t-1"})
        ctx.publish(name, {"id": 2}, subject=f"{name}.changed.us.west")
        ctx.flush()
        ctx.publish(name, {"id": 3})  # no subject: nowhere to go
        with pytest.raises(BackendError, match=r"ctx\.publish\(.*subject=") as caught:
            ctx.flush()
        assert SUBJECT_HEADER in str(caught.value)
    finally:
        publisher.close()

    async def read() -> list[tuple[bytes, dict[str, str]]]:
        async with make_broker(nats_url, [topic]) as reader:
            got = await reader.consume(name, "readers", max_messages=10, wait=5.0)
            await reader.ack(got)
            return [(m.value, dict(m.headers)) for m in got]

    assert asyncio.run(read()) == [
        (b'{"id":1}', {"trace": "t-1", SUBJECT_HEADER: f"{name}.changed.eu"}),
        (b'{"id":2}', {SUBJECT_HEADER: f"{name}.changed.us.west"}),
    ]
