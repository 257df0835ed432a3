"""Pictures the CLI draws with matplotlib: `tideflow simulate --plot`.

matplotlib is optional and heavy, so it is imported when a picture is drawn,
never when this module is.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tideflow.runtime.simulate import Comparison

__all__ = ["PlotUnavailableError", "render_plot"]


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def render_plot(comparison: Comparison, title: str) -> bytes:
    """A PNG: backlog (top) and instances (bottom) over time, for both policies."""
    try:
        # lazy: matplotlib is heavy and optional (only --plot needs it)
        import matplotlib

        matplotlib.use("Agg")  # no display: draw into memory
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise PlotUnavailableError(
            "drawing a plot needs matplotlib: pip install matplotlib"
        ) from exc

    runs = (
        (comparison.tideflow, "tideflow", "#1f77b4"),
        (comparison.keda, "KEDA defaults", "#d62728"),
    )
    minutes = comparison.settings.duration >= 600
    scale, unit = (60.0, "min") if minutes else (1.0, "s")
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.8), dpi=110)
    try:
        # the arrival rate, faint, behind the backlog: what the policies reacted to
        samples = comparison.tideflow.samples
        rates = top.twinx()
        rates.fill_between(
            [s.t / scale for s in samples],
            [s.arrival_rate for s in samples],
            step="post",
            color="grey",
            alpha=0.15,
            lw=0,
            label="arrivals (right axis)",
        )
        rates.set_ylabel("arrivals (messages/s)", color="grey")
        rates.tick_params(axis="y", colors="grey")
        rates.set_ylim(bottom=0)
        top.set_zorder(rates.get_zorder() + 1)
        top.patch.set_visible(False)
        for run, label, colour in runs:
            xs = [s.t / scale for s in run.samples]
            top.plot(xs, [s.backlog for s in run.samples], label=label, color=colour, lw=1.6)
            bottom.step(
                xs,
                [s.instances for s in run.samples],
                where="post",
                label=f"{label}: running or starting",
                color=colour,
                lw=1.6,
            )
            bottom.step(
                xs,
                [s.ready for s in run.samples],
                where="post",
                color=colour,
                lw=0.9,
                ls=":",
                label=f"{label}: ready",
            )
        for axis in (top, bottom):
            for burst in comparison.profile.bursts:
                if burst.at <= comparison.settings.duration:
                    axis.axvline(burst.at / scale, color="grey", lw=0.8, ls="--")
            axis.grid(True, alpha=0.3)
        handles, labels = top.get_legend_handles_labels()
        extra_handles, extra_labels = rates.get_legend_handles_labels()
        top.legend(handles + extra_handles, labels + extra_labels, loc="upper left", fontsize=8)
        bottom.legend(loc="upper left", fontsize=8, ncol=2)
        top.set_ylabel("backlog (messages)")
        top.set_ylim(bottom=0)
        top.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        rates.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        peak = max(max(s.instances for s in run.samples) for run, _, _ in runs)
        bottom.set_ylim(0, max(peak, 1) * 1.35)  # headroom for the legend
        bottom.set_ylabel("instances")
        bottom.yaxis.get_major_locator().set_params(integer=True)
        bottom.set_xlabel(f"time ({unit}); dashed lines: bursts")
        top.set_title(title, fontsize=10)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
