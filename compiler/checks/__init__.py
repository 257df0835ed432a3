"""Semantic checks: the merged blocks of a flow against the schema, collecting diagnostics.

The checker interprets `compiler.schema` generically: a block's attributes are
looked up in its `BlockSchema` (plus the options of the backend it names, for
`broker`, `notify` and `scale`), and each value is checked and converted by
its value type. What the schema cannot say (a job runs `run` or `command`, a
topic's broker may be implied, dependency cycles, the warnings) follows in
named passes. Nothing here raises on a user's mistake: every problem of every
block is collected, and the converted values are handed to `compiler.build`.

`check_flow` chains the passes, one module each, over one `CheckContext`:
`declare` (block types, names, duplicates), `sections` (each body against its
schema, with `values` and `calls` converting what is written), `constraints` (what
the schema cannot say about one declaration, with the cron warnings of
`schedules`), `placement` (each job against the executor it runs on), `cycles`
(dependencies among jobs) and `wiring` (the warnings about how declarations fit
together).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from tideflow.dsl.loader import LoadedFlow
from tideflow.plugins.api import options as o

from .common import head_span, with_defaults
from .constraints import check_consumer, check_job, check_topic
from .context import CheckContext
from .cycles import check_cycles
from .declare import declare
from .model import CheckedFlow, Declaration, OtherFlowsJob, ScheduleSpec, Section
from .placement import place_jobs
from .sections import SectionChecker
from .wiring import warn_partitions, warn_subject_needed, warn_unused

__all__ = [
    "CheckedFlow",
    "Declaration",
    "OtherFlowsJob",
    "ScheduleSpec",
    "Section",
    "check_flow",
    "with_defaults",
]


def check_flow(loaded: LoadedFlow, catalog: o.Catalog, *, today: date | None = None) -> CheckedFlow:
    """Check the merged blocks of `loaded`. `today` anchors the daylight-saving warnings."""
    ctx = CheckContext(catalog, today or datetime.now(UTC).date())
    sections = SectionChecker(ctx)
    flow: Declaration | None = None
    for kind, name, block, schema in declare(ctx, loaded.blocks):
        section = sections.section(block.body, schema, block.describe(), head_span(block))
        if name is None:
            continue
        declaration = Declaration(kind, name, block, section)
        if kind == "flow":
            flow = flow or declaration
        elif name not in ctx.declarations[kind]:
            ctx.declarations[kind][name] = declaration
    flow_zone = "UTC"
    if flow is not None:
        flow_zone = flow.section.values.get("timezone", "UTC")
    for declaration in ctx.declarations["topic"].values():
        check_topic(ctx, declaration)
    timezones: dict[str, str] = {}
    for declaration in ctx.declarations["job"].values():
        timezones[declaration.name] = check_job(ctx, declaration, flow_zone)
    for declaration in ctx.declarations["consumer"].values():
        check_consumer(ctx, declaration)
    place_jobs(ctx, flow)
    check_cycles(ctx)
    if not ctx.has_errors:
        # these would only repeat the consequences of an error
        warn_unused(ctx, flow)
        warn_partitions(ctx)
        warn_subject_needed(ctx)
    flow_name = flow.name if flow is not None else _stem(loaded.root)
    return CheckedFlow(
        flow_name,
        loaded.root,
        flow,
        {kind: dict(names) for kind, names in ctx.declarations.items()},
        tuple(ctx.found),
        timezones,
    )


def _stem(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name[: -len(".flow")] if name.endswith(".flow") else name.rsplit(".", 1)[0] or name
