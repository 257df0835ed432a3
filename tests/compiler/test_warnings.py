"""Warnings W401-W408: reported with the IR still built."""

from __future__ import annotations

import textwrap
from datetime import date

from tideflow.compiler import CompileResult, compile_loaded, compile_source
from tideflow.dsl.diagnostics import Diagnostic, Severity
from tideflow.dsl.loader import load_source

BROKER_TOPIC_CONSUMER = """
broker "b" { kind = "embedded" }
topic "t" {}
job "producer" {
  run       = "m:f"
  publishes = topic.t
}
consumer "w" {
  consumes = topic.t
  run      = "m:g"
}
"""


def check(text: str, today: date | None = None) -> CompileResult:
    loaded = load_source(textwrap.dedent(text).lstrip("\n"), "main.flow")
    return compile_loaded(loaded, today=today)


def warnings(result: CompileResult, code: str) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.code == code]


def one(result: CompileResult, code: str) -> Diagnostic:
    found = warnings(result, code)
    assert len(found) == 1, result.diagnostics
    assert found[0].severity is Severity.WARNING
    return found[0]


def at(diagnostic: Diagnostic) -> tuple[int, int]:
    assert diagnostic.span is not None
    return diagnostic.span.line, diagnostic.span.column


def test_a_clean_flow_has_no_warnings() -> None:
    result = check(BROKER_TOPIC_CONSUMER)
    assert result.diagnostics == ()
    assert result.ir is not None


# --- W401 W402 ---------------------------------------------------------------------------------


def test_w401_schedule_in_a_dst_gap_names_the_next_date() -> None:
    result = check(
        """
        flow "f" { timezone = "America/New_York" }
        job "a" {
          run      = "m:f"
          schedule = cron("30 2 * * *")
        }
        """,
        today=date(2026, 1, 15),
    )
    problem = one(result, "W401")
    assert at(problem) == (4, 19)
    assert problem.message == (
        'cron "30 2 * * *" fires at 02:30, which does not exist in America/New_York '
        "on 2026-03-08 (clocks go forward)"
    )
    assert problem.help == (
        "local times from 02:00 to 03:00 are skipped that day: schedule it outside them, "
        'or in timezone = "UTC"'
    )
    assert result.ir is not None and result.ok


def test_w402_schedule_in_a_dst_overlap() -> None:
    result = check(
        """
        job "a" {
          run      = "m:f"
          timezone = "Europe/Berlin"
          schedule = cron("15 2 * * *")
        }
        """,
        today=date(2026, 4, 1),
    )
    problem = one(result, "W402")
    assert at(problem) == (4, 19)
    assert problem.message == (
        'cron "15 2 * * *" fires at 02:15, which happens twice in Europe/Berlin '
        "on 2026-10-25 (clocks go back)"
    )
    # Berlin's gap (02:00-03:00 on the last sunday of march) is hit too, a year later
    gap = one(result, "W401")
    assert "on 2027-03-28 (clocks go forward)" in gap.message


def test_dst_check_uses_the_zone_of_cron_itself() -> None:
    text = 'job "a" {\n  run = "m:f"\n  schedule = cron("30 2 * * *", timezone = "%s")\n}'
    assert warnings(check(text % "UTC", today=date(2026, 1, 15)), "W401") == []
    gap = one(check(text % "America/Chicago", today=date(2026, 1, 15)), "W401")
    assert "America/Chicago on 2026-03-08" in gap.message


def test_dst_only_on_days_the_schedule_fires() -> None:
    # the US gap of 2026 falls on Sunday March 8: a weekday schedule misses it, and
    # every later gap in the two years checked falls on a Sunday too
    text = (
        'flow "f" { timezone = "America/New_York" }\n'
        'job "a" {\n  run = "m:f"\n  schedule = cron("%s")\n}'
    )
    assert warnings(check(text % "30 2 * * 1-5", today=date(2026, 1, 15)), "W401") == []
    assert len(warnings(check(text % "30 2 * * 0", today=date(2026, 1, 15)), "W401")) == 1
    # day 8 of march matches by day of month
    assert len(warnings(check(text % "30 2 8 3 *", today=date(2026, 1, 15)), "W401")) == 1
    assert warnings(check(text % "30 2 9 3 *", today=date(2026, 1, 15)), "W401") == []


def test_schedules_outside_the_changed_hour_are_quiet() -> None:
    result = check(
        'flow "f" { timezone = "Europe/Lisbon" }\n'
        'job "a" {\n  run = "m:f"\n  schedule = cron("0 3 * * *")\n}\n'
        'job "b" {\n  run = "m:f"\n  schedule = every(1h)\n}',
        today=date(2026, 1, 15),
    )
    assert result.diagnostics == ()


def test_a_six_field_schedule_shows_its_seconds() -> None:
    result = check(
        'flow "f" { timezone = "America/New_York" }\n'
        'job "a" {\n  run = "m:f"\n  schedule = cron("5 2 * * * 30")\n}',
        today=date(2026, 1, 15),
    )
    assert one(result, "W401").message.startswith('cron "5 2 * * * 30" fires at 02:05:30,')


# --- W403 --------------------------------------------------------------------------------------


def test_w403_scale_max_above_the_partitions_of_a_partitioned_broker() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" { partitions = 4 }
        job "p" {
          run       = "m:f"
          publishes = topic.t
        }
        consumer "w" {
          consumes = topic.t
          run      = "m:g"
          scale { max = 12 }
        }
        """
    )
    problem = one(result, "W403")
    assert at(problem) == (10, 17)
    assert (
        problem.message == 'scale `max` (12) of consumer "w" is above the 4 partitions of topic "t"'
    )
    assert problem.help == "set `max = 4`, or give the topic more partitions"


def test_no_w403_for_a_broker_without_partitions() -> None:
    result = check(
        """
        broker "b" {
          kind    = "nats"
          servers = "nats://127.0.0.1:4222"
        }
        topic "t" { partitions = 1 }
        job "p" {
          run       = "m:f"
          publishes = topic.t
        }
        consumer "w" {
          consumes = topic.t
          run      = "m:g"
          scale { max = 12 }
        }
        """
    )
    assert result.diagnostics == ()


# --- W404 W405 ---------------------------------------------------------------------------------


def test_w404_and_w405_topics_nobody_uses() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        job "p" { run = "m:f" }
        """
    )
    published, consumed = one(result, "W404"), one(result, "W405")
    assert (at(published), published.message) == ((2, 1), 'nothing publishes to topic "t"')
    assert (at(consumed), consumed.message) == ((2, 1), 'nothing consumes topic "t"')


def test_a_dead_letter_topic_counts_as_published_to() -> None:
    result = check(
        BROKER_TOPIC_CONSUMER
        + 'topic "dlq" {}\nconsumer "dlq_reader" {\n  consumes = topic.dlq\n  run = "m:h"\n}\n'
    )
    assert warnings(result, "W404") == [
        d for d in result.diagnostics if d.message == 'nothing publishes to topic "dlq"'
    ]
    assert len(warnings(result, "W404")) == 1
    result = check(
        BROKER_TOPIC_CONSUMER.replace('run      = "m:g"', 'run = "m:g"\n  dead_letter = topic.dlq')
        + 'topic "dlq" {}\nconsumer "dlq_reader" {\n  consumes = topic.dlq\n  run = "m:h"\n}\n'
    )
    assert result.diagnostics == ()


def test_a_dead_letter_topic_needs_no_consumer() -> None:
    # people read and replay dead letters; no consumer is expected to drain them
    result = check(
        BROKER_TOPIC_CONSUMER.replace('run      = "m:g"', 'run = "m:g"\n  dead_letter = topic.dlq')
        + 'topic "dlq" {}\n'
    )
    assert result.diagnostics == ()


# --- W406 W407 W408 ----------------------------------------------------------------------------


def test_w406_poll_longer_than_cooldown() -> None:
    result = check(
        BROKER_TOPIC_CONSUMER.replace(
            'run      = "m:g"',
            'run = "m:g"\n  scale {\n    max = 1\n    poll = 2m\n    cooldown = 30s\n  }',
        )
    )
    problem = one(result, "W406")
    assert at(problem) == (12, 5)
    assert (
        problem.message == '`poll` (120s) is longer than `cooldown` (30s) in scale of consumer "w"'
    )


def test_w407_literal_credentials() -> None:
    result = check(
        """
        broker "k" {
          kind          = "kafka"
          bootstrap     = "localhost:9092"
          sasl_password = "hunter2"
        }
        job "a" {
          run    = "m:f"
          env    = { API_TOKEN = "abc", MODE = "fast", DB_PASSWORD = secret("DB_PASSWORD") }
          params = { password = "x" }
        }
        """
    )
    found = [(at(d), d.message, d.help) for d in warnings(result, "W407")]
    assert found == [
        (
            (4, 19),
            '`sasl_password` in broker "k" is a literal credential',
            'read it at run time: `sasl_password = secret("SASL_PASSWORD")`',
        ),
        (
            (8, 26),
            '`API_TOKEN` in `env` of job "a" is a literal credential',
            'read it at run time: `API_TOKEN = secret("API_TOKEN")`',
        ),
        ((9, 25), '`password` in `params` of job "a" is a literal credential', None),
    ]
    # the value itself is never repeated in a message
    assert not any("hunter2" in d.message for d in result.diagnostics)


def test_w407_spares_the_name_of_where_a_credential_is_kept() -> None:
    """`secret_name` names a Kubernetes Secret; it holds no credential itself."""
    result = check(
        """
        job "a" {
          run    = "m:f"
          params = { secret_name = "shop-jobs", token_name = "t", secret = "x" }
        }
        """
    )
    found = [d.message for d in warnings(result, "W407")]
    assert found == ['`secret` in `params` of job "a" is a literal credential']


def test_w408_unused_pool_and_broker() -> None:
    result = check(
        'pool "db" { slots = 2 }\nbroker "b" { kind = "embedded" }\njob "a" { run = "m:f" }'
    )
    found = [(at(d), d.message) for d in warnings(result, "W408")]
    assert found == [((1, 1), 'pool "db" is never used'), ((2, 1), 'broker "b" is never used')]


def test_graph_warnings_wait_until_the_errors_are_fixed() -> None:
    # the pool is unused only because the job that names it is misspelt
    result = check('pool "db" { slots = 2 }\njob "a" {\n  run = "m:f"\n  pool = pool.bd\n}')
    assert [d.code for d in result.diagnostics] == ["E207"]


def test_warnings_do_not_stop_the_ir() -> None:
    result = compile_source('pool "db" { slots = 2 }\njob "a" { run = "m:f" }')
    assert result.ok and result.ir is not None
    assert [d.code for d in result.warnings] == ["W408"]
