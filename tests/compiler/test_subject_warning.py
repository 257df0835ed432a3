"""W411: a topic whose subjects all have wildcards, on a broker that routes by
subject (NATS), takes only messages that name their subject."""

from __future__ import annotations

import textwrap

import pytest
from tideflow.compiler import CompileResult, compile_loaded
from tideflow.dsl.diagnostics import Diagnostic, Severity
from tideflow.dsl.loader import load_source

NATS = 'broker "nc" {\n  kind = "nats"\n  servers = ["nats://127.0.0.1:4222"]\n}\n'


def check(body: str, broker: str = NATS) -> CompileResult:
    text = broker + textwrap.dedent(body)
    return compile_loaded(load_source(text, "main.flow"))


def w411(result: CompileResult) -> list[Diagnostic]:
    found = [d for d in result.diagnostics if d.code == "W411"]
    assert all(d.severity is Severity.WARNING for d in found)
    return found


def test_a_job_publishing_to_wildcard_subjects_is_told_to_name_one() -> None:
    result = check(
        """
        topic "orders" { subjects = ["nc.orders.changed.>", "nc.orders.*.eu"] }
        job "supply" {
          run       = "shop.jobs:supply"
          publishes = [topic.orders]
        }
        """
    )
    (problem,) = w411(result)
    assert problem.message == (
        'job "supply" publishes to topic "orders", whose subjects all have wildcards '
        "(nc.orders.changed.>, nc.orders.*.eu): each message must name its subject"
    )
    assert problem.span is not None
    assert (problem.span.line, problem.span.column) == (9, 16)  # the reference in `publishes`
    assert problem.help is not None
    assert 'ctx.publish("orders", value, subject="nc.orders.changed.<token>")' in problem.help
    assert [r.message for r in problem.related] == ["every subject has a wildcard"]
    assert result.ir is not None  # a warning: the flow still compiles


def test_publish_stdout_and_dead_letters_cannot_name_a_subject() -> None:
    result = check(
        """
        topic "lines" { subjects = "nc.lines.>" }
        topic "work" {}
        topic "dead" { subjects = ["nc.dead.*"] }
        job "emit" {
          command        = ["printf", "a\\nb\\n"]
          publishes      = topic.lines
          publish_stdout = true
        }
        job "feed" {
          run       = "m:f"
          publishes = topic.work
        }
        consumer "w" {
          consumes    = topic.work
          run         = "m:g"
          dead_letter = topic.dead
        }
        """
    )
    dead, stdout = sorted(w411(result), key=lambda d: d.message)  # "consumer" < "job"
    assert stdout.label == "lines of `publish_stdout` cannot name one: each publish fails"
    assert dead.message == (
        'consumer "w" dead-letters to topic "dead", whose subjects all have wildcards (nc.dead.*)'
    )
    for problem in (stdout, dead):
        assert problem.help == (
            "give the topic a subject without wildcards (the first one is the default)"
        )


@pytest.mark.parametrize(
    "subjects",
    [
        '["nc.orders", "nc.orders.>"]',  # the first literal one is the default
        '"nc.orders.created"',
        '["nc.orders.>x"]',  # `>x` is a token, not a wildcard
    ],
)
def test_a_topic_with_a_literal_subject_needs_nothing(subjects: str) -> None:
    result = check(
        f"""
        topic "orders" {{ subjects = {subjects} }}
        job "supply" {{
          run       = "m:f"
          publishes = topic.orders
        }}
        """
    )
    assert w411(result) == []


def test_brokers_that_do_not_route_by_subject_ignore_subjects() -> None:
    result = check(
        """
        topic "orders" { subjects = ["orders.>"] }
        job "supply" {
          run       = "m:f"
          publishes = topic.orders
        }
        """,
        broker='broker "b" { kind = "embedded" }\n',
    )
    assert w411(result) == []
