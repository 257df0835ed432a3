"""Which jobs a run contains, and when each may start: trigger rules, pure.

A flow run started at job R contains R and every job downstream of R. R itself
starts when the run starts: it was fired explicitly, so its own `after` list is
not consulted. Every other job waits for its dependencies and then follows its
trigger rule, with Apache Airflow's meanings (docs/language.md, "Trigger rules"):

| rule          | starts when                               | otherwise it ends                    |
|---------------|-------------------------------------------|--------------------------------------|
| `all_success` | every dependency succeeded                | upstream_failed once one failed,     |
|               |                                           | skipped once one was skipped         |
| `all_done`    | every dependency ended, however           | (never)                              |
| `one_failed`  | a dependency failed                       | skipped: all ended, none failed      |
| `one_success` | a dependency succeeded                    | all ended, none succeeded:           |
|               |                                           | upstream_failed if one failed, else  |
|               |                                           | skipped                              |
| `none_failed` | every dependency ended, none failed       | upstream_failed once one failed      |
| `always`      | at once, without waiting for dependencies | (never)                              |

"Failed" means failed, upstream_failed or cancelled (an operator stopping a job
is not a success, and clean-up jobs on `one_failed` should still run). The run
history has no upstream_failed status: such a job run is recorded `skipped`
(with the reason in the orchestrator's log), and counts as failed for the jobs
after it within the run. A decision is taken as soon as it is certain.

A dependency *outside* the run (a job that is not downstream of R, such as the
second parent of a join) counts with the status of its newest *finished* run,
read when the job is first evaluated; when it has never finished a run it
counts as skipped (it did not run), so `all_success` skips the job and
`none_failed` or `all_done` lets it start. The executor logs the reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import networkx as nx

from .model import RunStatus

UPSTREAM_FAILED: Final = str(RunStatus.UPSTREAM_FAILED)
FAILED_LIKE: Final = frozenset({str(RunStatus.FAILED), str(RunStatus.CANCELLED), UPSTREAM_FAILED})
SUCCESS: Final = str(RunStatus.SUCCESS)


class Decision(enum.Enum):
    WAIT = "wait"  # not decided yet: some dependency is still going
    RUN = "run"
    SKIP = "skip"  # the rule can no longer be met, and no dependency failed
    UPSTREAM_FAILED = "upstream_failed"  # the rule can no longer be met because one failed


def decide(rule: str, upstream: Sequence[str | None]) -> Decision:
    """Apply a trigger rule to the dependencies' endings: a `RunStatus` value or
    `UPSTREAM_FAILED` for each one that ended, None for each still going."""
    if rule == "always":
        return Decision.RUN
    ended = [s for s in upstream if s is not None]
    all_ended = len(ended) == len(upstream)
    failed = any(s in FAILED_LIKE for s in ended)
    succeeded = SUCCESS in ended
    if rule == "all_success":
        if failed:
            return Decision.UPSTREAM_FAILED
        if any(s != SUCCESS for s in ended):
            return Decision.SKIP
        return Decision.RUN if all_ended else Decision.WAIT
    if rule == "all_done":
        return Decision.RUN if all_ended else Decision.WAIT
    if rule == "one_failed":
        if failed:
            return Decision.RUN
        return Decision.SKIP if all_ended else Decision.WAIT
    if rule == "one_success":
        if succeeded:
            return Decision.RUN
        if not all_ended:
            return Decision.WAIT
        return Decision.UPSTREAM_FAILED if failed else Decision.SKIP
    if rule == "none_failed":
        if failed:
            return Decision.UPSTREAM_FAILED
        return Decision.RUN if all_ended else Decision.WAIT
    raise ValueError(f"unknown trigger rule {rule!r}")


def skip_reason(rule: str, upstream: Mapping[str, str | None]) -> str:
    """Why a job did not run, naming the dependencies that decided it."""

    def named(picked: frozenset[str] | None = None) -> str:
        found = [
            f"`{job}` {ending}"
            for job, ending in upstream.items()
            if ending is not None and (picked is None or ending in picked)
        ]
        return ", ".join(found) or "none"

    if rule in ("all_success", "none_failed"):
        failed = named(FAILED_LIKE)
        if failed != "none":
            return f"trigger rule {rule}: a dependency failed ({failed})"
        others = frozenset(s for s in upstream.values() if s is not None) - {SUCCESS}
        return f"trigger rule {rule}: a dependency did not succeed ({named(others)})"
    if rule == "one_failed":
        return f"trigger rule one_failed: no dependency failed ({named()})"
    if rule == "one_success":
        return f"trigger rule one_success: no dependency succeeded ({named()})"
    return f"trigger rule {rule} not met ({named()})"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """The jobs of a run started at `root` and how they depend on each other."""

    root: str
    jobs: tuple[str, ...]  # topological order, root first
    upstream: Mapping[str, tuple[str, ...]]  # dependencies inside the run
    outside: Mapping[str, tuple[str, ...]]  # dependencies outside the run
    downstream: Mapping[str, tuple[str, ...]]  # dependents inside the run

    def dependencies(self, job: str) -> tuple[str, ...]:
        return self.upstream[job] + self.outside[job]


def plan_run(order: nx.DiGraph, root: str) -> RunPlan:
    """The run started at `root`, from a dependency graph whose edges point from a
    dependency to its dependent (`FlowIR.dependency_graph()`)."""
    if root not in order:
        raise KeyError(root)
    members = {root} | nx.descendants(order, root)
    jobs = tuple(nx.lexicographical_topological_sort(order.subgraph(members)))
    upstream: dict[str, tuple[str, ...]] = {}
    outside: dict[str, tuple[str, ...]] = {}
    downstream: dict[str, tuple[str, ...]] = {}
    for job in jobs:
        parents = () if job == root else tuple(sorted(order.predecessors(job)))
        upstream[job] = tuple(p for p in parents if p in members)
        outside[job] = tuple(p for p in parents if p not in members)
        downstream[job] = tuple(sorted(c for c in order.successors(job) if c in members))
    return RunPlan(root, jobs, upstream, outside, downstream)
