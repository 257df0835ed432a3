"""The JSON API under /api/: every answer the pages show, and the three actions.

Times in query parameters are ISO 8601; one without a zone is taken as UTC.
Actions are POSTs that need the CSRF double-submit token (or the bearer token).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response

from tideflow.runtime.model import RunStatus

from .flowgraph import GraphUnavailable
from .models import (
    CancelAccepted,
    Consumers,
    FlowDetail,
    FlowSummary,
    JobRunSummary,
    Overview,
    Problem,
    RunDetail,
    SchedulerStatus,
    TriggerAccepted,
    TriggerBody,
    TriggerRequestInfo,
    Upcoming,
    Window,
)
from .security import check_csrf
from .service import Dashboard, InvalidRequestError

__all__ = ["Board", "RunId", "as_utc", "dashboard", "requester", "router"]

# SQLite and PostgreSQL integers are 64-bit: a larger id cannot name a row
MAX_ID: Final = 2**63 - 1
_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    404: {"model": Problem, "description": "no such flow, job or run"},
}
_BAD_REQUEST: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": Problem, "description": "the question cannot be answered as asked"},
}
_ACTION_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    **_ERRORS,
    403: {"model": Problem, "description": "missing or mismatched CSRF token"},
    409: {"model": Problem, "description": "the action does not apply in the current state"},
}

RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="a job run's id")]


def dashboard(request: Request) -> Dashboard:
    board: Dashboard = request.app.state.dashboard
    return board


Board = Annotated[Dashboard, Depends(dashboard)]


def requester(request: Request) -> str:
    """Who asked, as recorded with a trigger request."""
    client = request.client.host if request.client else "unknown"
    return f"dashboard ({client})"


def as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


router = APIRouter(prefix="/api", responses=_ERRORS)


@router.get("/overview", response_model=Overview, summary="Flows, status counts, failures")
def get_overview(board: Board, window: Window = "1h") -> Overview:
    """Every flow with its job runs counted by status over `window` (failing flows
    first), recent failures with their error, what runs now, pending trigger
    requests, and whether the scheduler ticks."""
    return board.overview(window)


@router.get("/flows", response_model=list[FlowSummary], summary="Flows")
def get_flows(board: Board, window: Window = "1h") -> list[FlowSummary]:
    return board.overview(window).flows


@router.get("/flows/{flow}", response_model=FlowDetail, summary="A flow and its jobs")
def get_flow(board: Board, flow: str, window: Window = "24h") -> FlowDetail:
    """The flow's jobs (last run, next scheduled run, counts over `window`), consumers,
    recent runs and pending trigger requests."""
    return board.flow(flow, window)


@router.get("/flows/{flow}/ir", summary="The flow's IR document")
def get_flow_ir(board: Board, flow: str) -> dict[str, Any]:
    """The compiled flow as stored (`tideflow compile`'s JSON); secret() and env() are
    references in it, never values."""
    return board.flow_ir(flow)


@router.get(
    "/flows/{flow}/graph.svg",
    summary="The flow's picture",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}}},
        409: {"model": Problem, "description": "the flow's IR cannot be read"},
        503: {"model": Problem, "description": "graphviz is not installed"},
    },
)
def get_flow_graph(board: Board, flow: str) -> Response:
    try:
        svg = board.flow_graph(flow)
    except GraphUnavailable as exc:
        return Response(
            json.dumps({"detail": str(exc)}), status_code=503, media_type="application/json"
        )
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n{svg}', media_type="image/svg+xml")


@router.get("/runs", response_model=list[JobRunSummary], summary="Job runs, newest first")
def get_runs(
    board: Board,
    flow: str | None = None,
    job: str | None = None,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    window: Window | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[JobRunSummary]:
    return board.runs(flow=flow, job=job, status=status or (), window=window, limit=limit)


@router.get("/runs/{run_id}", response_model=RunDetail, summary="A job run in full")
def get_run(board: Board, run_id: RunId) -> RunDetail:
    """The run, its flow run and sibling job runs, every attempt with its timings,
    output, log lines and (for a failure) the exception and traceback."""
    return board.run(run_id)


@router.get(
    "/upcoming", response_model=Upcoming, responses=_BAD_REQUEST, summary="Scheduled instants"
)
def get_upcoming(
    board: Board,
    flow: str | None = None,
    start: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=0, le=5000)] = 200,
) -> Upcoming:
    """Scheduled instants in [start, until] (default: now to the end of the month in
    the dashboard's zone), counted per job and per day; the first `limit` listed."""
    try:
        return board.upcoming(flow=flow, start=as_utc(start), until=as_utc(until), limit=limit)
    except OverflowError:
        raise InvalidRequestError("the window is outside the supported dates") from None


@router.get("/consumers", response_model=Consumers, summary="Consumers and autoscaling")
def get_consumers(board: Board, flow: str | None = None, window: Window = "1h") -> Consumers:
    """Each consumer's instances, backlog per partition, balance, the autoscaler's
    recent decisions with their arithmetic, and the history over `window`."""
    return board.consumers(flow=flow, window=window)


@router.get("/requests", response_model=list[TriggerRequestInfo], summary="Trigger requests")
def get_requests(
    board: Board,
    flow: str | None = None,
    pending: bool = True,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[TriggerRequestInfo]:
    """Manual and retry requests, newest first (`pending`: those no orchestrator took yet)."""
    return board.trigger_requests(flow=flow, pending_only=pending, limit=limit)


@router.get("/scheduler", response_model=SchedulerStatus, summary="Orchestrators' heartbeats")
def get_scheduler(board: Board) -> SchedulerStatus:
    return board.scheduler()


@router.post(
    "/flows/{flow}/jobs/{job}/trigger",
    response_model=TriggerAccepted,
    status_code=202,
    responses={**_ACTION_ERRORS, **_BAD_REQUEST},
    dependencies=[Depends(check_csrf)],
    summary="Run a job now",
)
def post_trigger(
    board: Board,
    request: Request,
    flow: str,
    job: str,
    body: Annotated[TriggerBody | None, Body()] = None,
) -> TriggerAccepted:
    """Ask the orchestrator running the flow to start the job (and what follows it)
    with `params`; answers with the request's id at once."""
    params = body.params if body is not None else {}
    if "\\u0000" in json.dumps(params):
        raise InvalidRequestError("params may not contain NUL characters")
    return board.trigger(flow, job, params, requested_by=requester(request))


@router.post(
    "/runs/{run_id}/cancel",
    response_model=CancelAccepted,
    status_code=202,
    responses=_ACTION_ERRORS,
    dependencies=[Depends(check_csrf)],
    summary="Cancel a job run",
)
def post_cancel(board: Board, run_id: RunId) -> CancelAccepted:
    return board.cancel(run_id)


@router.post(
    "/runs/{run_id}/retry",
    response_model=TriggerAccepted,
    status_code=202,
    responses=_ACTION_ERRORS,
    dependencies=[Depends(check_csrf)],
    summary="Retry a failed job run",
)
def post_retry(board: Board, request: Request, run_id: RunId) -> TriggerAccepted:
    """Start the run's job again with its flow run's params (trigger `retry`)."""
    return board.retry(run_id, requested_by=requester(request))
