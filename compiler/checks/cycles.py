"""Pass 4: dependency cycles among jobs (E301), one diagnostic per strongly connected
group, reading "waits for" along the cycle from the job written first."""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
from tideflow.dsl.ast import Span
from tideflow.dsl.diagnostics import Related

from .common import reference_span
from .context import CheckContext
from .model import Declaration

__all__ = ["check_cycles"]


def check_cycles(ctx: CheckContext) -> None:
    """E301: one diagnostic per strongly connected group of jobs."""
    jobs = ctx.declarations["job"]
    graph = nx.DiGraph()
    order = {name: index for index, name in enumerate(jobs)}
    graph.add_nodes_from(jobs)
    graph.add_edges_from(
        (name, dependency)
        for name, job in jobs.items()
        for dependency in job.section.values.get("after", ())
        if dependency in jobs
    )
    for group in nx.strongly_connected_components(graph):
        if len(group) == 1:
            (only,) = group
            if not graph.has_edge(only, only):
                continue
            path = [only, only]
        else:
            start = min(group, key=order.__getitem__)
            edges = nx.find_cycle(graph.subgraph(group), source=start)
            path = [edge[0] for edge in edges]
            first = min(range(len(path)), key=lambda i: order[path[i]])
            path = [*path[first:], *path[:first], path[first]]
        chain = " -> ".join(f'job "{name}"' for name in path)
        spans = [_after_span(jobs, path[i], path[i + 1]) for i in range(len(path) - 1)]
        ctx.error(
            "E301",
            f"dependency cycle: {chain}",
            spans[0],
            label=f'job "{path[0]}" waits for job "{path[1]}"',
            related=tuple(
                Related(span, f'job "{path[i + 1]}" waits for job "{path[i + 2]}"')
                for i, span in enumerate(spans[1:])
            ),
            notes=('each arrow reads "waits for" (`after`)',),
        )


def _after_span(jobs: Mapping[str, Declaration], job: str, dependency: str) -> Span:
    """Where `job` names `dependency` in its `after`."""
    return reference_span(jobs[job].section.items["after"], dependency)
