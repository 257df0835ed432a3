"""`tideflow simulate`: a load profile replayed through the autoscaler, beside KEDA's defaults.

One idea per module: `profiles` (the load: segments of a steady rate and
bursts, read from their compact form, JSON or CSV), `queue_model` (the fluid
queue on a virtual clock that a policy drives), `policies` (tideflow's
`decide()` and KEDA's defaults) and `comparison` (both policies on the same
load, their figures and time series). Drawing the comparison is the CLI's
business (`tideflow.cli.plots`), so the runtime never loads matplotlib.
"""

from __future__ import annotations

from .comparison import Comparison, compare, csv_text
from .policies import KedaDefaultPolicy, TideflowPolicy
from .profiles import (
    Burst,
    LoadProfile,
    ProfileError,
    Segment,
    load_profile,
    parse_duration,
    parse_profile,
    parse_rate,
)
from .queue_model import PolicyRun, Sample, ScalingPolicy, SimulationSettings, run_policy

__all__ = [
    "Burst",
    "Comparison",
    "KedaDefaultPolicy",
    "LoadProfile",
    "PolicyRun",
    "ProfileError",
    "Sample",
    "ScalingPolicy",
    "Segment",
    "SimulationSettings",
    "TideflowPolicy",
    "compare",
    "csv_text",
    "load_profile",
    "parse_duration",
    "parse_profile",
    "parse_rate",
    "run_policy",
]
