"""The JSON API over a history made by a real run (see conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tideflow.compiler import compile_flow
from tideflow.compiler.irjson import to_json
from tideflow.runtime.model import AttemptStatus, RunStatus, TriggerKind
from tideflow.runtime.schedule import next_fire
from tideflow.runtime.store import Store

from .conftest import FLOW_FILE, SCHEDULED_AT, SECRET_VALUE, State, csrf_headers, make_client


def get(client: TestClient, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- reading ---------------------------------------------------------------------------------


def test_overview_counts_the_real_run_and_puts_the_failing_flow_first(
    client: TestClient, state: State
) -> None:
    with Store.open(state.url) as store:
        # a flow that only succeeds sorts after the failing one despite its name
        run = store.create_flow_run("aaa_fine", "only", TriggerKind.MANUAL)
        (job_run,) = store.create_job_runs(run, "aaa_fine", ["only"], TriggerKind.MANUAL).values()
        store.set_job_run_status(job_run, RunStatus.SUCCESS)
    view = get(client, "/api/overview", window="24h")
    assert view["totals"] == {"success": 2, "failed": 1, "upstream_failed": 1}
    assert [f["name"] for f in view["flows"]] == ["shop", "aaa_fine"]
    shop = view["flows"][0]
    assert shop["health"] == "failing" and shop["failed_in_window"] == 1
    assert {r["job"]: r["status"] for r in shop["last_runs"]} == {
        "extract": "success",
        "load": "failed",
        "report": "upstream_failed",
    }
    (failure,) = view["recent_failures"]
    assert failure["id"] == state.history.load
    assert failure["error"]["type"] == "ValueError"
    assert failure["error"]["function"] == "webjobs._check_row"
    assert failure["attempts"] == 2
    assert view["scheduler"]["alive"] is True


def test_the_window_bounds_the_counts(state: State) -> None:
    later = datetime.now(UTC) + timedelta(hours=2)
    with make_client(state.url, now=lambda: later) as client:
        assert get(client, "/api/overview", window="1h")["totals"] == {}
        assert get(client, "/api/overview", window="24h")["totals"]["failed"] == 1


def test_a_failed_run_answers_which_function_raised_and_how_often(
    client: TestClient, state: State
) -> None:
    detail = get(client, f"/api/runs/{state.history.load}")
    assert detail["run"]["status"] == "failed" and detail["run"]["attempts"] == 2
    assert [a["number"] for a in detail["attempts"]] == [1, 2]
    for attempt in detail["attempts"]:
        assert attempt["status"] == "failed"
        assert attempt["error"]["message"] == "bad row 7: price is negative"
        assert attempt["error"]["location"].endswith("webjobs.py:23")
        assert "in _check_row" in attempt["traceback"]
        assert [line["message"] for line in attempt["logs"]] == ["row 7 looks wrong"]
        assert attempt["duration_seconds"] is not None and attempt["duration_seconds"] >= 0
    assert detail["flow_run"]["root_job"] == "extract"
    assert detail["flow_run"]["scheduled_at"] == SCHEDULED_AT.isoformat().replace("+00:00", "Z")
    assert [s["job"] for s in detail["siblings"]] == ["extract", "load", "report"]
    assert detail["can_retry"] is True and detail["can_cancel"] is False


def test_a_run_that_never_started_says_why(client: TestClient, state: State) -> None:
    detail = get(client, f"/api/runs/{state.history.report}")
    assert detail["run"]["status"] == "upstream_failed"
    assert "`load` failed" in detail["run"]["note"]
    assert detail["attempts"] == []
    assert detail["can_cancel"] is False and detail["can_retry"] is False


def test_runs_filter_by_flow_job_and_status(client: TestClient, state: State) -> None:
    failed = get(client, "/api/runs", flow="shop", status=["failed", "upstream_failed"])
    assert {r["id"] for r in failed} == {state.history.load, state.history.report}
    assert [r["id"] for r in get(client, "/api/runs", job="extract")] == [state.history.extract]
    assert get(client, "/api/runs", flow="elsewhere") == []


def test_secret_values_appear_nowhere(client: TestClient, state: State) -> None:
    extract = get(client, f"/api/runs/{state.history.extract}")
    (attempt,) = extract["attempts"]
    # the job printed the secret: the executor stored a marker, and so it stays
    assert "connecting with token [secret]" in attempt["stdout"]
    flow = get(client, "/api/flows/shop")
    (job,) = [j for j in flow["jobs"] if j["name"] == "extract"]
    assert job["env"] == {"API_TOKEN": 'secret("WEB_TEST_SECRET")'}
    assert get(client, "/api/flows/shop/ir")["nodes"]
    paths = [
        "/",
        "/flows/shop",
        f"/runs/{state.history.extract}",
        f"/runs/{state.history.load}",
        "/upcoming",
        "/consumers",
        "/api/overview",
        "/api/flows/shop",
        "/api/flows/shop/ir",
        f"/api/runs/{state.history.extract}",
        "/metrics",
    ]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert SECRET_VALUE not in response.text, path
    page = client.get("/flows/shop").text
    assert "secret(&#34;WEB_TEST_SECRET&#34;)" in page or 'secret("WEB_TEST_SECRET")' in page
    assert "connecting with token [secret]" in client.get(f"/runs/{state.history.extract}").text


def test_flow_detail_has_each_jobs_last_and_next_run(client: TestClient, state: State) -> None:
    before = datetime.now(UTC)
    flow = get(client, "/api/flows/shop")
    jobs = {j["name"]: j for j in flow["jobs"]}
    assert set(jobs) == {"extract", "heartbeat", "load", "report"}
    assert jobs["extract"]["schedule"] == "cron 0 2 * * * (UTC)"
    assert jobs["heartbeat"]["schedule"] == "every 6h"
    next_extract = datetime.fromisoformat(jobs["extract"]["next_run"])
    assert next_extract == next_fire(_schedule("extract"), before)
    assert jobs["load"]["next_run"] is None
    assert jobs["load"]["retry"] == "2 attempts, 100ms apart"
    assert jobs["load"]["last_run"]["error"]["type"] == "ValueError"
    assert jobs["report"]["counts"] == {"upstream_failed": 1}
    assert flow["consumers"][0]["partitions"] == 4
    assert flow["orchestrator_alive"] is True


def _schedule(job: str) -> Any:
    ir = compile_flow(FLOW_FILE).ir
    assert ir is not None
    return ir.jobs[job].schedule


def test_unknown_names_are_404_with_a_suggestion(client: TestClient) -> None:
    response = client.get("/api/flows/shpo")
    assert response.status_code == 404
    assert response.json()["detail"] == 'no flow "shpo"; did you mean `shop`?'
    assert client.get("/api/runs/999999").status_code == 404
    page = client.get("/flows/nope")
    assert page.status_code == 404 and "no flow" in page.text
    assert "text/html" in page.headers["content-type"]


# --- upcoming --------------------------------------------------------------------------------


def test_upcoming_counts_each_schedule_per_day(client: TestClient) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    until = datetime(2026, 12, 10, 23, 59, tzinfo=UTC)
    view = get(client, "/api/upcoming", start=start.isoformat(), until=until.isoformat(), limit=5)
    jobs = {j["job"]: j for j in view["jobs"]}
    assert jobs["extract"]["count"] == 10 and jobs["extract"]["exact"]
    assert jobs["heartbeat"]["count"] == 40  # 00:00, 06:00, 12:00, 18:00 on 10 days
    assert jobs["extract"]["last"] == "2026-12-10T02:00:00Z"
    assert len(view["days"]) == 10
    assert {e["job"]: e["count"] for e in view["days"][0]["entries"]} == {
        "extract": 1,
        "heartbeat": 4,
    }
    assert [(i["at"], i["job"]) for i in view["instants"]] == [
        ("2026-12-01T00:00:00Z", "heartbeat"),
        ("2026-12-01T02:00:00Z", "extract"),
        ("2026-12-01T06:00:00Z", "heartbeat"),
        ("2026-12-01T12:00:00Z", "heartbeat"),
        ("2026-12-01T18:00:00Z", "heartbeat"),
    ]
    assert view["truncated"] is True


def test_upcoming_defaults_to_the_end_of_the_month(state: State) -> None:
    now = datetime(2026, 2, 27, 12, 0, tzinfo=UTC)
    with make_client(state.url, now=lambda: now, timezone="Europe/Lisbon") as client:
        view = get(client, "/api/upcoming")
    assert view["start"] == "2026-02-27T12:00:00Z"
    assert view["until"] == "2026-02-28T23:59:59.999999Z"
    jobs = {j["job"]: j["count"] for j in view["jobs"]}
    assert jobs == {
        "extract": 1,
        "heartbeat": 6,
    }  # 28 Feb 02:00; 27th 12:00 and 18:00, 4 on the 28th


def test_upcoming_refuses_windows_it_cannot_answer(client: TestClient) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    backwards = client.get(
        "/api/upcoming", params={"start": start.isoformat(), "until": "2025-12-01T00:00:00Z"}
    )
    assert backwards.status_code == 400 and "before" in backwards.json()["detail"]
    too_long = client.get(
        "/api/upcoming", params={"start": start.isoformat(), "until": "2028-01-01T00:00:00Z"}
    )
    assert too_long.status_code == 400


# --- consumers -------------------------------------------------------------------------------


def test_consumers_show_instances_backlog_and_the_autoscalers_reasons(
    client: TestClient,
) -> None:
    (workers,) = get(client, "/api/consumers")["consumers"]
    assert (workers["flow"], workers["consumer"], workers["topic"]) == ("shop", "workers", "orders")
    assert workers["alive"] == 2
    assert {i["id"]: i["alive"] for i in workers["instances"]} == {
        "inst-a": True,
        "inst-b": True,
        "inst-old": False,
    }
    latest = workers["latest"]
    assert latest["backlog"] == 30 and latest["desired"] == 1
    assert latest["explanation"] == "backlog 30 / 100 per instance = 1"
    assert latest["per_partition"] == {"0": 7, "1": 7, "2": 7, "3": 7}
    times = [p["at"] for p in workers["history"]]
    assert times == sorted(times) and len(times) == 10
    assert [p["backlog"] for p in workers["history"]][6] is None  # the failed reading
    assert workers["decisions"][0]["taken_at"] == times[-1]
    assert workers["scale"]["max"] == 4


def test_consumers_show_dead_letters_and_what_instances_logged(
    client: TestClient, state: State
) -> None:
    from tideflow.runtime.model import ConsumerLogLine, DeadLetterRow

    now = datetime.now(UTC)
    with Store.open(state.url) as store:
        store.record_dead_letters(
            [DeadLetterRow("shop", "workers", "inst-a", now, "orders", 2, "17", 5, None, "E: x")]
        )
        store.record_consumer_logs(
            "shop",
            "workers",
            "inst-a",
            [ConsumerLogLine("inst-a", now, "INFO", "handled <b>order</b> [bold]17[/bold]")],
        )
    (workers,) = get(client, "/api/consumers")["consumers"]
    assert (workers["dead_lettered"], workers["dead_lettered_window"]) == (1, 1)
    (dead,) = workers["dead_letters"]
    assert (dead["topic"], dead["partition"], dead["id"], dead["failures"]) == (
        "orders",
        2,
        "17",
        5,
    )
    assert dead["dead_letter_topic"] is None and dead["error"] == "E: x"
    assert [line["message"] for line in workers["log"]] == ["handled <b>order</b> [bold]17[/bold]"]
    page = client.get("/consumers")
    assert page.status_code == 200
    assert "handled &lt;b&gt;order&lt;/b&gt; [bold]17[/bold]" in page.text
    assert 'data-testid="dead-letters"' in page.text and "orders 2:17" in page.text


def test_consumers_filter_by_flow(client: TestClient) -> None:
    assert get(client, "/api/consumers", flow="shop")["consumers"]
    assert client.get("/api/consumers", params={"flow": "nope"}).status_code == 404


# --- actions ---------------------------------------------------------------------------------


def test_trigger_records_a_request_the_orchestrator_can_claim(
    client: TestClient, state: State
) -> None:
    response = client.post(
        "/api/flows/shop/jobs/extract/trigger",
        json={"params": {"day": "2026-11-20"}},
        headers=csrf_headers(client),
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["trigger"] == "manual" and accepted["params"] == {"day": "2026-11-20"}
    (pending,) = get(client, "/api/requests")
    assert pending["id"] == accepted["request_id"] and pending["claimed"] is False
    assert pending["requested_by"] == "dashboard (testclient)"
    with Store.open(state.url) as store:
        (claimed,) = store.claim_trigger_requests(["shop"], orchestrator_id=1)
    assert (claimed.id, claimed.job, claimed.params) == (
        accepted["request_id"],
        "extract",
        {"day": "2026-11-20"},
    )
    assert get(client, "/api/requests") == []


def test_trigger_of_an_unknown_job_suggests_one(client: TestClient) -> None:
    response = client.post("/api/flows/shop/jobs/extrct/trigger", headers=csrf_headers(client))
    assert response.status_code == 404
    assert response.json()["detail"] == 'flow "shop" has no job "extrct"; did you mean `extract`?'


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-CSRF-Token": "not-the-cookie-value-at-all-0123456789"}],
    ids=["missing", "mismatched"],
)
def test_actions_without_the_csrf_token_are_forbidden(
    client: TestClient, state: State, headers: dict[str, str]
) -> None:
    client.get("/")  # the cookie is set, but the request does not echo it
    assert "tideflow_csrf" in client.cookies
    actions = [
        "/api/flows/shop/jobs/extract/trigger",
        f"/api/runs/{state.history.load}/retry",
        f"/api/runs/{state.history.load}/cancel",
        "/flows/shop/jobs/extract/trigger",
        f"/runs/{state.history.load}/retry",
    ]
    for path in actions:
        response = client.post(path, headers=headers)
        assert response.status_code == 403, path
    assert get(client, "/api/requests") == []


def test_retry_asks_for_the_failed_job_again_with_its_params(
    client: TestClient, state: State
) -> None:
    with Store.open(state.url) as store:
        run = store.create_flow_run("shop", "load", TriggerKind.MANUAL, params={"batch": 3})
        (job_run,) = store.create_job_runs(run, "shop", ["load"], TriggerKind.MANUAL).values()
        store.set_job_run_status(job_run, RunStatus.FAILED)
    response = client.post(f"/api/runs/{job_run}/retry", headers=csrf_headers(client))
    assert response.status_code == 202, response.text
    assert response.json()["trigger"] == "retry"
    (pending,) = get(client, "/api/requests")
    assert (pending["job"], pending["trigger"], pending["params"]) == (
        "load",
        "retry",
        {"batch": 3},
    )
    succeeded = client.post(
        f"/api/runs/{state.history.extract}/retry", headers=csrf_headers(client)
    )
    assert succeeded.status_code == 409


def test_cancel_marks_an_unfinished_run_and_refuses_a_finished_one(
    client: TestClient, state: State
) -> None:
    with Store.open(state.url) as store:
        run = store.create_flow_run("shop", "extract", TriggerKind.MANUAL)
        (job_run,) = store.create_job_runs(run, "shop", ["extract"], TriggerKind.MANUAL).values()
    assert get(client, f"/api/runs/{job_run}")["can_cancel"] is True
    response = client.post(f"/api/runs/{job_run}/cancel", headers=csrf_headers(client))
    assert response.status_code == 202 and response.json() == {
        "job_run_id": job_run,
        "requested": True,
    }
    with Store.open(state.url) as store:
        row = store.job_run(job_run)
    assert row is not None and row.cancel_requested
    assert get(client, f"/api/runs/{job_run}")["can_cancel"] is False
    finished = client.post(f"/api/runs/{state.history.load}/cancel", headers=csrf_headers(client))
    assert finished.status_code == 409
    assert "already finished (failed)" in finished.json()["detail"]


def test_page_forms_redirect_back_with_the_request_shown(client: TestClient, state: State) -> None:
    token = csrf_headers(client)["X-CSRF-Token"]
    response = client.post(
        "/flows/shop/jobs/heartbeat/trigger",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    (pending,) = get(client, "/api/requests")
    assert response.headers["location"] == f"/flows/shop?requested={pending['id']}#requests"
    page = client.get(response.headers["location"])
    assert f"Trigger request #{pending['id']} recorded" in page.text


# --- the flow's picture ----------------------------------------------------------------------


def test_the_graph_is_drawn_once_per_ir_and_marks_job_statuses(
    client: TestClient, state: State
) -> None:
    graphs = client.app.state.dashboard.graphs  # type: ignore[attr-defined]
    first = client.get("/api/flows/shop/graph.svg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/svg+xml"
    assert 'class="node job-node tone-bad"' in first.text  # load failed
    assert "job.load (failed)" in first.text
    client.get("/flows/shop")
    assert graphs.drawn == 1
    result = compile_flow(FLOW_FILE)
    assert result.ir is not None
    changed = to_json(result.ir)
    changed["flow"]["description"] = "a new description"
    with Store.open(state.url) as store:
        store.save_flow("shop", str(FLOW_FILE), changed)
    assert "a new description" in client.get("/api/flows/shop/graph.svg").text
    assert graphs.drawn == 2


def test_openapi_describes_every_endpoint(client: TestClient) -> None:
    spec = get(client, "/openapi.json")
    assert set(spec["paths"]) == {
        "/api/overview",
        "/api/flows",
        "/api/flows/{flow}",
        "/api/flows/{flow}/ir",
        "/api/flows/{flow}/graph.svg",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/upcoming",
        "/api/consumers",
        "/api/requests",
        "/api/scheduler",
        "/api/flows/{flow}/jobs/{job}/trigger",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/retry",
    }
    overview = spec["paths"]["/api/overview"]["get"]["responses"]["200"]
    assert overview["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Overview"
    }


def test_without_graphviz_the_flow_page_says_why(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "")
    response = client.get("/api/flows/shop/graph.svg")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("graphviz's `dot` program is not installed")
    page = client.get("/flows/shop")
    assert page.status_code == 200 and "program is not installed" in page.text


def test_the_upcoming_page_moves_by_month(client: TestClient) -> None:
    page = client.get("/upcoming", params={"month": "2030-12", "flow": "shop"})
    assert page.status_code == 200
    assert "December 2030" in page.text
    assert "/upcoming?month=2030-11&amp;flow=shop" in page.text
    assert 'data-testid="calendar"' in page.text and "heartbeat" in page.text
    wrong = client.get("/upcoming", params={"month": "2030-13"})
    assert wrong.status_code == 400 and "out of range" in wrong.text


def test_long_output_is_cut_on_the_page_but_whole_in_the_api(
    client: TestClient, state: State
) -> None:
    with Store.open(state.url) as store:
        run = store.create_flow_run("shop", "report", TriggerKind.MANUAL)
        (job_run,) = store.create_job_runs(run, "shop", ["report"], TriggerKind.MANUAL).values()
        attempt = store.start_attempt(job_run, 1)
        text = "".join(f"line {i}\n" for i in range(40_000))
        store.finish_attempt(
            attempt, AttemptStatus.SUCCESS, stdout=text, job_run_status=RunStatus.SUCCESS
        )
    (detail,) = get(client, f"/api/runs/{job_run}")["attempts"]
    assert detail["stdout"] == text
    page = client.get(f"/runs/{job_run}").text
    assert "line 39999" in page and "line 0\n" not in page
    assert f"the first {len(text) - 200_000:,} characters are not shown here" in page


def test_text_from_the_flow_file_is_escaped_everywhere(client: TestClient, state: State) -> None:
    evil = "<script>alert(1)</script>"
    result = compile_flow(FLOW_FILE)
    assert result.ir is not None
    document = to_json(result.ir)
    document["flow"]["description"] = evil
    for node in document["nodes"]:
        if node["id"] == "job:extract":
            node["record"]["description"] = evil
    with Store.open(state.url) as store:
        store.save_flow("shop", str(FLOW_FILE), document)
        run = store.create_flow_run("shop", "load", TriggerKind.MANUAL, params={"x": evil})
        (job_run,) = store.create_job_runs(run, "shop", ["load"], TriggerKind.MANUAL).values()
        store.set_job_run_status(job_run, RunStatus.SKIPPED, note=evil)
        store.request_trigger("shop", "load", params={"x": evil}, requested_by=evil)
    for path in ("/", "/flows/shop", f"/runs/{job_run}", "/upcoming", "/consumers"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
    assert "&lt;script&gt;" in client.get("/flows/shop").text


def test_a_flow_whose_ir_this_version_cannot_read_is_listed_not_fatal(
    client: TestClient, state: State
) -> None:
    with Store.open(state.url) as store:
        store.save_flow("future", "future.flow", {"format_version": 99, "flow": {}})
    names = [f["name"] for f in get(client, "/api/overview")["flows"]]
    assert "future" in names
    detail = get(client, "/api/flows/future")
    assert detail["jobs"] == []
    page = client.get("/flows/future")
    assert page.status_code == 200 and "newer than this tideflow reads" in page.text
    assert client.get("/api/flows/future/graph.svg").status_code == 409
    trigger = client.post("/api/flows/future/jobs/x/trigger", headers=csrf_headers(client))
    assert trigger.status_code == 409
    assert get(client, "/api/upcoming")["jobs"]  # the other flow's schedules still count


def test_an_empty_history_renders_every_page(tmp_path: Path) -> None:
    with make_client(f"sqlite:///{tmp_path / 'empty.db'}") as client:
        overview = client.get("/")
        assert overview.status_code == 200 and "No flow has run yet" in overview.text
        for path in ("/upcoming", "/consumers", "/api/overview", "/api/consumers", "/metrics"):
            assert client.get(path).status_code == 200, path
        assert "never ran" in client.get("/").text
        assert get(client, "/api/scheduler") == {
            "last_tick": None,
            "alive": False,
            "orchestrators": [],
        }
