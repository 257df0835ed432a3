"""The same load through tideflow's decision and through KEDA's defaults, side by side."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from tideflow.compiler.ir import ScaleRule

from .policies import KedaDefaultPolicy, TideflowPolicy
from .profiles import LoadProfile
from .queue_model import PolicyRun, SimulationSettings, run_policy

__all__ = ["Comparison", "compare", "csv_text"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """The same load through tideflow's decision and through KEDA's defaults."""

    rule: ScaleRule
    settings: SimulationSettings
    profile: LoadProfile
    spike_at: float | None
    drain_level: float
    tideflow: PolicyRun
    keda: PolicyRun

    def ratio(self, figure: str) -> float | None:
        """tideflow's figure divided by KEDA's (below 1: tideflow's is smaller)."""
        ours, theirs = getattr(self.tideflow, figure), getattr(self.keda, figure)
        if ours is None or theirs is None or theirs == 0:
            return None
        return float(ours) / float(theirs)

    def series(self) -> Iterator[dict[str, float | int]]:
        """The time series of both policies, one row per sample instant."""
        for ours, theirs in zip(self.tideflow.samples, self.keda.samples, strict=True):
            yield {
                "t": ours.t,
                "arrival_rate": ours.arrival_rate,
                "tideflow_backlog": ours.backlog,
                "tideflow_instances": ours.instances,
                "tideflow_ready": ours.ready,
                "keda_backlog": theirs.backlog,
                "keda_instances": theirs.instances,
                "keda_ready": theirs.ready,
            }

    def summary(self) -> dict[str, Any]:
        """The figures of both policies and their ratios, JSON-ready."""
        figures = ("peak_backlog", "drain_seconds", "instance_seconds", "scale_events")
        return {
            "spike_at": self.spike_at,
            "drain_level": self.drain_level,
            "tideflow": _run_figures(self.tideflow),
            "keda_default": _run_figures(self.keda),
            "ratios": {name: self.ratio(name) for name in figures},
        }


def _run_figures(run: PolicyRun) -> dict[str, Any]:
    return {
        "peak_backlog": run.peak_backlog,
        "drain_seconds": run.drain_seconds,
        "instance_seconds": run.instance_seconds,
        "scale_events": run.scale_events,
        "max_instances": run.max_instances,
        "decisions": run.decisions,
        "final_backlog": run.final_backlog,
    }


def compare(profile: LoadProfile, rule: ScaleRule, settings: SimulationSettings) -> Comparison:
    """Run `profile` through both policies, each starting at the rule's `min` instances.
    Drained means back to the rule's `activation_lag` (an idle consumer's backlog)."""
    level = float(rule.activation_lag)
    runs = [
        run_policy(profile, policy, settings, initial=rule.min, drain_level=level)
        for policy in (TideflowPolicy(rule, settings), KedaDefaultPolicy(rule, settings))
    ]
    return Comparison(rule, settings, profile, profile.last_spike(), level, runs[0], runs[1])


def csv_text(rows: Iterable[Mapping[str, float | int]]) -> str:
    """The time series as CSV with a header row."""
    out = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow({k: f"{v:g}" if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()
