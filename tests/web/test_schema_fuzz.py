"""schemathesis against the OpenAPI spec: no generated request makes the API fail (5xx),
and every answer matches its declared status codes, content type and schema."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tideflow.web import api, create_app

from .conftest import History, copy_history

CSRF = "fuzzing-csrf-token-0123456789abcdef"
OPERATIONS = sorted(
    (route.path, method)
    for route in api.router.routes
    if isinstance(route, APIRoute)
    for method in route.methods
)


@pytest.fixture(scope="module")
def fuzzed_schema(recorded_history: History, tmp_path_factory: pytest.TempPathFactory) -> Any:
    url = copy_history(recorded_history, tmp_path_factory.mktemp("fuzz"))
    # the ASGI client names a host of its own; the host check has tests of its own
    app = create_app(url, token=None, timezone="UTC", refresh_seconds=None, allowed_hosts=["*"])
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_generated_request_makes_the_api_fail(
    fuzzed_schema: Any, path: str, method: str
) -> None:
    operation = fuzzed_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def check(case: schemathesis.Case) -> None:
        # the CSRF pair lets generated actions reach the code behind them
        case.call_and_validate(
            headers={"X-CSRF-Token": CSRF, "Cookie": f"tideflow_csrf={CSRF}"},
            checks=[
                schemathesis.checks.not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ],
        )

    check()
