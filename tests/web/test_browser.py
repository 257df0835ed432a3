"""The dashboard in headless Chromium: every page loads, a trigger click becomes a
request and then a run, a failed run shows its traceback, retry and cancel work.

Screenshots go to test-artifacts/screenshots/. Debian's chromium, driven by
Playwright with executable_path (Playwright never downloads a browser here).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from tideflow.compiler import compile_flow
from tideflow.runtime.executor import Executor, RunRequest
from tideflow.runtime.model import RunStatus, TriggerKind
from tideflow.runtime.store import Store

from tideflow.web import create_app
from tideflow.web.app import listening_socket

from .conftest import FLOW_FILE, HERE, SECRET_VALUE, History, copy_history

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = HERE.parent.parent / "test-artifacts" / "screenshots"
TOKEN = "browser-test-token"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


@dataclass(frozen=True, slots=True)
class Served:
    url: str
    state_url: str
    history: History


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port in a thread; its base URL."""
    sock = listening_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    started = threading.Event()

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        started.set()
        await task

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    try:
        assert started.wait(10), "the dashboard did not start"
        assert server.started, "the dashboard did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def served(recorded_history: History, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_url = copy_history(recorded_history, tmp_path_factory.mktemp("browser"))
    app = create_app(state_url, token=None, timezone="UTC", refresh_seconds=None)
    with serving(app) as url:
        yield Served(url, state_url, recorded_history)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_every_page_answers_the_operators_questions(page: Page, served: Served) -> None:
    page.goto(served.url + "/")
    expect(page.get_by_test_id("failed")).to_have_text("1")
    expect(page.locator("table.flows")).to_contain_text("failing")
    expect(page.get_by_role("cell", name="ValueError: bad row 7")).to_be_visible()
    shot(page, "overview")

    page.get_by_role("link", name="shop", exact=True).click()
    expect(page).to_have_url(served.url + "/flows/shop")
    expect(page.locator("svg.flow-graph .job-node.tone-bad")).to_have_count(1)
    expect(page.locator("#job-extract")).to_contain_text('secret("WEB_TEST_SECRET")')
    shot(page, "flow")

    page.goto(served.url + "/upcoming")
    expect(page.get_by_test_id("calendar")).to_contain_text("heartbeat")
    shot(page, "upcoming")

    page.goto(served.url + "/consumers")
    consumer = page.get_by_test_id("consumer")
    expect(consumer.get_by_test_id("alive")).to_contain_text("2")
    expect(consumer.get_by_test_id("why")).to_contain_text("backlog 30 / 100 per instance = 1")
    expect(consumer.locator("svg.chart polyline")).to_have_count(4)  # backlog ×2, steps ×2
    shot(page, "consumers")

    page.goto(f"{served.url}/runs/{served.history.extract}")
    expect(page.get_by_test_id("stdout")).to_contain_text("connecting with token [secret]")
    assert SECRET_VALUE not in page.content()
    shot(page, "run-success")


def test_a_failed_run_shows_its_traceback_and_can_be_retried(page: Page, served: Served) -> None:
    page.goto(served.url + "/")
    page.get_by_role("link", name=f"#{served.history.load}").first.click()
    expect(page).to_have_url(f"{served.url}/runs/{served.history.load}")
    failure = page.get_by_test_id("failure")
    expect(failure).to_contain_text("ValueError: bad row 7: price is negative")
    expect(failure).to_contain_text("raised in webjobs._check_row")
    expect(failure).to_contain_text("all 2 attempts failed")
    expect(page.get_by_test_id("traceback")).to_contain_text("in _check_row\n    raise ValueError")
    shot(page, "run-failed")

    page.get_by_test_id("retry").click()
    expect(page).to_have_url(f"{served.url}/flows/shop?requested=1#requests", timeout=5000)
    expect(page.get_by_test_id("notice")).to_contain_text("Trigger request #1 recorded")
    expect(page.get_by_test_id("requests")).to_contain_text("retry")


def test_a_trigger_click_shows_the_request_then_the_run(page: Page, served: Served) -> None:
    page.goto(served.url + "/flows/shop")
    page.get_by_test_id("trigger-heartbeat").click()
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("recorded")
    requests = page.get_by_test_id("requests")
    expect(requests.locator("tr", has_text="heartbeat")).to_contain_text("manual")
    shot(page, "flow-requested")

    # what the orchestrator does with it: claim it, run it, link the run (in a thread of
    # its own: Playwright's sync API holds this thread's event loop)
    with ThreadPoolExecutor(1) as pool:
        flow_run = pool.submit(asyncio.run, _run_requested(served.state_url)).result(60)
    page.reload()
    expect(page.locator("#requests")).not_to_contain_text("heartbeat")
    row = page.locator("#job-heartbeat")
    expect(row).to_contain_text("success")
    page.goto(served.url + "/")
    expect(page.locator("table.flows")).to_contain_text("heartbeat")
    with Store.open(served.state_url) as store:
        assert store.flow_run(flow_run) is not None


async def _run_requested(state_url: str) -> int:
    flow = compile_flow(FLOW_FILE).ir
    assert flow is not None
    with Store.open(state_url) as store:
        claimed = store.claim_trigger_requests(["shop"], orchestrator_id=1)
        (request,) = [r for r in claimed if r.job == "heartbeat"]
        async with Executor(flow, store, kill_grace=0.5) as executor:
            flow_run = await executor.submit(
                RunRequest(request.job, request.trigger, None, request.params)
            )
            store.link_trigger_request(request.id, flow_run)
            assert await executor.wait(flow_run) is RunStatus.SUCCESS
    return flow_run


def test_cancel_asks_the_orchestrator_to_stop_a_run(page: Page, served: Served) -> None:
    with Store.open(served.state_url) as store:
        run = store.create_flow_run("shop", "extract", TriggerKind.MANUAL)
        (job_run,) = store.create_job_runs(run, "shop", ["extract"], TriggerKind.MANUAL).values()
        store.set_job_run_status(job_run, RunStatus.RUNNING)
    page.goto(f"{served.url}/runs/{job_run}")
    questions: list[str] = []

    def answer(dialog: Dialog) -> None:
        questions.append(dialog.message)
        # the first time the operator thinks better of it; the second time they confirm
        if len(questions) == 1:
            dialog.dismiss()
        else:
            dialog.accept()

    page.on("dialog", answer)
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("cancel")).to_be_visible()
    with Store.open(served.state_url) as store:
        row = store.job_run(job_run)
    assert row is not None and not row.cancel_requested
    page.get_by_test_id("cancel").click()
    expect(page.get_by_role("status")).to_contain_text("Cancellation requested")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    with Store.open(served.state_url) as store:
        row = store.job_run(job_run)
    assert row is not None and row.cancel_requested
    assert questions == [f"Cancel run #{job_run} (shop · extract)?"] * 2


def test_with_a_token_the_browser_signs_in_first(
    page: Page, served: Served, tmp_path: Path
) -> None:
    app = create_app(served.state_url, token=TOKEN, timezone="UTC", refresh_seconds=None)
    with serving(app) as url:
        page.goto(url + "/consumers")
        expect(page).to_have_url(url + "/login?next=%2Fconsumers")
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not the dashboard's token")
        shot(page, "login")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(url + "/consumers")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(url + "/login")
