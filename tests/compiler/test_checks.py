"""Semantic checks, E201-E217: each code with its exact position, message and help.

Sources are dedented; line 1 is the first line after the opening quotes.
"""

from __future__ import annotations

import textwrap

from tideflow.compiler import CompileResult, compile_source
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.plugins.api import BackendSpec, Catalog, Field, IntType, StringType


def check(text: str, *, catalog: Catalog | None = None) -> CompileResult:
    return compile_source(textwrap.dedent(text).lstrip("\n"), "main.flow", catalog=catalog)


def one(result: CompileResult, code: str) -> Diagnostic:
    found = [d for d in result.diagnostics if d.code == code]
    assert len(found) == 1, result.diagnostics
    return found[0]


def at(diagnostic: Diagnostic) -> tuple[int, int]:
    assert diagnostic.span is not None
    return diagnostic.span.line, diagnostic.span.column


def codes(result: CompileResult) -> list[str]:
    return [d.code for d in result.diagnostics]


# --- E201 E202 --------------------------------------------------------------------------------


def test_e201_unknown_block_type_suggests_a_close_one() -> None:
    result = check('jbo "extract" { run = "m:f" }')
    problem = one(result, "E201")
    assert at(problem) == (1, 1)
    assert problem.message == "unknown block type `jbo`"
    assert problem.help == "did you mean `job`?"
    assert problem.span is not None and problem.span.end_column == 4


def test_e201_without_a_close_match_has_no_help() -> None:
    problem = one(check('widget "x" {}'), "E201")
    assert problem.message == "unknown block type `widget`"
    assert problem.help is None


def test_e202_unknown_attribute_names_the_block_and_suggests() -> None:
    result = check(
        """
        job "extract" {
          run    = "shop.jobs:extract"
          retrys = 3
        }
        """
    )
    problem = one(result, "E202")
    assert at(problem) == (3, 3)
    assert problem.message == 'unknown attribute `retrys` in job "extract"'
    assert problem.help == "did you mean `retry`?"
    assert result.ir is None


def test_e202_unknown_nested_block() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  retyr { attempts = 2 }\n}'), "E202")
    assert at(problem) == (3, 3)
    assert problem.message == 'unknown block `retyr` in job "a"'
    assert problem.help == "did you mean `retry`?"


def test_e202_inside_a_nested_block_names_both_blocks() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  retry { attemps = 2 }\n}'), "E202")
    assert at(problem) == (3, 11)
    assert problem.message == 'unknown attribute `attemps` in retry of job "a"'
    assert problem.help == "did you mean `attempts`?"


def test_e202_nested_written_as_a_map_is_checked_the_same_way() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  retry = { atempts = 2 }\n}'), "E202")
    assert at(problem) == (3, 13)
    assert problem.message == 'unknown attribute `atempts` in retry of job "a"'


def test_e202_backend_options_are_suggested_from_the_backend() -> None:
    result = check('broker "main" {\n  kind = "nats"\n  server = "nats://x"\n}')
    problem = one(result, "E202")
    assert at(problem) == (3, 3)
    assert problem.message == 'unknown attribute `server` in broker "main"'
    assert problem.help == "did you mean `servers`?"


def test_options_of_an_unknown_backend_are_not_reported_as_unknown() -> None:
    result = check('broker "main" {\n  kind = "rabbit"\n  url = "amqp://x"\n}')
    assert codes(result) == ["E211"]


# --- E203 ----------------------------------------------------------------------------------


def test_e203_wrong_type_says_what_was_expected_and_found() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "orders" { partitions = "12" }
        """
    )
    problem = one(result, "E203")
    assert at(problem) == (2, 31)
    assert problem.message == (
        'wrong type for `partitions` in topic "orders": expected integer ≥ 1, found a string'
    )
    assert problem.help == "remove the quotes: `12`"


def test_e203_number_where_a_duration_goes_suggests_a_unit() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  timeout = 30\n}'), "E203")
    assert at(problem) == (3, 13)
    assert problem.message == (
        'wrong type for `timeout` in job "a": expected duration, found an integer'
    )
    assert problem.help == "add a unit: `30s`"


def test_e203_wrong_reference_kind() -> None:
    result = check('job "a" { run = "m:f" }\njob "b" {\n  run = "m:f"\n  after = topic.a\n}')
    problem = one(result, "E203")
    assert at(problem) == (4, 11)
    assert problem.message == (
        'wrong type for `after` in job "b": expected job reference (job.NAME), '
        "found a topic reference"
    )


def test_e203_bare_name_of_a_declared_block_suggests_the_reference() -> None:
    result = check('job "a" { run = "m:f" }\njob "b" {\n  run = "m:f"\n  after = [a]\n}')
    problem = one(result, "E203")
    assert at(problem) == (4, 12)
    assert problem.message == (
        'wrong type for `after` in job "b": expected job reference (job.NAME), found a name'
    )
    assert problem.help == "write `job.a`"


def test_e203_string_naming_a_block_suggests_the_reference() -> None:
    result = check('broker "main" { kind = "embedded" }\ntopic "t" { broker = "main" }')
    problem = one(result, "E203")
    assert at(problem) == (2, 22)
    assert problem.help == "write it as a reference: `broker.main`"


def test_e203_secret_outside_a_secretable_attribute() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  description = secret("X")\n}'), "E203")
    assert at(problem) == (3, 17)
    assert problem.message == (
        'secret() is only allowed in attributes that take it; `description` in job "a" takes string'
    )


def test_e203_block_where_a_value_goes() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  timeout { x = 1 }\n}'), "E203")
    assert at(problem) == (3, 3)
    assert (
        problem.message == 'wrong type for `timeout` in job "a": expected duration, found a block'
    )
    assert problem.help == "write `timeout = 15m`"


def test_e203_list_items_are_checked_one_by_one() -> None:
    result = check('job "a" {\n  command = ["prog", 3, true]\n}')
    found = [d for d in result.diagnostics if d.code == "E203"]
    assert [at(d) for d in found] == [(2, 22), (2, 25)]
    assert [d.message for d in found] == [
        'wrong type for `command` in job "a": expected string, env() or secret(), found an integer',
        'wrong type for `command` in job "a": expected string, env() or secret(), found a boolean',
    ]


def test_e203_bare_word_in_params_suggests_a_string() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  params = { mode = fast }\n}'), "E203")
    assert at(problem) == (3, 21)
    assert problem.message == (
        'wrong type for `mode` in `params` of job "a": expected literal value, found a name'
    )
    assert problem.help == 'write it as a string: "fast"'


# --- E204 ----------------------------------------------------------------------------------


def test_e204_missing_required_attribute_points_at_the_block_head() -> None:
    result = check('pool "db" {\n  description = "x"\n}')
    problem = one(result, "E204")
    assert at(problem) == (1, 1)
    assert problem.span is not None and (problem.span.end_line, problem.span.end_column) == (1, 10)
    assert problem.message == 'missing required attribute `slots` in pool "db"'
    assert problem.help == "add it: `slots = 4`"


def test_e204_required_option_of_the_named_backend() -> None:
    problem = one(check('broker "k" { kind = "kafka" }'), "E204")
    assert at(problem) == (1, 1)
    assert problem.message == 'missing required attribute `bootstrap` in broker "k"'
    assert problem.help == 'add it: `bootstrap = env("KAFKA_BOOTSTRAP", "localhost:9092")`'


def test_e204_missing_inside_a_nested_block_points_at_it() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run      = "m:f"
          scale { min = 1 }
        }
        """
    )
    problem = one(result, "E204")
    assert at(problem) == (6, 3)
    assert problem.message == 'missing required attribute `max` in scale of consumer "w"'


def test_e204_topic_broker_may_be_left_out_only_with_one_broker() -> None:
    assert check('broker "a" { kind = "embedded" }\ntopic "t" {}').ok
    result = check(
        """
        broker "a" { kind = "embedded" }
        broker "b" { kind = "embedded" }
        topic "t" {}
        """
    )
    problem = one(result, "E204")
    assert at(problem) == (3, 1)
    assert problem.message == 'missing required attribute `broker` in topic "t"'
    assert problem.help == (
        "the flow declares 2 brokers (a, b): choose one, such as `broker = broker.a`"
    )


def test_e204_topic_without_any_broker() -> None:
    problem = one(check('topic "t" {}'), "E204")
    assert at(problem) == (1, 1)
    assert problem.help == 'declare one: `broker "main" { kind = "embedded" }`'


# --- E205 E206 -------------------------------------------------------------------------------


def test_e205_duplicate_name_points_back_at_the_first() -> None:
    result = check('job "extract" { run = "m:f" }\n\njob "extract" { run = "m:g" }')
    problem = one(result, "E205")
    assert at(problem) == (3, 1)
    assert problem.message == 'duplicate job "extract"'
    assert [(r.span.line, r.span.column, r.message) for r in problem.related] == [
        (1, 1, "first defined here")
    ]


def test_same_name_in_different_kinds_is_fine() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "orders" {}
        job "orders" {
          run = "m:f"
          publishes = topic.orders
        }
        consumer "orders" {
          consumes = topic.orders
          run = "m:g"
        }
        """
    )
    assert result.ok, result.diagnostics


def test_e206_duplicate_attribute() -> None:
    result = check('job "a" {\n  run = "m:f"\n  run = "m:g"\n}')
    problem = one(result, "E206")
    assert at(problem) == (3, 3)
    assert problem.message == '`run` is set twice in job "a"'
    assert [(r.span.line, r.span.column, r.message) for r in problem.related] == [
        (2, 3, "first set here")
    ]


def test_e206_attribute_and_nested_block_of_the_same_name() -> None:
    result = check(
        'job "a" {\n  run = "m:f"\n  retry = { attempts = 2 }\n  retry { attempts = 3 }\n}'
    )
    problem = one(result, "E206")
    assert at(problem) == (4, 3)
    assert problem.message == '`retry` is set twice in job "a"'


def test_e206_duplicate_map_key() -> None:
    result = check('job "a" {\n  run = "m:f"\n  env = { A = "1", A = "2" }\n}')
    problem = one(result, "E206")
    assert at(problem) == (3, 20)
    assert problem.message == '`A` is set twice in `env` of job "a"'


# --- E207 ------------------------------------------------------------------------------------


def test_e207_undefined_reference_suggests_a_close_name() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "orders" {}
        job "extract" {
          run       = "m:f"
          publishes = topic.ordres
        }
        """
    )
    problem = one(result, "E207")
    assert at(problem) == (5, 15)
    assert problem.message == "undefined reference `topic.ordres`"
    assert problem.label == 'no topic is named "ordres"'
    assert problem.help == "did you mean `topic.orders`?"


def test_e207_never_creates_an_implicit_job() -> None:
    result = check('job "a" {\n  run = "m:f"\n  after = job.b\n}')
    problem = one(result, "E207")
    assert at(problem) == (3, 11)
    assert problem.help is None
    assert result.ir is None


def test_e207_misspelt_kind_suggests_the_right_one() -> None:
    result = check('job "a" { run = "m:f" }\njob "b" {\n  run = "m:f"\n  after = jbo.a\n}')
    problem = one(result, "E207")
    assert at(problem) == (4, 11)
    assert problem.message == "undefined reference `jbo.a`"
    assert problem.help == "did you mean `job.a`?"


# --- E208 ------------------------------------------------------------------------------------


def test_e208_invalid_enum_lists_the_choices() -> None:
    result = check('job "a" {\n  run = "m:f"\n  trigger = all_sucess\n}')
    problem = one(result, "E208")
    assert at(problem) == (3, 13)
    assert problem.message == 'invalid value `all_sucess` for `trigger` in job "a"'
    assert problem.label == (
        "expected one of: all_success, all_done, one_failed, one_success, none_failed, always"
    )
    assert problem.help == "did you mean `all_success`?"


def test_enums_accept_a_bare_word_or_a_string() -> None:
    result = check('job "a" {\n  run = "m:f"\n  trigger = "all_done"\n  catch_up = all\n}')
    assert result.ir is not None
    job = result.ir.jobs["a"]
    assert (job.trigger, job.catch_up) == ("all_done", "all")


def test_e208_invalid_callable_suggests_the_colon_form() -> None:
    problem = one(check('job "a" { run = "shop.jobs.extract" }'), "E208")
    assert at(problem) == (1, 17)
    assert problem.message == 'invalid callable "shop.jobs.extract" for `run` in job "a"'
    assert problem.help == 'write it as "shop.jobs:extract"'


def test_e208_list_with_too_few_items() -> None:
    problem = one(check('job "a" { command = [] }'), "E208")
    assert at(problem) == (1, 21)
    assert problem.message == '`command` in job "a" needs at least 1 item'


def test_e208_integer_below_a_non_one_minimum() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run = "m:f"
          scale { max = 2  min = -1 }
        }
        """
    )
    problem = one(result, "E208")
    assert at(problem) == (6, 26)
    assert problem.message == '`min` in scale of consumer "w" must be at least 0, found -1'


def test_e208_string_choices_and_patterns_from_a_plugin_schema() -> None:
    catalog = Catalog(
        {
            "broker": {
                "redis": BackendSpec(
                    "redis",
                    (
                        Field("mode", StringType(choices=("single", "cluster")), "Mode."),
                        Field(
                            "prefix",
                            StringType(pattern=r"[a-z]+", pattern_doc="lower-case letters"),
                            "Prefix.",
                        ),
                    ),
                )
            }
        }
    )
    result = check(
        'broker "r" {\n  kind = "redis"\n  mode = "singel"\n  prefix = "A1"\n}', catalog=catalog
    )
    first, second = (d for d in result.diagnostics if d.code == "E208")
    assert (at(first), first.message, first.help) == (
        (3, 10),
        'invalid value `singel` for `mode` in broker "r"',
        "did you mean `single`?",
    )
    assert (at(second), second.message, second.label) == (
        (4, 12),
        'invalid value "A1" for `prefix` in broker "r"',
        "expected lower-case letters",
    )


# --- E209 E210 ---------------------------------------------------------------------------------


def test_e209_points_at_the_bad_field_inside_the_string() -> None:
    result = check('job "a" {\n  run = "m:f"\n  schedule = cron("0 25 * * *")\n}')
    problem = one(result, "E209")
    # cron(" starts at column 14; the hour field `25` is the second word
    assert at(problem) == (3, 22)
    assert problem.span is not None and problem.span.end_column == 24
    assert problem.message == "invalid hour field `25` in cron expression"
    assert problem.label == "hour takes 0-23"


def test_e209_wrong_number_of_fields() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  schedule = cron("0 2 * *")\n}'), "E209")
    assert at(problem) == (3, 20)
    assert problem.message == "cron expression has 4 fields, expected 5 or 6"


def test_e209_the_sixth_field_is_seconds() -> None:
    result = check('job "a" {\n  run = "m:f"\n  schedule = cron("0 2 * * * 75")\n}')
    problem = one(result, "E209")
    assert at(problem) == (3, 30)
    assert problem.message == "invalid second field `75` in cron expression"


def test_e209_unknown_alias() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  schedule = cron("@dayly")\n}'), "E209")
    assert at(problem) == (3, 20)
    assert problem.message == "unknown cron alias `@dayly`"
    assert problem.help == "did you mean `@daily`?"


def test_e209_days_that_never_occur() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  schedule = cron("0 0 30 2 *")\n}'), "E209")
    assert at(problem) == (3, 24)
    assert problem.message == (
        "cron expression `0 0 30 2 *` never fires: "
        "the days of the month do not occur in the months named"
    )


def test_aliases_and_six_fields_are_accepted() -> None:
    result = check(
        """
        job "a" {
          run = "m:f"
          schedule = cron("@hourly")
        }
        job "b" {
          run = "m:f"
          schedule = cron("0 */5 * * mon-fri 30", timezone = "UTC")
        }
        job "c" {
          run = "m:f"
          schedule = every(90s)
        }
        """
    )
    assert result.ir is not None, result.diagnostics
    jobs = result.ir.jobs
    assert jobs["a"].schedule is not None and jobs["a"].schedule.cron == "@hourly"
    assert jobs["b"].schedule is not None and jobs["b"].schedule.cron == "0 */5 * * mon-fri 30"
    assert jobs["c"].schedule is not None and jobs["c"].schedule.interval == 90.0


def test_e210_unknown_time_zone_suggests_the_zone() -> None:
    result = check('flow "f" {\n  timezone = "Europe/Lisbn"\n}')
    problem = one(result, "E210")
    assert at(problem) == (2, 14)
    assert problem.message == 'unknown time zone "Europe/Lisbn"'
    assert problem.help == 'did you mean "Europe/Lisbon"?'


def test_e210_wrong_case_finds_the_zone() -> None:
    problem = one(check('flow "f" { timezone = "america/new_york" }'), "E210")
    assert problem.help == 'did you mean "America/New_York"?'


def test_e210_in_the_timezone_argument_of_cron() -> None:
    result = check(
        'job "a" {\n  run = "m:f"\n  schedule = cron("0 2 * * *", timezone = "Mars/Olympus")\n}'
    )
    problem = one(result, "E210")
    assert at(problem) == (3, 43)
    assert problem.message == 'unknown time zone "Mars/Olympus"'


# --- E211 --------------------------------------------------------------------------------------


def test_e211_unknown_broker_kind_lists_the_available_ones() -> None:
    result = check('broker "main" {\n  kind = "kafak"\n}')
    problem = one(result, "E211")
    assert at(problem) == (2, 10)
    assert problem.message == 'unknown broker "kafak" in broker "main"'
    assert problem.label == "available brokers: embedded, kafka, nats"
    assert problem.help == 'did you mean "kafka"?'


def test_e211_unknown_scale_backend() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run = "m:f"
          scale {
            backend = "k8s"
            max = 3
          }
        }
        """
    )
    problem = one(result, "E211")
    assert at(problem) == (7, 15)
    assert problem.message == 'unknown scaler "k8s" in scale of consumer "w"'
    assert problem.label == "available scalers: kubernetes, local"


def test_e211_unknown_notifier_and_a_plugin_catalog() -> None:
    catalog = Catalog({"notifier": {"slack": BackendSpec("slack", ())}})
    problem = one(check('notify "ops" { kind = "webhook" }', catalog=catalog), "E211")
    assert at(problem) == (1, 23)
    assert problem.message == 'unknown notifier "webhook" in notify "ops"'
    assert problem.label == "available notifiers: slack"


def test_backend_options_are_checked_like_schema_fields() -> None:
    catalog = Catalog(
        {"broker": {"toy": BackendSpec("toy", (Field("depth", IntType(minimum=1), "Depth."),))}}
    )
    problem = one(
        check('broker "t" {\n  kind = "toy"\n  depth = "deep"\n}', catalog=catalog), "E203"
    )
    assert at(problem) == (3, 11)
    assert problem.message == (
        'wrong type for `depth` in broker "t": expected integer ≥ 1, found a string'
    )


# --- E212 E213 E214 E215 -----------------------------------------------------------------------


def test_e212_job_with_nothing_to_run() -> None:
    result = check('job "idle" {\n  description = "x"\n}')
    problem = one(result, "E212")
    assert at(problem) == (1, 1)
    assert problem.message == 'job "idle" has nothing to run'
    assert problem.help == 'add `run = "package.module:function"` or `command = ["program", "arg"]`'


def test_e213_min_above_max() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run = "m:f"
          scale { min = 5  max = 2 }
        }
        """
    )
    problem = one(result, "E213")
    assert at(problem) == (6, 17)
    assert problem.message == '`min` (5) is above `max` (2) in scale of consumer "w"'
    assert [(r.span.line, r.span.column) for r in problem.related] == [(6, 26)]


def test_e213_exponential_backoff_first_delay_above_the_cap() -> None:
    result = check('job "a" {\n  run = "m:f"\n  retry { backoff = exponential(10m, 1m) }\n}')
    problem = one(result, "E213")
    assert at(problem) == (3, 33)
    assert problem.message == "the first delay (10m) is above the cap (1m)"


def test_e214_non_positive_values() -> None:
    result = check(
        """
        pool "db" { slots = 0 }
        job "a" {
          run        = "m:f"
          timeout    = 0s
          pool_slots = 0
          resources { cpu = 0 }
        }
        """
    )
    found = [(at(d), d.message) for d in result.diagnostics if d.code == "E214"]
    assert found == [
        ((1, 21), '`slots` in pool "db" must be positive, found 0'),
        ((4, 16), '`timeout` in job "a" must be longer than zero'),
        ((5, 16), '`pool_slots` in job "a" must be positive, found 0'),
        ((6, 21), '`cpu` in resources of job "a" must be positive, found 0'),
    ]


def test_e214_lag_per_instance_must_be_positive() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run = "m:f"
          scale { max = 2  lag_per_instance = 0 }
        }
        """
    )
    problem = one(result, "E214")
    assert at(problem) == (6, 39)
    assert (
        problem.message == '`lag_per_instance` in scale of consumer "w" must be positive, found 0'
    )


def test_e214_zero_interval_of_every() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  schedule = every(0s)\n}'), "E214")
    assert at(problem) == (3, 20)
    assert problem.message == "argument 1 of every() must be longer than zero"


def test_zero_is_fine_where_a_duration_may_be_zero() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes = topic.t
          run = "m:f"
          scale {
            max = 2
            scale_up_window = 0s
          }
        }
        """
    )
    assert result.ok, result.diagnostics


def test_e215_missing_label() -> None:
    problem = one(check('job {\n  run = "m:f"\n}'), "E215")
    assert at(problem) == (1, 1)
    assert problem.message == "job block has no name"
    assert problem.help == 'name it: `job "NAME" { ... }`'


def test_e215_label_that_cannot_be_referenced() -> None:
    problem = one(check('job "nightly export" { run = "m:f" }'), "E215")
    assert at(problem) == (1, 5)
    assert problem.message == 'invalid job name "nightly export"'
    assert problem.help == 'for example "nightly_export"'


def test_e215_label_starting_with_a_digit() -> None:
    problem = one(check('pool "1db" { slots = 1 }'), "E215")
    assert problem.help == 'for example "_1db"'


def test_e215_nested_blocks_take_no_label() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  retry "fast" { attempts = 2 }\n}'), "E215")
    assert at(problem) == (3, 9)
    assert problem.message == "`retry` blocks take no name"


def test_labels_may_hold_dashes_and_digits() -> None:
    result = check(
        'job "load-2" { run = "m:f" }\njob "b" {\n  run = "m:f"\n  after = job.load-2\n}'
    )
    assert result.ir is not None
    assert result.ir.jobs["b"].after == ("load-2",)


# --- E216 --------------------------------------------------------------------------------------


def test_e216_unknown_function_suggests_a_close_one() -> None:
    result = check('job "a" {\n  run = "m:f"\n  schedule = crom("0 2 * * *")\n}')
    problem = one(result, "E216")
    assert at(problem) == (3, 14)
    assert problem.message == "unknown function `crom`"
    assert problem.help == "did you mean `cron()`?"


def test_e216_wrong_argument_counts() -> None:
    result = check(
        """
        job "a" {
          run = "m:f"
          env = { A = env("A", "b", "c"), B = secret() }
          schedule = every(1m, 2m)
        }
        """
    )
    found = [(at(d), d.message, d.help) for d in result.diagnostics if d.code == "E216"]
    assert found == [
        ((3, 15), "env() takes 1 or 2 arguments, found 3", 'write env("VAR", "default")'),
        ((3, 39), "secret() takes 1 argument, found 0", 'write secret("VAR")'),
        ((4, 14), "every() takes 1 argument, found 2", "write every(DURATION)"),
    ]


def test_e216_wrong_argument_types() -> None:
    result = check(
        """
        job "a" {
          command = [secret(42)]
          retry { backoff = exponential("10s", 5m) }
        }
        """
    )
    found = [(at(d), d.message) for d in result.diagnostics if d.code == "E216"]
    assert found == [
        ((2, 21), "argument 1 of secret() must be a string, found an integer"),
        ((3, 33), "argument 1 of exponential() must be a duration, found a string"),
    ]


def test_e216_unknown_and_repeated_keyword_arguments() -> None:
    result = check(
        """
        job "a" {
          run = "m:f"
          schedule = cron("0 2 * * *", tz = "UTC")
        }
        job "b" {
          run = "m:f"
          schedule = cron("0 2 * * *", timezone = "UTC", timezone = "UTC")
        }
        """
    )
    found = [(at(d), d.message, d.help) for d in result.diagnostics if d.code == "E216"]
    assert found == [
        (
            (3, 32),
            "cron() has no argument `tz`",
            'write cron("MIN HOUR DOM MON DOW", timezone = "Zone")',
        ),
        ((7, 50), "argument `timezone` of cron() is given twice", None),
    ]


def test_e216_invalid_variable_name() -> None:
    problem = one(check('job "a" {\n  command = [env("MY VAR")]\n}'), "E216")
    assert at(problem) == (2, 18)
    assert problem.message == 'invalid environment variable name "MY VAR" in env()'


def test_a_known_function_in_the_wrong_place_is_a_type_error() -> None:
    problem = one(check('job "a" {\n  run = "m:f"\n  timeout = every(5m)\n}'), "E203")
    assert problem.message == (
        'wrong type for `timeout` in job "a": expected duration, found a call to every()'
    )


# --- E217 --------------------------------------------------------------------------------------


def test_e217_run_and_command_together() -> None:
    result = check('job "a" {\n  run = "m:f"\n  command = ["prog"]\n}')
    problem = one(result, "E217")
    assert at(problem) == (3, 3)
    assert problem.message == 'job "a" sets both `run` and `command`'
    assert [(r.span.line, r.span.column, r.message) for r in problem.related] == [
        (2, 3, "`run` set here")
    ]


def test_e217_command_string_without_shell() -> None:
    problem = one(check('job "a" {\n  command = "ls -l | wc"\n}'), "E217")
    assert at(problem) == (2, 13)
    assert problem.message == '`command` in job "a" is a string but `shell` is not true'
    assert problem.help == "write the argv as a list, or set `shell = true`"


def test_command_string_with_shell_is_kept_as_one_string() -> None:
    result = check('job "a" {\n  command = "ls -l | wc"\n  shell = true\n}')
    assert result.ir is not None
    assert result.ir.jobs["a"].command == "ls -l | wc"
    assert result.ir.jobs["a"].shell is True


def test_e217_shell_with_an_argv_list() -> None:
    problem = one(check('job "a" {\n  command = ["ls"]\n  shell = true\n}'), "E217")
    assert at(problem) == (2, 13)
    assert problem.message == '`shell = true` in job "a" needs `command` as one string'


def test_e217_publish_stdout_needs_one_topic_and_a_command() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t1" {}
        topic "t2" {}
        job "many" {
          command        = ["prog"]
          publishes      = [topic.t1, topic.t2]
          publish_stdout = true
        }
        job "callable" {
          run            = "m:f"
          publishes      = topic.t1
          publish_stdout = true
        }
        """
    )
    found = [(at(d), d.message) for d in result.diagnostics if d.code == "E217"]
    assert found == [
        ((7, 3), '`publish_stdout` in job "many" needs exactly one `publishes` topic, found 2'),
        ((12, 3), '`publish_stdout` in job "callable" applies only to `command`'),
    ]


def test_e217_two_time_zones_for_one_schedule() -> None:
    result = check(
        """
        job "a" {
          run      = "m:f"
          timezone = "Europe/Paris"
          schedule = cron("0 2 * * *", timezone = "Europe/Rome")
        }
        """
    )
    problem = one(result, "E217")
    assert at(problem) == (4, 19)
    assert problem.message == (
        'job "a" sets two time zones: `timezone = "Europe/Paris"` '
        'and cron(timezone = "Europe/Rome")'
    )


def test_e217_dead_letter_to_the_consumed_topic() -> None:
    result = check(
        """
        broker "b" { kind = "embedded" }
        topic "t" {}
        consumer "w" {
          consumes    = topic.t
          run         = "m:f"
          dead_letter = topic.t
        }
        """
    )
    problem = one(result, "E217")
    assert at(problem) == (6, 17)
    assert problem.message == 'consumer "w" dead-letters to the topic it consumes'


# --- many problems, one run --------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_in_one_run() -> None:
    result = check(
        """
        jbo "x" {}
        job "extract" {
          retrys    = 3
          publishes = topic.nothere
          schedule  = cron("61 2 * * *")
          trigger   = sometimes
        }
        pool "db" { slots = "4" }
        job "extract" { run = "m:f" }
        """
    )
    assert [(d.code, *at(d)) for d in result.diagnostics] == [
        ("E201", 1, 1),
        ("E212", 2, 1),
        ("E202", 3, 3),
        ("E207", 4, 15),
        ("E209", 5, 21),
        ("E208", 6, 15),
        ("E203", 8, 21),
        ("E205", 9, 1),
    ]
    assert result.ir is None
    assert not result.ok and len(result.errors) == 8 and result.warnings == ()


def test_diagnostics_are_sorted_by_path_line_column_and_code() -> None:
    result = check('job "b" {\n  after = job.zz\n}\njob "a" {\n  trigger = x\n  run = 1\n}')
    keys = [d.sort_key() for d in result.diagnostics]
    assert keys == sorted(keys)
    # E212 (line 1) is found by a later pass than E207 (line 2): sorting puts it first
    assert [k[1:] for k in keys] == [
        (1, 1, "E212"),
        (2, 11, "E207"),
        (5, 13, "E208"),
        (6, 9, "E203"),
    ]


def test_a_backend_named_with_a_bare_word_does_not_cascade() -> None:
    result = check('broker "k" {\n  kind = kafka\n  bootstrap = "x"\n}')
    problem = one(result, "E203")
    assert at(problem) == (2, 10)
    assert problem.message == 'wrong type for `kind` in broker "k": expected string, found a name'
    assert problem.help == 'write it as a string: "kafka"'
    # the options of a backend that is not known are not called unknown
    assert codes(result) == ["E203"]


def test_a_backend_block_without_its_kind_only_misses_the_kind() -> None:
    result = check('broker "n" {\n  servers = "nats://x"\n}')
    assert codes(result) == ["E204"]
    assert one(result, "E204").message == 'missing required attribute `kind` in broker "n"'


def test_e207_suggestions_among_thousands_of_names_stay_quick() -> None:
    jobs = [f'job "extract_orders_step_{i}" {{ run = "m:f" }}' for i in range(1500)]
    typos = [
        ("extract_order_step_7", "extract_orders_step_7"),  # deletion
        ("extract_orders_setp_8", "extract_orders_step_8"),  # transposition
        ("extract_orders_stap_9", "extract_orders_step_9"),  # replacement
        ("extract_orderss_step_10", "extract_orders_step_10"),  # insertion
        ("load_everything", None),
    ]
    waiting = [
        f'job "w{i}" {{\n  run = "m:f"\n  after = job.{typo}\n}}'
        for i, (typo, _) in enumerate(typos)
    ]
    result = check("\n".join(jobs + waiting))
    found = [d.help for d in result.diagnostics if d.code == "E207"]
    assert found == [None if fix is None else f"did you mean `job.{fix}`?" for _, fix in typos]
