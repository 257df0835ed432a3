"""The dashboard application: `create_app` builds it, `serve` runs it beside other work.

`tideflow serve` runs it on its own; `tideflow run FILE --ui` runs `serve()` as a
task of the orchestrator's event loop (it leaves signal handling to its host).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tideflow import __version__
from tideflow.runtime.store import Store, utcnow

from . import api, pages
from .display import Display, local_zone_name
from .flowgraph import GraphCache
from .metrics import StoreCollector
from .security import CsrfError, GuardMiddleware, is_loopback
from .service import ConflictError, Dashboard, InvalidRequestError, NotFoundError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "UnsafeBindError", "check_bind", "create_app", "serve"]

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8765
TOKEN_ENV: Final = "TIDEFLOW_UI_TOKEN"


class UnsafeBindError(Exception):
    """Listening beyond this machine without a token."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen on a non-loopback address without a token."""
    if not is_loopback(host) and not token:
        raise UnsafeBindError(
            f"refusing to serve the dashboard on {host} without a token: anyone who can "
            f"reach it could trigger and cancel runs\n"
            f"  pass --token TOKEN or set {TOKEN_ENV}, or listen on 127.0.0.1 (the default)"
        )


def create_app(
    store_url: str | None,
    *,
    token: str | None,
    store: Store | None = None,
    timezone: str | None = None,
    refresh_seconds: int | None = 15,
    instance_alive_seconds: float = 15.0,
    scheduler_stale_seconds: float = 30.0,
    allowed_hosts: Sequence[str] | None = None,
    now: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The dashboard over the store at `store_url` (or an open `store`, which the app
    then leaves open).

    `token`: required on every request when given. `timezone`: the zone pages show
    times in (default: the server's; the upcoming page then uses the schedules' zone).
    `refresh_seconds`: how often the overview and consumers pages reload (None: never).
    `allowed_hosts`: Host header values accepted (default: the loopback names when
    there is no token, anything otherwise).
    Raises StoreError when the store cannot be opened, ValueError for an unknown zone.
    """
    zone_name = timezone or local_zone_name()
    try:
        zone = UTC if zone_name == "UTC" else zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone `{zone_name}`") from None
    owned = store is None
    opened = store if store is not None else Store.open(store_url)
    board = Dashboard(
        opened,
        zone=zone,
        instance_alive_seconds=instance_alive_seconds,
        scheduler_stale_seconds=scheduler_stale_seconds,
        now=now,
        graphs=GraphCache(),
        schedule_zones=timezone is None,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        StoreCollector(opened, instance_alive_seconds=instance_alive_seconds, now=now)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            opened.close()

    app = FastAPI(
        title="tideflow dashboard",
        version=__version__,
        description="Run history, schedules, consumers and autoscaling of tideflow flows.",
        docs_url=None,  # Swagger UI loads scripts from a CDN; /openapi.json is the spec
        redoc_url=None,
        lifespan=lifespan,
    )
    display = Display(zone_name, now)
    app.state.dashboard = board
    app.state.display = display
    app.state.templates = pages.make_templates(display)
    app.state.token = token or None
    app.state.refresh_seconds = refresh_seconds
    app.state.registry = registry

    app.include_router(api.router)
    app.include_router(pages.router)
    static = resources.files("tideflow.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    _add_error_handlers(app)
    app.add_middleware(GuardMiddleware, token=token or None, allowed_hosts=allowed_hosts)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def answer(request: Request, status: int, detail: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=status)
        return pages.render(
            request, "error.html", status_code=status, nav="error", detail=detail, status=status
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return answer(request, 404, str(exc))

    async def conflict(request: Request, exc: Exception) -> Response:
        return answer(request, 409, str(exc))

    async def invalid(request: Request, exc: Exception) -> Response:
        return answer(request, 400, str(exc))

    async def forbidden(request: Request, exc: Exception) -> Response:
        return answer(request, 403, str(exc))

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": _jsonable(exc.errors())}, status_code=422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ())[1:])}: {error.get('msg', '')}"
            for error in exc.errors()
        )
        return answer(request, 422, problems or "invalid request")

    app.add_exception_handler(NotFoundError, not_found)
    app.add_exception_handler(ConflictError, conflict)
    app.add_exception_handler(InvalidRequestError, invalid)
    app.add_exception_handler(CsrfError, forbidden)
    app.add_exception_handler(RequestValidationError, validation)


def _jsonable(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (which may be large or binary)."""
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


class _HostedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the program it runs in."""

    def install_signal_handlers(self) -> None:  # uvicorn before 0.29
        pass

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # 0.29 and later
        yield


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (port 0: any free port). Raises OSError."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(
    app: FastAPI,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    sock: socket.socket | None = None,
) -> None:
    """Serve `app` until cancelled (then shut down cleanly), inside the running loop.

    Pass `sock` (from `listening_socket`) to serve on a socket bound beforehand.
    Raises UnsafeBindError for a non-loopback `host` when the app has no token.
    """
    check_bind(host, app.state.token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = _HostedServer(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock] if sock is not None else None))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        await task
        raise
