"""The executor: runs a job's DAG, one attempt per worker process, and records everything.

`submit(request)` creates a *flow run* holding the requested (root) job and every
job downstream of it, then drives it in the background; `wait(flow_run_id)`
returns its final status. Jobs start as their trigger rules allow (see
`runtime.dag`, which also says how a dependency outside the run counts),
bounded by the flow's concurrency limit, pools and the machine's CPU and
memory (`runtime.resources`).

Overlap (`JobNode.overlap`) applies per root job when a request arrives while a
flow run of the same root job is unfinished:
- `skip`: a flow run is recorded with the root's job run `skipped` (and nothing
  downstream), so operators see that an instant came and was skipped;
- `queue`: the flow run is recorded now (its job runs `pending`) and starts
  when the earlier ones of that root job have finished, first in first out;
- `allow`: it starts at once.

Attempts: Python callables run in pre-started worker processes
(`runtime.worker_pool`), commands as processes of their own
(`runtime.commands`); each attempt records its start and end, status, exit
code, stdout, stderr, log records and, for a failure, an `ErrorInfo`, with
every secret value redacted. A failed attempt (failed, timed out, crashed) is
retried as the job's retry policy says (`runtime.retry`), except when retrying
cannot help: a job needing more than the machine or its pool has, a missing
`env()`/`secret()` variable, or a program that does not exist.

Statuses when something stops a job: a cancellation requested through
`Store.request_cancel` (polled every `cancel_poll` seconds) kills the running
attempt (attempt `cancelled`) and ends the job run `cancelled`; `shutdown(grace)`
starts nothing new, lets running attempts finish for `grace` seconds, kills the
rest (attempt `interrupted`) and ends every unfinished job run and flow run
`cancelled`.

Notifications (`notify`, awaited in the background, failures only logged),
names from `compiler.schema.NOTIFY_EVENTS`:
- `success`: a job run succeeded;
- `retry`: an attempt failed and another will follow;
- `timeout`: an attempt timed out (beside `retry` or `failure`);
- `failure`: a job run failed (its last attempt failed);
- `retries_exhausted`: a job run failed after every attempt its policy allows,
  when that is more than one (sent right after `failure`, same job run id);
- `lost`: `recover()` found an attempt that was running when the orchestrator died.

The package: `driver` (the `Executor`), `attempts` (one attempt, whoever runs
it), `local` (attempts on this machine), `cancellation`, `recovery`,
`notifications` (`RunEvent`), `state`.
"""

from __future__ import annotations

from .attempts import AttemptTimeout, UnschedulableError, WorkerCrashed
from .cancellation import CANCEL_POLL_SECONDS, KILL_GRACE_SECONDS
from .driver import Executor, ExecutorClosedError, RunRequest, SubmitRequest
from .notifications import Notify, RunEvent

__all__ = [
    "CANCEL_POLL_SECONDS",
    "KILL_GRACE_SECONDS",
    "AttemptTimeout",
    "Executor",
    "ExecutorClosedError",
    "Notify",
    "RunEvent",
    "RunRequest",
    "SubmitRequest",
    "UnschedulableError",
    "WorkerCrashed",
]
