"""What the `local` scaler and the instances it starts agree on.

The scaler starts `python -m tideflow worker FILE CONSUMER ...` with two variables
in its environment, which `tideflow worker` reads: `LIFELINE_ENV`, so that the
instance notices when the scaler's process is gone, and `PARENT_ENV`, so that a
later scaler can tell a leftover from an instance of a live orchestrator. The
instance tells it consumes with a log line holding
`tideflow.plugins.api.ready_message(instance_id)`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LIFELINE_ENV", "PARENT_ENV"]

#: Set by the `local` scaler in an instance's environment: the number of an
#: inherited file descriptor, the read end of a pipe whose write end only the
#: scaler's process holds. End of file on it means that process is gone: the
#: instance then drains and exits (no orphans after `kill -9` of the orchestrator).
LIFELINE_ENV: Final = "TIDEFLOW_WORKER_LIFELINE"
#: Set by the `local` scaler: "PID:START" of the process that started the
#: instance (START is field 22 of /proc/PID/stat), so that a later scaler can tell
#: a leftover whose parent is gone from an instance of a live orchestrator.
PARENT_ENV: Final = "TIDEFLOW_WORKER_PARENT"
