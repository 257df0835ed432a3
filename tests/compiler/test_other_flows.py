"""`after` may name a job of another flow: `flow.billing.job.close`."""

from __future__ import annotations

from tideflow.compiler import compile_source
from tideflow.compiler.irjson import from_json, to_json


def test_a_job_of_another_flow_is_kept_apart_from_this_flows_jobs() -> None:
    result = compile_source(
        'flow "reports" {}\n'
        'job "prep" { run = "r:prep" }\n'
        'job "monthly" {\n'
        '  run   = "r:monthly"\n'
        "  after = [flow.billing.job.close, job.prep]\n"
        "}\n",
        "reports.flow",
    )
    assert result.ok, result.diagnostics
    assert result.ir is not None
    monthly = result.ir.jobs["monthly"]
    assert monthly.after == ("prep",)
    assert monthly.after_flows == (("billing", "close"),)
    assert from_json(to_json(result.ir)).jobs["monthly"] == monthly


def test_a_malformed_reference_to_another_flow_is_an_error() -> None:
    result = compile_source(
        'job "monthly" {\n  run   = "r:monthly"\n  after = [flow.billing.close]\n}\n',
        "reports.flow",
    )
    (error,) = result.errors
    assert error.code == "E203"
    assert error.span is not None and (error.span.line, error.span.column) == (3, 12)
    assert "found a flow reference" in error.message
