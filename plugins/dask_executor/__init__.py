"""The `dask` executor: job attempts as tasks on a dask.distributed cluster. The
executor the orchestrator talks to (`executor`), what runs on a Dask worker for
one attempt (`task`), and the option schema the compiler reads (`options`).

dask.distributed (the `tideflow[dask]` extra) is imported on first use only."""

from __future__ import annotations

from .executor import DaskExecutor, DaskNotInstalledError, tideflow_register_executors

__all__ = ["DaskExecutor", "DaskNotInstalledError", "tideflow_register_executors"]
