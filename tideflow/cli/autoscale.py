"""`tideflow simulate` and `tideflow explain`: the autoscaler's decisions, replayed and explained.

`simulate` replays a load profile through the autoscaler's decision function
(`tideflow.runtime.simulate`) beside KEDA's defaults; `explain` shows the decisions
the live autoscaler stored, with their inputs and arithmetic. Both compile the flow
first and report its problems like `tideflow compile` (exit 1); a bad argument,
an unknown consumer or an unreachable state store is a usage problem (exit 2).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tideflow.cli.common import (
    UsageProblem,
    consumer_of,
    emit_json,
    empty_store,
    load_flow,
    state_option,
    text_console,
    when,
    write_output,
)
from tideflow.cli.plots import render_plot

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, FlowIR, ScaleRule
    from tideflow.runtime.model import ScaleDecisionRow
    from tideflow.runtime.simulate import Comparison, SimulationSettings

__all__ = ["explain_command", "simulate_command"]

MAX_PARTITIONS_SHOWN = 12


# --- shared ---------------------------------------------------------------------------------


def _scaled_consumer(ir: FlowIR, name: str | None) -> tuple[ConsumerNode, ScaleRule]:
    """The consumer called `name` (or the flow's only autoscaled one) and its rule."""
    consumers = ir.consumers
    scaled = sorted(n for n, c in consumers.items() if c.scale is not None)
    flow = f'flow "{ir.info.name}"'
    if name is None:
        if len(scaled) == 1:
            name = scaled[0]
        elif not scaled:
            raise UsageProblem(f"{flow} has no consumer with a `scale` block")
        else:
            raise UsageProblem(
                f"{flow} has several autoscaled consumers; name one with --consumer: "
                + ", ".join(scaled)
            )
    consumer = consumer_of(ir, name)
    if consumer.scale is None:
        raise UsageProblem(
            f"consumer `{name}` of {flow} has no `scale` block: its instances are not autoscaled"
        )
    return consumer, consumer.scale


def _partitions(ir: FlowIR, consumer: ConsumerNode) -> tuple[int, bool]:
    """The consumed topic's partition count, and whether its broker is partitioned."""
    from tideflow.plugins.manager import installed_plugins  # lazy: CLI start-up

    topic = ir.topics[consumer.consumes]
    broker = ir.brokers.get(topic.broker)
    spec = installed_plugins().catalog.get("broker", broker.kind) if broker else None
    return topic.partitions, bool(spec and spec.partitioned)


def _seconds_text(seconds: float | None) -> str:
    from tideflow.runtime.decide import format_seconds  # lazy: CLI start-up

    return "-" if seconds is None else format_seconds(seconds)


def _describe_rule(rule: ScaleRule) -> str:
    parts = [
        f"min {rule.min:,}",
        f"max {rule.max:,}",
        f"{rule.lag_per_instance:,} per instance",
        f"activation above {rule.activation_lag:,}",
        f"poll {_seconds_text(rule.poll)}",
        f"cooldown {_seconds_text(rule.cooldown)}",
        f"windows up {_seconds_text(rule.scale_up_window)} "
        f"/ down {_seconds_text(rule.scale_down_window)}",
        f"tolerance {rule.tolerance:g}",
    ]
    if rule.max_step is not None:
        parts.append(f"max_step {rule.max_step:,}")
    if rule.fallback is not None:
        parts.append(f"fallback {rule.fallback:,}")
    return ", ".join(parts)


# --- simulate -------------------------------------------------------------------------------


@click.command("simulate")
@click.argument("file", metavar="FILE")
@click.option(
    "--consumer",
    "consumer_name",
    metavar="NAME",
    help="The autoscaled consumer (default: the flow's only one).",
)
@click.option(
    "--arrivals",
    metavar="PROFILE",
    required=True,
    help="Load: '0-5m:100/s,5m-6m:5000/s,burst@10m:20000', or a .json or .csv file.",
)
@click.option(
    "--service-rate",
    metavar="RATE",
    required=True,
    help="Messages one instance handles per second (100, 100/s, 6000/m).",
)
@click.option(
    "--startup",
    metavar="DURATION",
    default="2s",
    show_default=True,
    help="Time from starting an instance to its first message.",
)
@click.option(
    "--duration",
    metavar="DURATION",
    default="30m",
    show_default=True,
    help="How long to simulate.",
)
@click.option("--plot", metavar="PATH", help="Draw backlog and instances over time (PNG).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table: the figures; json: figures and time series; csv: the time series.",
)
def simulate_command(
    file: str,
    consumer_name: str | None,
    arrivals: str,
    service_rate: str,
    startup: str,
    duration: str,
    plot: str | None,
    output_format: str,
) -> None:
    """Replay a load through a consumer's scale rule, beside KEDA's defaults.

    Both policies run on a virtual clock over the same fluid queue: each ready
    instance handles RATE messages per second, new instances are ready after the
    startup time. KEDA's side polls every 30 s, the HPA syncs every 15 s with a 5 m
    scale-down window, and scaling to zero waits 5 m.
    """
    from tideflow.runtime import simulate as sim  # lazy: CLI start-up

    try:
        profile = sim.load_profile(arrivals)
    except sim.ProfileError as exc:
        raise UsageProblem(f"invalid --arrivals: {exc}") from None
    rate = _option_value("--service-rate", sim.parse_rate, service_rate)
    startup_seconds = _option_value("--startup", sim.parse_duration, startup)
    duration_seconds = _option_value("--duration", sim.parse_duration, duration)
    if not rate > 0:
        raise UsageProblem("invalid --service-rate: an instance must handle more than 0 per second")
    if not duration_seconds > 0:
        raise UsageProblem("invalid --duration: simulate for more than 0s")
    if plot is not None:
        _check_matplotlib()

    ir = load_flow(file)
    consumer, rule = _scaled_consumer(ir, consumer_name)
    partitions, partitioned = _partitions(ir, consumer)
    settings = sim.SimulationSettings(
        service_rate=rate,
        startup=startup_seconds,
        duration=duration_seconds,
        partitions=partitions,
        partitioned=partitioned,
    )
    if profile.end > duration_seconds and profile.end != float("inf"):
        click.echo(
            f"note: the profile goes on to {_seconds_text(profile.end)}; only the first "
            f"{_seconds_text(duration_seconds)} are simulated (see --duration)",
            err=True,
        )
    comparison = sim.compare(profile, rule, settings)
    title = f'{consumer.name} of flow "{ir.info.name}": {profile.describe()}'

    if output_format == "json":
        emit_json(_simulation_json(ir, consumer.name, comparison))
    elif output_format == "csv":
        sys.stdout.write(sim.csv_text(comparison.series()))
        sys.stdout.flush()
    else:
        _print_comparison(ir, consumer.name, comparison)
    if plot is not None:
        write_output(plot, render_plot(comparison, title))
        click.echo(f"wrote {plot}", err=True)


def _option_value(option: str, parse: Callable[[str], float], text: str) -> float:
    from tideflow.runtime.simulate import ProfileError  # lazy: CLI start-up

    try:
        return parse(text)
    except ProfileError as exc:
        raise UsageProblem(f"invalid {option}: {exc}") from None


def _check_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageProblem(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        )


def _settings_json(settings: SimulationSettings) -> dict[str, Any]:
    return {
        "service_rate": settings.service_rate,
        "startup": settings.startup,
        "duration": settings.duration,
        "partitions": settings.partitions,
        "partitioned": settings.partitioned,
        "sample_interval": settings.sample_interval,
    }


def _simulation_json(ir: FlowIR, consumer: str, comparison: Comparison) -> dict[str, Any]:
    from tideflow.runtime.autoscaler import rule_as_dict  # lazy: CLI start-up

    profile = comparison.profile
    return {
        "flow": ir.info.name,
        "consumer": consumer,
        "rule": rule_as_dict(comparison.rule),
        "settings": _settings_json(comparison.settings),
        "profile": {
            "segments": [
                {"start": s.start, "end": None if s.end == float("inf") else s.end, "rate": s.rate}
                for s in profile.segments
            ],
            "bursts": [{"at": b.at, "messages": b.messages} for b in profile.bursts],
        },
        "summary": comparison.summary(),
        "series": list(comparison.series()),
    }


def _print_comparison(ir: FlowIR, consumer: str, comparison: Comparison) -> None:
    settings = comparison.settings
    console = text_console()
    where = (
        f"{settings.partitions:,} partitions" if settings.partitioned else "an unpartitioned topic"
    )
    console.print(
        Text.assemble(
            "consumer ",
            (consumer, "bold"),
            f' of flow "{ir.info.name}", '
            f"{_seconds_text(settings.duration)} simulated: "
            f"{settings.service_rate:,g} messages/s per instance, startup "
            f"{_seconds_text(settings.startup)}, {where}",
        )
    )
    console.print(f"load: {comparison.profile.describe()}")
    console.print(f"rule: {_describe_rule(comparison.rule)}")

    ours, theirs = comparison.tideflow, comparison.keda
    spike = (
        f"time to drain after {_seconds_text(comparison.spike_at)}"
        if comparison.spike_at is not None
        else "time to drain"
    )
    rows: Sequence[tuple[str, str, str, str]] = [
        (
            "peak backlog",
            f"{ours.peak_backlog:,.0f}",
            f"{theirs.peak_backlog:,.0f}",
            _ratio(comparison.ratio("peak_backlog")),
        ),
        (
            spike,
            _drain_text(ours.drain_seconds),
            _drain_text(theirs.drain_seconds),
            _ratio(comparison.ratio("drain_seconds")),
        ),
        (
            "instance-seconds",
            f"{ours.instance_seconds:,.0f}",
            f"{theirs.instance_seconds:,.0f}",
            _ratio(comparison.ratio("instance_seconds")),
        ),
        (
            "scale events",
            f"{ours.scale_events:,}",
            f"{theirs.scale_events:,}",
            _ratio(comparison.ratio("scale_events")),
        ),
        ("max instances", f"{ours.max_instances:,}", f"{theirs.max_instances:,}", ""),
        ("backlog at the end", f"{ours.final_backlog:,.0f}", f"{theirs.final_backlog:,.0f}", ""),
    ]
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("")
    for column in ("tideflow", "KEDA defaults", "tideflow / KEDA"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"drained: the backlog back to {comparison.drain_level:,.0f} (the activation lag) "
        "after its highest point"
    )
    console.print("a ratio below 1: tideflow's figure is the smaller")


def _drain_text(seconds: float | None) -> str:
    return "not drained" if seconds is None else _seconds_text(seconds)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- explain --------------------------------------------------------------------------------


@click.command("explain")
@click.argument("file", metavar="FILE")
@click.argument("consumer_name", metavar="CONSUMER")
@state_option
@click.option(
    "--limit", type=click.IntRange(1), default=10, show_default=True, help="Decisions to show."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def explain_command(
    file: str, consumer_name: str, state_url: str | None, limit: int, output_format: str
) -> None:
    """Show the autoscaler's last decisions for CONSUMER, newest first, with their
    inputs and arithmetic ("backlog 3,412 / 500 per instance = 7; capped by 6
    partitions -> 6")."""
    from tideflow.runtime.store import Store, StoreError, StoreNotFound  # lazy: CLI start-up

    ir = load_flow(file)
    consumer, rule = _scaled_consumer(ir, consumer_name)
    try:
        store = Store.open(state_url, create=False)
    except StoreNotFound as exc:
        store = empty_store(exc, state_url)
    except StoreError as exc:
        raise UsageProblem(str(exc)) from None
    except OSError as exc:  # a SQLite path whose folder cannot be made
        where = exc.filename or state_url
        reason = (exc.strerror or str(exc)).lower()
        raise UsageProblem(f"cannot open the state store: `{where}`: {reason}") from None
    try:
        rows = store.decisions(flow=ir.info.name, consumer=consumer.name, limit=limit)
        dead_counts = store.dead_letter_counts(flow=ir.info.name)
    finally:
        store.close()
    # dead-lettered messages left the backlog without being handled
    dead_lettered = dead_counts.get((ir.info.name, consumer.name), 0)

    if output_format == "json":
        emit_json(
            {
                "flow": ir.info.name,
                "consumer": consumer.name,
                "dead_lettered": dead_lettered,
                "decisions": rows,
            }
        )
        return
    console = text_console()
    # soft_wrap: a line longer than the terminal is the terminal's to wrap; rich would
    # break it at `width` (120 when piped), in the middle of an explanation
    console.print(
        Text.assemble(
            "consumer ",
            (consumer.name, "bold"),
            f' of flow "{ir.info.name}": {_describe_rule(rule)}',
        ),
        soft_wrap=True,
    )
    if dead_lettered:
        console.print(
            Text(
                f"{dead_lettered:,} message(s) dead-lettered so far: they left the backlog "
                "unhandled (see `tideflow dlq list`)",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if not rows:
        console.print("no decisions recorded yet (they are written while `tideflow run` scales it)")
        return
    for row in rows:
        _print_decision(console, row)


def _print_decision(console: Console, row: ScaleDecisionRow) -> None:
    head = Text(f"\n{when(row.taken_at)}  ")
    change = f"{row.current:,} -> {row.desired:,}"
    head.append(change, style="bold" if row.current != row.desired else "")
    head.append(f"  {row.reason}", style=_REASON_STYLES.get(row.reason, ""))
    if row.current != row.desired and not row.applied:
        head.append("  (not applied: the scaler failed)", style="red")
    console.print(head, soft_wrap=True)
    if row.reading_error is not None:
        console.print(Text(f"  reading: {row.reading_error}", style="yellow"), soft_wrap=True)
    if row.backlog is not None:
        console.print(Text(f"  backlog {_backlog_text(row)}"), soft_wrap=True)
    console.print(Text(f"  {row.explanation}"), soft_wrap=True)


_REASON_STYLES = {
    "activate": "green",
    "scale_up": "green",
    "scale_down": "cyan",
    "scale_to_zero": "cyan",
    "hold_failed_reading": "yellow",
    "fallback": "yellow",
}


def _backlog_text(row: ScaleDecisionRow) -> str:
    total = f"{row.backlog:,}"
    if not row.partitions or row.partitions == 1:
        return total
    shown = sorted(row.per_partition.items())[:MAX_PARTITIONS_SHOWN]
    parts = ", ".join(f"p{p} {n:,}" for p, n in shown)
    hidden = len(row.per_partition) - len(shown)
    if hidden > 0:
        parts += f", and {hidden} more"
    empty = "" if row.per_partition else "all empty"
    return f"{total} over {row.partitions:,} partitions ({parts or empty})"
