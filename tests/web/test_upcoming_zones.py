"""Which zone the Upcoming page and /api/upcoming count days in.

Issue 11: with the server in UTC, a 22:00 New York month-end run on Dec 31 showed
on Jan 1, so "what runs at the end of the month" got the wrong answer unless
`serve --timezone` was given. Without --timezone the days follow the schedules'
zone (labelled); with it, the operator's zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tideflow.compiler import compile_source
from tideflow.compiler.irjson import to_json
from tideflow.runtime.store import Store

from tideflow.web import create_app

NOW = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)

MONTH_END = """flow "etl" {}
job "close_books" {
  schedule = cron("0 22 31 12 *", timezone = "America/New_York")
  run      = "etl.jobs:close"
}
"""

TWO_ZONES = (
    MONTH_END
    + """job "lisbon_report" {
  schedule = cron("0 9 * * *", timezone = "Europe/Lisbon")
  run      = "etl.jobs:report"
}
"""
)


def store_with(tmp_path: Path, source: str) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    result = compile_source(source, "etl.flow")
    assert result.ir is not None, result.diagnostics
    with Store.open(url) as store:
        store.save_flow("etl", source, to_json(result.ir))
    return url


@pytest.fixture
def server_in_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")


def client(url: str, **options: Any) -> Iterator[TestClient]:
    app = create_app(url, token=None, refresh_seconds=None, now=lambda: NOW, **options)
    with TestClient(app, base_url="http://127.0.0.1") as opened:
        yield opened


def days(view: dict[str, Any]) -> dict[str, list[str]]:
    return {day["day"]: [e["job"] for e in day["entries"]] for day in view["days"]}


def test_a_new_york_month_end_run_is_on_dec_31_without_a_chosen_zone(
    tmp_path: Path, server_in_utc: None
) -> None:
    url = store_with(tmp_path, MONTH_END)
    for opened in client(url):
        view = opened.get("/api/upcoming", params={"flow": "etl"}).json()
        assert view["timezone"] == "America/New_York"
        assert days(view) == {"2026-12-31": ["close_books"]}  # now to the end of December
        page = opened.get("/upcoming", params={"month": "2026-12", "flow": "etl"})
        assert page.status_code == 200
        assert "Days and times in America/New_York" in page.text
        assert "Times in America/New_York" in page.text  # the footer agrees
        assert '<span class="time">22:00</span> close_books' in page.text
        every_flow = opened.get("/api/upcoming").json()  # one zone among all the schedules
        assert every_flow["timezone"] == "America/New_York"


def test_schedules_in_several_zones_use_the_flows_zone(tmp_path: Path, server_in_utc: None) -> None:
    url = store_with(
        tmp_path, TWO_ZONES.replace('flow "etl" {}', 'flow "etl" { timezone = "Asia/Tokyo" }')
    )
    for opened in client(url):
        assert opened.get("/api/upcoming", params={"flow": "etl"}).json()["timezone"] == (
            "Asia/Tokyo"
        )
        assert opened.get("/api/upcoming").json()["timezone"] == "UTC"  # the server's


def test_a_zone_chosen_with_serve_timezone_wins(tmp_path: Path) -> None:
    url = store_with(tmp_path, MONTH_END)
    for opened in client(url, timezone="UTC"):
        view = opened.get("/api/upcoming", params={"flow": "etl"}).json()
        assert view["timezone"] == "UTC"
        assert days(view) == {}  # 03:00 UTC on Jan 1: past the end of December there
        page = opened.get("/upcoming", params={"month": "2027-01", "flow": "etl"})
        assert "Days and times in UTC" in page.text
