"""The `kubernetes` executor: each attempt of a job is one batch/v1 Job.

The Job
    `start` creates one Job per attempt (`job_manifest`), named after the attempt
    (`flow-job-run-attempt` and a short hash of the request, DNS-safe, at most 52
    characters) and labelled with `tideflow.dev/flow`, `job`, `run`, `attempt` and
    `app.kubernetes.io/managed-by: tideflow`; the attempt's key is the annotation
    `tideflow.dev/key`. Its one container runs tideflow's one-shot runner,
    `python -m tideflow.runtime.job_worker --once env:TIDEFLOW_ATTEMPT
    --termination-log /dev/termination-log`, with the request (secret values left
    out) in `TIDEFLOW_ATTEMPT`, the job's plain `env` as values and its `secret()`s
    as `secretKeyRef`s into the Secret `secret_name` (never a value in the
    manifest). `backoffLimit: 0` (tideflow counts retries), `restartPolicy: Never`,
    `activeDeadlineSeconds` from the job's timeout, `ttlSecondsAfterFinished`, and
    requests and limits from `resources` (`gpu` becomes `nvidia.com/gpu`).

Waiting
    One list call per `poll_interval` (Jobs with the managed-by label) serves every
    attempt waited for. When a Job has ended, its pod's container state gives the
    exit code and the termination message (the runner's JSON summary: status and
    error, traceback included), and the pod's log (stdout and stderr, mixed as the
    kubelet keeps them) becomes the attempt's stdout; its "LEVEL message" lines are
    the attempt's log records, timed by the kubelet. Then the Job is deleted with
    its pod: collected. A Job that failed with reason `DeadlineExceeded` is a
    `timeout`; a pod that was evicted, lost with its node or deleted, or a Job
    deleted by someone else, makes the attempt `lost`.

Cancelling
    `cancel` deletes the Job with `propagationPolicy: Foreground`: the pod gets
    SIGTERM, then SIGKILL after the `grace_period`, and the Job goes once its pod
    has gone; `wait` then returns `cancelled` with what the pod had printed.

Re-attaching
    `attempts()` lists the Jobs with the managed-by label in the namespace (those
    not collected yet); `wait` of such a handle works from a new process, by name.

Calls run in worker threads, with the retries and error messages of
`kubernetes_common`; a 403 names the Role's missing rule (docs/kubernetes.md).

The package: the option schema the compiler reads (`options`), the Job's manifest
(`manifest`), reading an ended Job (`outcome`) and the executor (`executor`). The
Kubernetes client is imported on first use only.
"""

from __future__ import annotations

from .executor import KubernetesAccessError, KubernetesExecutor, tideflow_register_executors
from .manifest import job_manifest, job_name
from .outcome import PodLost, PodNotStarted, attempt_outcome

__all__ = [
    "KubernetesAccessError",
    "KubernetesExecutor",
    "PodLost",
    "PodNotStarted",
    "attempt_outcome",
    "job_manifest",
    "job_name",
    "tideflow_register_executors",
]
