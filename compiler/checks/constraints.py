"""Pass 3, what the schema cannot say about one declaration: a topic's implied broker, a
job's `run` or `command` and the attributes that go with them, a consumer's dead letters
and scale timing."""

from __future__ import annotations

from tideflow.compiler import schema as s
from tideflow.dsl.diagnostics import Diagnostic, Related

from .common import head_span, item_parts, seconds, value_span
from .context import CheckContext
from .model import Declaration, ScheduleSpec, Section
from .schedules import warn_dst, warn_either_day

__all__ = ["check_consumer", "check_job", "check_topic"]


def check_topic(ctx: CheckContext, topic: Declaration) -> None:
    if "broker" in topic.section.items:
        return
    brokers = list(ctx.blocks["broker"])
    if len(brokers) == 1:
        topic.section.values["broker"] = brokers[0]
        return
    if brokers:
        help = (
            f"the flow declares {len(brokers)} brokers ({', '.join(brokers)}): "
            f"choose one, such as `broker = broker.{brokers[0]}`"
        )
    else:
        help = 'declare one: `broker "main" { kind = "embedded" }`'
    ctx.error(
        "E204",
        f"missing required attribute `broker` in {topic.block.describe()}",
        head_span(topic.block),
        help=help,
    )


def check_job(ctx: CheckContext, job: Declaration, flow_zone: str) -> str:
    """Job rules across attributes; the zone its schedule fires in."""
    values, items = job.section.values, job.section.items
    owner = job.block.describe()
    run, command = items.get("run"), items.get("command")
    if run is not None and command is not None:
        first, second = sorted((run, command), key=lambda item: item.span.start)
        first_name, second_name = item_parts(first)[0], item_parts(second)[0]
        ctx.error(
            "E217",
            f"{owner} sets both `run` and `command`",
            item_parts(second)[1],
            label=f"conflicts with `{first_name}`",
            help=f"keep one of them: remove `{second_name}` or `{first_name}`",
            related=(Related(item_parts(first)[1], f"`{first_name}` set here"),),
        )
    elif run is None and command is None:
        ctx.error(
            "E212",
            f"{owner} has nothing to run",
            head_span(job.block),
            help='add `run = "package.module:function"` or `command = ["program", "arg"]`',
        )
    shell = values.get("shell", False)
    command_value = values.get("command")
    if isinstance(command_value, str) and not shell:
        ctx.error(
            "E217",
            f"`command` in {owner} is a string but `shell` is not true",
            value_span(items["command"]),
            help="write the argv as a list, or set `shell = true`",
        )
    elif isinstance(command_value, tuple) and shell:
        ctx.error(
            "E217",
            f"`shell = true` in {owner} needs `command` as one string",
            value_span(items["command"]),
            help="write the command line as one string, or remove `shell = true`",
        )
    elif shell and command is None:
        ctx.error(
            "E217",
            f"`shell = true` in {owner} applies only to `command`",
            items["shell"].span,
        )
    if values.get("publish_stdout"):
        where = items["publish_stdout"].span
        publishes = values.get("publishes", ())
        if run is not None:
            ctx.error(
                "E217",
                f"`publish_stdout` in {owner} applies only to `command`",
                where,
                label="a `run` callable publishes its messages itself",
            )
        elif len(publishes) != 1:
            ctx.error(
                "E217",
                f"`publish_stdout` in {owner} needs exactly one `publishes` topic, "
                f"found {len(publishes)}",
                where,
            )
    zone_name: str = values.get("timezone", flow_zone)
    schedule = values.get("schedule")
    if isinstance(schedule, ScheduleSpec) and schedule.timezone is not None:
        if "timezone" in values and values["timezone"] != schedule.timezone:
            ctx.error(
                "E217",
                f'{owner} sets two time zones: `timezone = "{values["timezone"]}"` '
                f'and cron(timezone = "{schedule.timezone}")',
                schedule.span,
                help="keep one of them",
            )
        zone_name = schedule.timezone
    if isinstance(schedule, ScheduleSpec) and schedule.cron is not None:
        warn_dst(ctx, schedule, zone_name)
        warn_either_day(ctx, schedule)
    return zone_name


def check_consumer(ctx: CheckContext, consumer: Declaration) -> None:
    values, items = consumer.section.values, consumer.section.items
    owner = consumer.block.describe()
    if "dead_letter" in values and values.get("dead_letter") == values.get("consumes"):
        ctx.error(
            "E217",
            f"{owner} dead-letters to the topic it consumes",
            value_span(items["dead_letter"]),
            help="a failed message would come straight back; use another topic",
        )
    scale = values.get("scale")
    if isinstance(scale, Section):
        poll = scale.values.get("poll", s.SCALE.by_name["poll"].default)
        cooldown = scale.values.get("cooldown", s.SCALE.by_name["cooldown"].default)
        if poll > cooldown:
            where = scale.items.get("poll") or scale.items.get("cooldown")
            assert where is not None
            ctx.found.append(
                Diagnostic(
                    "W406",
                    f"`poll` ({seconds(poll)}) is longer than `cooldown` "
                    f"({seconds(cooldown)}) in scale of {owner}",
                    where.span,
                    label="the backlog is read less often than instances may be stopped",
                )
            )
