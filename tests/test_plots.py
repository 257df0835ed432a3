"""`tideflow.cli.plots`: the picture `tideflow simulate --plot` draws, with matplotlib."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tideflow.compiler.ir import ScaleRule
from tideflow.runtime.simulate import (
    Comparison,
    LoadProfile,
    Segment,
    SimulationSettings,
    compare,
    parse_profile,
)

from tideflow.cli.plots import PlotUnavailableError, render_plot

RULE = ScaleRule(max=10, lag_per_instance=100, poll=2.0, cooldown=60.0)


def _comparison(profile: LoadProfile, settings: SimulationSettings) -> Comparison:
    return compare(profile, RULE, settings)


def test_the_plot_is_a_png() -> None:
    result = _comparison(
        parse_profile("0-1m:100,burst@2m:3000"), SimulationSettings(service_rate=100, duration=300)
    )
    data = render_plot(result, "order_workers")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_without_matplotlib_the_plot_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = _comparison(
        LoadProfile((Segment(0, 10, 1),)), SimulationSettings(service_rate=1, duration=20)
    )
    with pytest.raises(PlotUnavailableError, match="pip install matplotlib"):
        render_plot(result, "x")


def test_importing_the_simulator_loads_no_matplotlib() -> None:
    code = "import sys, tideflow.runtime.simulate; print('matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
