"""`serve()`: the dashboard as a task beside other work in one event loop (`run --ui`)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tideflow.web import UnsafeBindError, create_app, serve
from tideflow.web.app import listening_socket

from .conftest import State

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_serve_answers_while_the_loop_does_other_work_and_stops_on_cancel(
    state: State,
) -> None:
    app = create_app(state.url, token=None, timezone="UTC", refresh_seconds=None)
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    task = asyncio.create_task(serve(app, "127.0.0.1", port, sock=sock))
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    worker = asyncio.create_task(other_work())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(10):
                while True:
                    try:
                        response = await client.get("/api/overview")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.02)
        assert response.status_code == 200
        assert response.json()["flows"][0]["name"] == "shop"
        assert ticks > 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    # the port is released: binding it again works
    listening_socket("127.0.0.1", port).close()
    sock.close()


async def test_serve_refuses_a_public_address_without_a_token(state: State) -> None:
    app = create_app(state.url, token=None, timezone="UTC")
    with pytest.raises(UnsafeBindError):
        await serve(app, "0.0.0.0", 0)
