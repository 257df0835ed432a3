"""The `local` executor (`executor`: attempts on this machine) and the `local`
scaler: consumer instances as supervised `tideflow worker` processes on this
machine (`scaler`), the environment and ready line it shares with them
(`protocol`), and how it tells its processes and leftovers apart (`process`)."""

from __future__ import annotations

from .executor import LocalExecutor, tideflow_register_executors
from .scaler import LocalScaler, tideflow_register_scalers

__all__ = [
    "LocalExecutor",
    "LocalScaler",
    "tideflow_register_executors",
    "tideflow_register_scalers",
]
