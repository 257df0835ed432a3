"""Pass 5, warnings about how declarations are wired together, given only when the flow
has no error (they would repeat its consequences): what nothing publishes to, consumes,
uses or runs on (W404, W405, W408), instances beyond a topic's partitions (W403), and
publishes that must name a subject (W411)."""

from __future__ import annotations

from tideflow.compiler import schema as s
from tideflow.dsl.ast import Block
from tideflow.dsl.diagnostics import Diagnostic, Related

from .common import head_span, plural, reference_span, value_span
from .context import CheckContext
from .model import Declaration, Section

__all__ = ["warn_partitions", "warn_subject_needed", "warn_unused"]


def warn_unused(ctx: CheckContext, flow: Declaration | None) -> None:
    jobs = ctx.declarations["job"].values()
    consumers = ctx.declarations["consumer"].values()
    published = {t for job in jobs for t in job.section.values.get("publishes", ())}
    dead_letters = {
        c.section.values["dead_letter"] for c in consumers if "dead_letter" in c.section.values
    }
    published.update(dead_letters)
    # a dead-letter topic is read by people (and replays), not by a consumer
    consumed = {c.section.values.get("consumes") for c in consumers} | dead_letters
    for name, topic in ctx.declarations["topic"].items():
        if name not in published:
            _warn(
                ctx,
                "W404",
                f'nothing publishes to topic "{name}"',
                topic.block,
                "no job lists it in `publishes`",
            )
        if name not in consumed:
            _warn(
                ctx,
                "W405",
                f'nothing consumes topic "{name}"',
                topic.block,
                "no consumer names it in `consumes`",
            )
    used_pools = {job.section.values.get("pool") for job in jobs}
    for name, pool in ctx.declarations["pool"].items():
        if name not in used_pools:
            _warn(ctx, "W408", f'pool "{name}" is never used', pool.block, "no job uses it")
    used_brokers = {t.section.values.get("broker") for t in ctx.declarations["topic"].values()}
    for name, broker in ctx.declarations["broker"].items():
        if name not in used_brokers:
            _warn(ctx, "W408", f'broker "{name}" is never used', broker.block, "no topic is on it")
    used_executors = {job.section.values.get("executor") for job in jobs}
    if flow is not None:
        used_executors.add(flow.section.values.get("executor"))
    for name, executor in ctx.declarations["executor"].items():
        if name not in used_executors:
            label = "no job runs on it, and it is not the flow's `executor`"
            _warn(ctx, "W408", f'executor "{name}" is never used', executor.block, label)


def warn_subject_needed(ctx: CheckContext) -> None:
    """W411: a topic on a broker that routes by subject, whose subjects all have
    wildcards, takes only messages that name their subject."""
    brokers = ctx.declarations["broker"]
    needy: dict[str, tuple[str, ...]] = {}
    for name, topic in ctx.declarations["topic"].items():
        broker = brokers.get(topic.section.values.get("broker", ""))
        if broker is None or broker.section.backend is None:
            continue
        if broker.section.backend.subject_routed:
            wildcards = _wildcard_subjects(topic)
            if wildcards:
                needy[name] = wildcards

    def related(topic: str) -> tuple[Related, ...]:
        item = ctx.declarations["topic"][topic].section.items["subjects"]
        return (Related(value_span(item), "every subject has a wildcard"),)

    fix = "or give the topic a subject without wildcards (the first one is the default)"
    for job in ctx.declarations["job"].values():
        values, items = job.section.values, job.section.items
        for topic in values.get("publishes", ()):
            if topic not in needy:
                continue
            subjects = ", ".join(needy[topic])
            example = ".".join(
                "<token>" if t in ("*", ">") else t for t in needy[topic][0].split(".")
            )
            if values.get("publish_stdout"):
                label = "lines of `publish_stdout` cannot name one: each publish fails"
                help = fix.removeprefix("or ")
            else:
                label = "without one, the publish fails"
                help = f'name it: `ctx.publish("{topic}", value, subject="{example}")`, {fix}'
            ctx.found.append(
                Diagnostic(
                    "W411",
                    f'{job.block.describe()} publishes to topic "{topic}", whose subjects '
                    f"all have wildcards ({subjects}): each message must name its subject",
                    reference_span(items["publishes"], topic),
                    label=label,
                    help=help,
                    related=related(topic),
                )
            )
    for consumer in ctx.declarations["consumer"].values():
        dead_letter = consumer.section.values.get("dead_letter")
        if dead_letter not in needy:
            continue
        ctx.found.append(
            Diagnostic(
                "W411",
                f'{consumer.block.describe()} dead-letters to topic "{dead_letter}", whose '
                f"subjects all have wildcards ({', '.join(needy[dead_letter])})",
                value_span(consumer.section.items["dead_letter"]),
                label="a dead-lettered message has no subject there: dead-lettering fails",
                help=fix.removeprefix("or "),
                related=related(dead_letter),
            )
        )


def _warn(ctx: CheckContext, code: str, message: str, block: Block, label: str) -> None:
    ctx.found.append(Diagnostic(code, message, head_span(block), label=label))


def warn_partitions(ctx: CheckContext) -> None:
    topics = ctx.declarations["topic"]
    brokers = ctx.declarations["broker"]
    for consumer in ctx.declarations["consumer"].values():
        scale = consumer.section.values.get("scale")
        topic = topics.get(consumer.section.values.get("consumes", ""))
        if not isinstance(scale, Section) or topic is None or "max" not in scale.values:
            continue
        broker = brokers.get(topic.section.values.get("broker", ""))
        if broker is None or broker.section.backend is None:
            continue
        if not broker.section.backend.partitioned:
            continue
        partitions = topic.section.values.get("partitions", s.TOPIC.by_name["partitions"].default)
        maximum = scale.values["max"]
        if maximum > partitions:
            ctx.found.append(
                Diagnostic(
                    "W403",
                    f"scale `max` ({maximum}) of {consumer.block.describe()} is above the "
                    f'{plural(partitions, "partition")} of topic "{topic.name}"',
                    value_span(scale.items["max"]),
                    label=f"instances beyond {partitions} would idle",
                    help=f"set `max = {partitions}`, or give the topic more partitions",
                    related=(Related(head_span(topic.block), "the topic"),),
                )
            )


def _wildcard_subjects(topic: Declaration) -> tuple[str, ...]:
    """The topic's `subjects` when every one of them has a wildcard token (`*`, `>`),
    else ()."""
    subjects = topic.section.values.get("subjects") or ()
    if isinstance(subjects, str):
        subjects = (subjects,)
    if subjects and all({"*", ">"} & set(s.split(".")) for s in subjects):
        return tuple(subjects)
    return ()
