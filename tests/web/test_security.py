"""Who may look and act: the token, the login cookie, CSRF, the host check, binding."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tideflow.cli.serve import serve_command
from tideflow.web import UnsafeBindError, check_bind
from tideflow.web.security import SESSION_COOKIE, is_loopback, safe_next

from .conftest import State, make_client

TOKEN = "correct-horse-battery-staple"


@pytest.fixture
def guarded(state: State) -> TestClient:
    return make_client(state.url, token=TOKEN)


def test_without_the_token_the_api_answers_401_and_pages_send_to_login(
    guarded: TestClient,
) -> None:
    for path in ("/api/overview", "/api/flows/shop", "/metrics", "/openapi.json"):
        response = guarded.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    page = guarded.get("/flows/shop?window=7d", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fflows%2Fshop%3Fwindow%3D7d"
    wrong = guarded.get("/api/overview", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    # the login form and its stylesheet need no token
    assert guarded.get("/login").status_code == 200
    assert guarded.get("/static/style.css").status_code == 200


def test_a_bearer_token_opens_everything_and_needs_no_csrf(guarded: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/api/overview", "/", "/metrics", "/openapi.json"):
        assert guarded.get(path, headers=auth).status_code == 200, path
    # a browser never adds this header to a cross-site request: no CSRF token needed
    response = guarded.post("/api/flows/shop/jobs/extract/trigger", headers=auth)
    assert response.status_code == 202


def test_login_sets_a_session_cookie_that_is_not_the_token(guarded: TestClient) -> None:
    form = guarded.get("/login?next=/consumers")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    bad = guarded.post("/login", data={"csrf_token": csrf.group(1), "token": "guess"})
    assert bad.status_code == 401 and "not the dashboard&#39;s token" in bad.text
    assert "guess" not in bad.text
    good = guarded.post(
        "/login",
        data={"csrf_token": csrf.group(1), "token": TOKEN, "next": "/consumers"},
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/consumers"
    session = guarded.cookies[SESSION_COOKIE]
    assert TOKEN not in session
    assert guarded.get("/").status_code == 200
    assert guarded.get("/api/overview").status_code == 200
    # the cookie alone does not authorise an action: the CSRF token must come along
    assert guarded.post("/api/flows/shop/jobs/extract/trigger").status_code == 403
    headers = {"X-CSRF-Token": guarded.cookies["tideflow_csrf"]}
    assert guarded.post("/api/flows/shop/jobs/extract/trigger", headers=headers).status_code == 202
    out = guarded.post("/logout", data={"csrf_token": headers["X-CSRF-Token"]})
    assert out.url.path == "/login"
    assert guarded.get("/api/overview").status_code == 401


def test_login_needs_the_csrf_token_too(guarded: TestClient) -> None:
    guarded.get("/login")
    response = guarded.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert response.status_code == 403
    assert SESSION_COOKIE not in guarded.cookies


def test_without_a_token_only_loopback_host_names_are_answered(state: State) -> None:
    with make_client(state.url) as client:
        assert client.get("/api/overview").status_code == 200
        rebound = client.get("/api/overview", headers={"Host": "evil.example:8765"})
        assert rebound.status_code == 400
        assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_pages_carry_security_headers(state: State) -> None:
    with make_client(state.url) as client:
        response = client.get("/")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("tideflow_csrf=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # a stylesheet fetched beside the page never replaces the page's token
    with make_client(state.url) as client:
        assert "set-cookie" not in client.get("/static/style.css").headers


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/flows/x", "/flows/x"),
        ("//evil.example/", "/"),
        ("https://evil.example", "/"),
        ("/\\evil", "/"),
        (None, "/"),
    ],
)
def test_after_login_only_local_paths_are_followed(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_binding_beyond_the_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, None)
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        assert not is_loopback(host)
        with pytest.raises(UnsafeBindError, match="without a token"):
            check_bind(host, None)
        check_bind(host, "a-token")


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"TIDEFLOW_UI_TOKEN": ""}
    state = f"sqlite:///{tmp_path / 'state.db'}"
    result = runner.invoke(serve_command, ["--host", "0.0.0.0", "--state", state], env=env)
    assert result.exit_code == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without a token" in result.output
    assert "--token" in result.output
    assert not (tmp_path / "state.db").exists()  # refused before opening anything


def test_serve_runs_the_dashboard_on_a_free_loopback_port(tmp_path: Path) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    code = "from tideflow.cli.serve import serve_command; serve_command()"
    with subprocess.Popen(
        [sys.executable, "-c", code, "--state", state, "--port", "0", "--timezone", "UTC"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIDEFLOW_UI_TOKEN": ""},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            assert found, line
            url = f"http://127.0.0.1:{found.group(1)}/api/overview"
            deadline = time.monotonic() + 10
            while True:
                try:
                    response = httpx.get(url, timeout=2)
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "the dashboard never answered"
                    time.sleep(0.05)
            assert response.status_code == 200 and response.json()["flows"] == []
        finally:
            process.terminate()
            process.wait(10)


def test_serve_explains_an_unknown_zone(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        serve_command,
        ["--state", f"sqlite:///{tmp_path / 'state.db'}", "--timezone", "Mars/Olympus"],
        env={"TIDEFLOW_UI_TOKEN": ""},
    )
    assert result.exit_code == 2
    assert "unknown time zone `Mars/Olympus`" in result.output
