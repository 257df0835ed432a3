"""The outcome of an ended Job: its conditions, its pod's container state (exit
code, the runner's termination message) and its pod's log."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tideflow.plugins.api import AttemptError, AttemptResult, reply_from_json

from .manifest import CONTAINER

__all__ = [
    "PodLost",
    "PodNotStarted",
    "attempt_outcome",
    "job_finished",
    "not_started",
    "parse_time",
    "pod_where",
    "split_logs",
]

_LOG_RECORD = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)\Z", re.DOTALL)
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) ")


class PodLost(Exception):
    """The attempt's pod was evicted, lost with its node, or deleted."""


class PodNotStarted(Exception):
    """The attempt's pod did not start its container within `start_timeout`."""


for _kind in (PodLost, PodNotStarted):
    _kind.__module__ = "tideflow.plugins.kubernetes_executor"


def _true_conditions(document: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    status = (document or {}).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or () if c.get("status") == "True"}


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether the Job has ended: a `Complete` or `Failed` condition."""
    conditions = _true_conditions(job)
    return bool({"Complete", "Failed"} & conditions.keys())


def _container_status(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def pod_where(pod: Mapping[str, Any] | None, namespace: str) -> str | None:
    """Where the attempt ran, as the run history shows it: the pod and its node."""
    if pod is None:
        return None
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName")
    return f"pod {namespace}/{name}" + (f" on node {node}" if node else "")


def _disruption(pod: Mapping[str, Any] | None) -> str | None:
    """Why the pod ended without its container ending it (evicted, node lost,
    deleted, preempted), or None."""
    if pod is None:
        return "its pod was deleted"
    status = pod.get("status") or {}
    target = _true_conditions(pod).get("DisruptionTarget")
    if status.get("reason") or target is not None:
        reason = status.get("reason") or (target or {}).get("reason") or "disrupted"
        message = status.get("message") or (target or {}).get("message") or ""
        return f"its pod was {reason}" + (f": {message}" if message else "")
    if not (_container_status(pod).get("state") or {}).get("terminated"):
        return "its pod ended before its container did"
    return None


def not_started(pod: Mapping[str, Any] | None) -> str | None:
    """Why the pod has not started its container (its waiting reason and message,
    or why it is not scheduled), or None when it has started."""
    if pod is None:  # its pods were refused: `kubectl describe job` has the events
        return (
            "the Job has no pod (a ResourceQuota, a LimitRange or an admission webhook may "
            "refuse it: `kubectl describe job` says why)"
        )
    state = _container_status(pod).get("state") or {}
    if "running" in state or "terminated" in state:
        return None
    waiting = state.get("waiting") or {}
    if waiting:
        message = waiting.get("message")
        return str(waiting.get("reason") or "waiting") + (f": {message}" if message else "")
    scheduled = next(
        (
            c
            for c in (pod.get("status") or {}).get("conditions") or ()
            if c.get("type") == "PodScheduled"
        ),
        None,
    )
    if scheduled is not None and scheduled.get("status") == "False":
        return f"not scheduled: {scheduled.get('message') or scheduled.get('reason')}"
    return f"its pod is {(pod.get('status') or {}).get('phase') or 'Pending'}"


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time (a log line's stamp, a creationTimestamp), or None."""
    found = _TIMESTAMP.match(text + " ")
    if found is None:
        return None
    whole, fraction, zone = found.groups()
    micro = (fraction or ".0")[1:7].ljust(6, "0")
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{whole}.{micro}{zone}").astimezone(UTC)


def split_logs(text: str) -> tuple[str, tuple[tuple[datetime, str, str], ...]]:
    """The pod's log, read with `timestamps=true`: its output without the kubelet's
    timestamps, and the runner's "LEVEL message" lines as log records."""
    output: list[str] = []
    records: list[tuple[datetime, str, str]] = []
    for line in text.splitlines(keepends=True):
        stamp, _, rest = line.partition(" ")
        at = parse_time(stamp)
        if at is None:  # not a timestamped line (a fake, or a log cut mid-line)
            output.append(line)
            continue
        record = _LOG_RECORD.match(rest.rstrip("\n"))
        if record is not None:
            records.append((at, record.group(1), record.group(2)))
        else:
            output.append(rest)
    return "".join(output), tuple(records)


def attempt_outcome(
    job: Mapping[str, Any], pod: Mapping[str, Any] | None, log_text: str
) -> AttemptResult:
    """The `AttemptResult` of an ended Job, given its pod (None when it is gone) and
    the pod's log (read with timestamps)."""
    metadata = job.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    stdout, records = split_logs(log_text)
    where = pod_where(pod, namespace) or f"job {namespace}/{metadata.get('name')}"
    conditions = _true_conditions(job)
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    exit_code = terminated.get("exitCode")
    if "Complete" in conditions:
        return AttemptResult("success", exit_code or 0, stdout, "", records, None, where)
    failed = conditions.get("Failed") or {}
    if failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        error = AttemptError(
            "tideflow.runtime.executor.AttemptTimeout",
            f"the Job ran longer than its activeDeadlineSeconds ({deadline}s) and "
            "Kubernetes ended it",
        )
        return AttemptResult("timeout", exit_code, stdout, "", records, error, where)
    disruption = _disruption(pod)
    if disruption is not None:
        error = AttemptError(
            f"{PodLost.__module__}.PodLost",
            f"the attempt was lost: {disruption} (Job {namespace}/{metadata.get('name')})",
        )
        return AttemptResult("lost", exit_code, stdout, "", records, error, where)
    if terminated.get("reason") == "OOMKilled":
        error = AttemptError(
            "tideflow.runtime.executor.WorkerCrashed",
            "the container was killed for going over its memory limit (OOMKilled)",
        )
        return AttemptResult("crashed", exit_code, stdout, "", records, error, where)
    summary = terminated.get("message")
    try:
        parsed = json.loads(summary) if summary else None
    except ValueError:  # the log's tail (FallbackToLogsOnError): no summary written
        parsed = None
    reply = summary if isinstance(parsed, dict) else None
    code = exit_code
    if reply is None and isinstance(code, int) and code > 128:  # killed by a signal
        code = -(code - 128)
    result = reply_from_json(reply, exit_code=code, stdout=stdout, stderr="", logs_text="")
    if result.status == "success":  # a summary saying ok beside a failed Job
        result = dataclasses.replace(result, status="failed")
    return dataclasses.replace(result, exit_code=exit_code, logs=records, where=where)
