"""Optional abilities: what some backends can do beyond their interface.

A caller asks `isinstance(backend, Ability)` before using one; a backend has an
ability by defining its members (no base class to inherit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ReportsAssignedPartitions", "ReportsCrashLoops"]


@runtime_checkable
class ReportsAssignedPartitions(Protocol):
    """A broker that can say which partitions of a topic this client holds as a
    member of a consumer group (shown in the consumers' status)."""

    def assigned_partitions(
        self, topic: str, group: str
    ) -> Sequence[int] | Awaitable[Sequence[int]]: ...


@runtime_checkable
class ReportsCrashLoops(Protocol):
    """A scaler that can tell when its instances keep exiting (the `crash_loop`
    event of a `notify` block)."""

    @property
    def crash_looping(self) -> bool: ...
