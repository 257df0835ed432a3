"""The HTML pages: server-rendered Jinja2 templates over the same answers as the API.

Each page handler calls the `Dashboard` method its API endpoint calls and hands
the result to a template; the only extra work here is layout (the month grid,
the charts). Actions are forms that POST, then redirect back (303).
"""

from __future__ import annotations

import calendar
import hmac
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from importlib import resources
from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from tideflow.runtime.schedule import end_of_month

from .api import Board, RunId, requester
from .charts import scaling_chart
from .display import STATUS_ORDER, Display
from .flowgraph import GraphUnavailable
from .models import UpcomingDayEntry, Window
from .security import SESSION_COOKIE, check_csrf, form_fields, safe_next, session_value
from .service import WINDOWS, InvalidRequestError

__all__ = ["make_templates", "render", "router"]

MAX_DAY_ENTRIES: Final = 4  # per calendar cell; the rest is summed up as "+N more"
MAX_OUTPUT_SHOWN: Final = 200_000  # characters of stdout/stderr on the run page


def make_templates(display: Display) -> Jinja2Templates:
    folder = resources.files("tideflow.web").joinpath("templates")
    templates = Jinja2Templates(directory=str(folder))
    templates.env.filters.update(display.filters())
    templates.env.globals.update(
        windows=list(WINDOWS), status_order=STATUS_ORDER, zone_name=display.zone_name
    )
    return templates


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    state = request.state
    context.setdefault("refresh", None)
    return templates.TemplateResponse(
        request,
        template,
        {
            "csrf_token": getattr(state, "csrf", ""),
            "auth_required": getattr(state, "auth_required", False),
            "signed_in": getattr(state, "auth", None) in ("cookie", "bearer"),
            **context,
        },
        status_code=status_code,
    )


router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


# --- pages -----------------------------------------------------------------------------


@router.get("/")
def overview_page(request: Request, board: Board, window: Window = "1h") -> Response:
    view = board.overview(window)
    return render(
        request,
        "overview.html",
        nav="overview",
        view=view,
        refresh=request.app.state.refresh_seconds,
    )


@router.get("/flows/{flow}")
def flow_page(
    request: Request,
    board: Board,
    flow: str,
    window: Window = "24h",
    requested: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    view = board.flow(flow, window)
    graph, graph_problem = None, board.flow_problem(flow)
    if graph_problem is None:
        try:
            graph = Markup(board.flow_graph(flow))  # graphviz escapes the flow's text
        except GraphUnavailable as exc:
            graph_problem = str(exc)
    return render(
        request,
        "flow.html",
        nav="overview",
        view=view,
        window=window,
        graph=graph,
        graph_problem=graph_problem,
        requested=requested,
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, board: Board, run_id: RunId, cancel: str | None = None) -> Response:
    view = board.run(run_id)
    return render(
        request,
        "run.html",
        nav="overview",
        view=view,
        cancel_sent=cancel == "requested",
        max_output=MAX_OUTPUT_SHOWN,
    )


@dataclass(frozen=True, slots=True)
class _Cell:
    day: date | None
    entries: list[UpcomingDayEntry]
    more: int
    total: int
    exact: bool
    past: bool
    today: bool


@router.get("/upcoming")
def upcoming_page(
    request: Request,
    board: Board,
    flow: str | None = None,
    month: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None,
) -> Response:
    display: Display = request.app.state.display
    zone_name = _zone_key(board.upcoming_zone(flow))
    if zone_name != display.zone_name:  # the schedules' wall clock, not the server's
        display = Display(zone_name, board.now)
    now = board.now()
    today = display.local(now).date()
    first = today.replace(day=1)
    if month is not None:
        year, number = (int(part) for part in month.split("-"))
        if not 1 <= number <= 12 or year < today.year - 1 or year > today.year + 5:
            raise InvalidRequestError(f"month {month} is out of range")
        first = date(year, number, 1)
    month_start = datetime.combine(first, time.min, tzinfo=display.zone).astimezone(UTC)
    start = max(now, month_start)
    until = end_of_month(month_start, display.zone)
    view = board.upcoming(flow=flow, start=min(start, until), until=until, limit=20)
    by_day = {entry.day: entry.entries for entry in view.days}
    weeks: list[list[_Cell]] = []
    for week in calendar.Calendar(firstweekday=0).monthdatescalendar(first.year, first.month):
        row = []
        for day in week:
            if day.month != first.month:
                row.append(_Cell(None, [], 0, 0, True, False, False))
                continue
            entries = by_day.get(day, [])
            row.append(
                _Cell(
                    day=day,
                    entries=entries[:MAX_DAY_ENTRIES],
                    more=max(0, len(entries) - MAX_DAY_ENTRIES),
                    total=sum(e.count for e in entries),
                    exact=all(e.exact for e in entries),
                    past=day < today,
                    today=day == today,
                )
            )
        weeks.append(row)
    previous = (first - timedelta(days=1)).replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return render(
        request,
        "upcoming.html",
        nav="upcoming",
        view=view,
        weeks=weeks,
        month_label=f"{calendar.month_name[first.month]} {first.year}",
        previous=previous.strftime("%Y-%m") if previous >= today.replace(day=1) else None,
        following=following.strftime("%Y-%m"),
        flow=flow,
        flows=board.flow_names(),
        shown=display,
        zone_name=display.zone_name,  # the footer's "Times in ..."
    )


def _zone_key(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


@router.get("/consumers")
def consumers_page(
    request: Request, board: Board, flow: str | None = None, window: Window = "1h"
) -> Response:
    display: Display = request.app.state.display
    view = board.consumers(flow=flow, window=window)
    charts = {
        (c.flow, c.consumer): Markup(
            scaling_chart(
                c.history,
                start=view.now - WINDOWS[window],
                end=view.now,
                zone=display.zone,
                max_instances=c.scale.max if c.scale else None,
            )
        )
        for c in view.consumers
    }
    return render(
        request,
        "consumers.html",
        nav="consumers",
        view=view,
        charts=charts,
        flow=flow,
        refresh=request.app.state.refresh_seconds,
    )


# --- actions ---------------------------------------------------------------------------


@router.post("/flows/{flow}/jobs/{job}/trigger", dependencies=[Depends(check_csrf)])
def trigger_action(request: Request, board: Board, flow: str, job: str) -> Response:
    accepted = board.trigger(flow, job, requested_by=requester(request))
    return RedirectResponse(
        f"/flows/{quote(flow, safe='')}?requested={accepted.request_id}#requests", status_code=303
    )


@router.post("/runs/{run_id}/retry", dependencies=[Depends(check_csrf)])
def retry_action(request: Request, board: Board, run_id: RunId) -> Response:
    accepted = board.retry(run_id, requested_by=requester(request))
    return RedirectResponse(
        f"/flows/{quote(accepted.flow, safe='')}?requested={accepted.request_id}#requests",
        status_code=303,
    )


@router.post("/runs/{run_id}/cancel", dependencies=[Depends(check_csrf)])
def cancel_action(board: Board, run_id: RunId) -> Response:
    board.cancel(run_id)
    return RedirectResponse(f"/runs/{run_id}?cancel=requested", status_code=303)


# --- signing in ------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if request.app.state.token is None:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", nav=None, next=safe_next(next), problem=None)


@router.post("/login", dependencies=[Depends(check_csrf)])
async def login_action(request: Request) -> Response:
    token: str | None = request.app.state.token
    if token is None:
        return RedirectResponse("/", status_code=303)
    fields = await form_fields(request)
    target = safe_next(fields.get("next"))
    given = fields.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return render(
            request,
            "login.html",
            status_code=401,
            nav=None,
            next=target,
            problem="that is not the dashboard's token",
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, session_value(token), httponly=True, samesite="lax", path="/"
    )
    return response


@router.post("/logout", dependencies=[Depends(check_csrf)])
def logout_action() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
