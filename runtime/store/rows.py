"""Table rows into the runtime's own records (`tideflow.runtime.model`)."""

from __future__ import annotations

from typing import Any

from tideflow.runtime.model import (
    AttemptRow,
    AttemptStatus,
    DeadLetterRow,
    ErrorInfo,
    FlowRunRow,
    InstanceRow,
    InstanceStats,
    InstanceStatus,
    JobRunRow,
    RunStatus,
    ScaleDecisionRow,
    TriggerKind,
)

__all__ = [
    "attempt_of",
    "dead_letter_of",
    "decision_of",
    "flow_run_of",
    "instance_of",
    "job_run_of",
]


def job_run_of(r: Any) -> JobRunRow:
    return JobRunRow(
        id=r.id,
        flow_run_id=r.flow_run_id,
        flow=r.flow,
        job=r.job,
        trigger=TriggerKind(r.trigger),
        status=RunStatus(r.status),
        scheduled_at=r.scheduled_at,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        attempts=r.attempts,
        cancel_requested=bool(r.cancel_requested),
        note=r.note,
    )


def flow_run_of(r: Any) -> FlowRunRow:
    return FlowRunRow(
        id=r.id,
        flow=r.flow,
        root_job=r.root_job,
        trigger=TriggerKind(r.trigger),
        status=RunStatus(r.status),
        scheduled_at=r.scheduled_at,
        created_at=r.created_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        params=dict(r.params or {}),
    )


def attempt_of(r: Any) -> AttemptRow:
    error = None
    if r.error_type is not None:
        error = ErrorInfo(
            r.error_type,
            r.error_message or "",
            r.error_traceback or "",
            r.error_function,
            r.error_location,
        )
    return AttemptRow(
        id=r.id,
        job_run_id=r.job_run_id,
        number=r.number,
        status=AttemptStatus(r.status),
        started_at=r.started_at,
        finished_at=r.finished_at,
        exit_code=r.exit_code,
        pid=r.pid,
        host=r.host,
        stdout=r.stdout or "",
        stderr=r.stderr or "",
        error=error,
        executor=r.executor,
        executor_ref=r.executor_ref,
        executor_where=r.executor_where,
    )


def instance_of(r: Any) -> InstanceRow:
    stats = InstanceStats(
        status=InstanceStatus(r.status),
        handled=r.handled,
        failed=r.failed,
        dead_lettered=r.dead_lettered,
        in_flight=r.in_flight,
        rate=r.rate,
        partitions=tuple(r.partitions or ()),
        last_error=r.last_error,
    )
    return InstanceRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        host=r.host,
        pid=r.pid,
        started_at=r.started_at,
        heartbeat_at=r.heartbeat_at,
        stopped_at=r.stopped_at,
        stats=stats,
    )


def dead_letter_of(r: Any) -> DeadLetterRow:
    return DeadLetterRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        instance_id=r.instance_id,
        at=r.at,
        topic=r.topic,
        partition=r.partition,
        message_id=r.message_id,
        failures=r.failures,
        dead_letter_topic=r.dead_letter_topic,
        error=r.error,
    )


def decision_of(r: Any) -> ScaleDecisionRow:
    return ScaleDecisionRow(
        id=r.id,
        flow=r.flow,
        consumer=r.consumer,
        taken_at=r.taken_at,
        backlog=r.backlog,
        per_partition={int(k): int(v) for k, v in (r.per_partition or {}).items()},
        partitions=r.partitions,
        reading_error=r.reading_error,
        current=r.current,
        desired=r.desired,
        applied=bool(r.applied),
        reason=r.reason,
        explanation=r.explanation,
        rule=dict(r.rule or {}),
    )
