"""`tideflow dlq list|replay FILE CONSUMER`: a consumer's dead-lettered messages.

Both read the consumer's `dead_letter` topic through its broker (so they work on
every broker) as the group `tideflow-dlq-GROUP` (see `tideflow.runtime.dead_letters`).
`list` changes nothing; `replay` publishes the chosen messages to the consumer's
topic and acknowledges them on the dead-letter topic only once that succeeded.
Exit status: 0 when done; 1 when the flow has errors or the broker failed; 2 for a
bad argument (an unknown consumer, one without a dead-letter topic, an id that
names no dead letter).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

import click
from rich.table import Table
from rich.text import Text

from tideflow.cli.common import (
    EXIT_PROBLEMS,
    UsageProblem,
    consumer_of,
    echo_error,
    emit_json,
    format_option,
    load_flow,
    make_console,
)
from tideflow.dsl.durations import parse_duration

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, FlowIR
    from tideflow.runtime.dead_letters import DeadLetter

__all__ = ["dlq_command"]

#: How long reading the dead-letter topic may take by default.
DEFAULT_TIMEOUT: Final = "30s"
#: Longest error text in a table row (the JSON has it whole).
MAX_ERROR_SHOWN: Final = 120


def _seconds(ctx: click.Context, param: click.Parameter, text: str) -> float:
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 30s or 2m")
    return seconds


def _timeout_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="DURATION",
        callback=_seconds,
        help="Longest time to spend reading the dead-letter topic.",
    )(func)


@click.group("dlq")
def dlq_command() -> None:
    """List and replay a consumer's dead-lettered messages."""


@dlq_command.command("list")
@click.argument("file", metavar="FILE")
@click.argument("consumer_name", metavar="CONSUMER")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@_timeout_option
@format_option
def list_command(
    file: str, consumer_name: str, limit: int, timeout: float, output_format: str
) -> None:
    """Show the messages CONSUMER dead-lettered that were not replayed: where they came
    from, after how many failures, and the error. Changes nothing."""
    flow = load_flow(file)
    consumer = consumer_of(flow, consumer_name)
    letters = asyncio.run(_list(flow, consumer, limit, timeout))
    if output_format == "json":
        emit_json(
            {
                "flow": flow.info.name,
                "consumer": consumer.name,
                "topic": consumer.dead_letter,
                "messages": [letter.as_dict() for letter in letters],
            }
        )
        return
    _print_letters(flow, consumer, letters, limit)


@dlq_command.command("replay")
@click.argument("file", metavar="FILE")
@click.argument("consumer_name", metavar="CONSUMER")
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="REF",
    help="A dead letter to replay, as `tideflow dlq list` shows it (PARTITION:ID, or ID "
    "when it is unique); repeatable.",
)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter listed.")
@_timeout_option
def replay_command(
    file: str, consumer_name: str, ids: Sequence[str], replay_all: bool, timeout: float
) -> None:
    """Publish dead-lettered messages of CONSUMER to its topic again, then remove them
    from the dead-letter topic (only once the publish succeeded)."""
    if bool(ids) == replay_all:
        raise UsageProblem("name the messages to replay with --id REF, or give --all")
    flow = load_flow(file)
    consumer = consumer_of(flow, consumer_name)
    replayed, topic = asyncio.run(_replay(flow, consumer, ids, timeout))
    count = f"{replayed} message" + ("" if replayed == 1 else "s")
    click.echo(f'replayed {count} of consumer "{consumer.name}" to topic "{topic}"')


async def _list(
    flow: FlowIR, consumer: ConsumerNode, limit: int, timeout: float
) -> list[DeadLetter]:
    # lazy: CLI start-up (the brokers' runtime is for this command only)
    from tideflow.runtime.dead_letters import DeadLetterError, DeadLetterTopic

    try:
        async with DeadLetterTopic(flow, consumer) as topic:
            return await topic.read(limit=limit, timeout=timeout)
    except DeadLetterError as exc:
        _fail(exc, flow, consumer)


async def _replay(
    flow: FlowIR, consumer: ConsumerNode, ids: Sequence[str], timeout: float
) -> tuple[int, str]:
    # lazy: CLI start-up (the brokers' runtime is for this command only)
    from tideflow.runtime.dead_letters import DeadLetterError, DeadLetterTopic, select

    try:
        async with DeadLetterTopic(flow, consumer) as topic:
            letters = await topic.read(timeout=timeout)
            try:
                chosen = select(letters, ids) if ids else letters
            except DeadLetterError as exc:
                raise UsageProblem(str(exc)) from None
            result = await topic.replay(chosen)
            return len(result.replayed), result.topic
    except DeadLetterError as exc:
        _fail(exc, flow, consumer)


def _fail(exc: Exception, flow: FlowIR, consumer: ConsumerNode) -> NoReturn:
    if consumer.dead_letter is None:
        raise UsageProblem(str(exc)) from None
    echo_error(_redactor(flow, consumer)(str(exc)))
    sys.exit(EXIT_PROBLEMS)


def _redactor(flow: FlowIR, consumer: ConsumerNode) -> Callable[[str], str]:
    """Removes the secret values of the brokers' options (an error may quote a URL)."""
    from tideflow.runtime import secrets  # lazy: CLI start-up

    topics = [t for t in (consumer.consumes, consumer.dead_letter) if t is not None]
    brokers = sorted({flow.topics[t].broker for t in topics})
    try:
        values = secrets.secret_values([flow.brokers[b].options for b in brokers])
    except Exception:  # a secret that is not set: the broker was never opened with it
        return str
    return secrets.Redactor(values)


def _print_letters(
    flow: FlowIR, consumer: ConsumerNode, letters: Sequence[DeadLetter], limit: int
) -> None:
    console = make_console()
    where = f'consumer "{consumer.name}" of flow "{flow.info.name}", topic "{consumer.dead_letter}"'
    if not letters:
        console.print(Text(f"no dead letters ({where})"))
        return
    more = " (the first; see --limit)" if len(letters) >= limit else ""
    console.print(Text(f"{len(letters)} dead letter(s){more}: {where}"))
    table = Table(box=None, header_style="bold")
    for column in ("ref", "dead-lettered", "from", "failures", "error"):
        table.add_column(column, justify="right" if column == "failures" else "left")
    for letter in letters:
        origin = "-"
        if letter.original_topic is not None:
            origin = (
                f"{letter.original_topic} {letter.original_partition or '?'}:"
                f"{letter.original_id or '?'}"
            )
        error = letter.error
        if len(error) > MAX_ERROR_SHOWN:
            error = error[: MAX_ERROR_SHOWN - 1] + "…"
        table.add_row(
            Text(letter.ref),
            Text(letter.dead_lettered_at or "-"),
            Text(origin),
            Text("-" if letter.failures is None else str(letter.failures)),
            Text(error, style="red"),
        )
    console.print(table)
