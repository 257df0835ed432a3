"""Which jobs a run holds, and the trigger rules (pure)."""

from __future__ import annotations

import networkx as nx
import pytest
from tideflow.compiler.ir import JobNode
from tideflow.runtime.dag import UPSTREAM_FAILED, Decision, decide, plan_run, skip_reason

from .jobs_for_tests.flows import make_flow

S, F, K, C, U = "success", "failed", "skipped", "cancelled", UPSTREAM_FAILED
RUN, SKIP, WAIT, UPF = Decision.RUN, Decision.SKIP, Decision.WAIT, Decision.UPSTREAM_FAILED

CASES = [
    # rule, endings of the dependencies (None: still going), decision
    ("all_success", [S, S], RUN),
    ("all_success", [S, None], WAIT),
    ("all_success", [F, None], UPF),  # decided before the other ends
    ("all_success", [K, None], SKIP),
    ("all_success", [K, F], UPF),
    ("all_success", [C, S], UPF),
    ("all_success", [U, S], UPF),
    ("all_done", [S, F], RUN),
    ("all_done", [K, C], RUN),
    ("all_done", [F, None], WAIT),
    ("one_failed", [F, None], RUN),  # starts at once
    ("one_failed", [U, S], RUN),  # upstream_failed counts as failed
    ("one_failed", [C, S], RUN),
    ("one_failed", [S, None], WAIT),
    ("one_failed", [S, K], SKIP),
    ("one_success", [S, None], RUN),
    ("one_success", [F, None], WAIT),
    ("one_success", [F, K], UPF),
    ("one_success", [K, K], SKIP),
    ("none_failed", [S, K], RUN),
    ("none_failed", [S, None], WAIT),
    ("none_failed", [F, None], UPF),
    ("none_failed", [U, S], UPF),
    ("always", [None, None], RUN),
    ("always", [F, None], RUN),
]


@pytest.mark.parametrize(("rule", "endings", "decision"), CASES)
def test_trigger_rules(rule: str, endings: list[str | None], decision: Decision) -> None:
    assert decide(rule, endings) is decision


def test_every_rule_of_the_language_is_decided() -> None:
    from tideflow.compiler.schema import TRIGGER_RULES

    assert {rule for rule, _, _ in CASES} == set(TRIGGER_RULES)


def test_an_unknown_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trigger rule"):
        decide("most_success", [S])


def test_skip_reasons_name_the_deciding_dependencies() -> None:
    reason = skip_reason("all_success", {"a": S, "b": F, "c": None})
    assert reason == "trigger rule all_success: a dependency failed (`b` failed)"
    assert "`a` skipped" in skip_reason("all_success", {"a": K, "b": S})
    assert "no dependency failed" in skip_reason("one_failed", {"a": S})


def _order(edges: list[tuple[str, str]], extra: tuple[str, ...] = ()) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(extra)
    graph.add_edges_from(edges)
    return graph


def test_a_run_holds_the_root_and_everything_downstream() -> None:
    #   x ──► a ──► b ──► d
    #          └──► c ──┘      y (unrelated), z ──► d
    order = _order(
        [("x", "a"), ("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("z", "d")], extra=("y",)
    )
    plan = plan_run(order, "a")
    assert plan.jobs[0] == "a"
    assert set(plan.jobs) == {"a", "b", "c", "d"}
    assert plan.jobs.index("d") > max(plan.jobs.index("b"), plan.jobs.index("c"))
    assert plan.upstream["a"] == () and plan.outside["a"] == ()  # the root ignores `after`
    assert plan.upstream["d"] == ("b", "c")
    assert plan.outside["d"] == ("z",)
    assert plan.downstream["a"] == ("b", "c")
    assert plan.dependencies("d") == ("b", "c", "z")


def test_plans_from_a_flows_dependency_graph() -> None:
    flow = make_flow(
        [
            JobNode("extract", run="m:f"),
            JobNode("load", run="m:f", after=("extract",)),
            JobNode("report", run="m:f", after=("load",)),
        ]
    )
    assert plan_run(flow.dependency_graph(), "load").jobs == ("load", "report")
    with pytest.raises(KeyError):
        plan_run(flow.dependency_graph(), "missing")
