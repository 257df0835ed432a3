"""Flows: each flow's source and compiled IR, as `tideflow run` last saved them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import tables as t
from .base import StoreBase, utcnow

__all__ = ["FlowQueries", "FlowRecord"]


@dataclass(frozen=True, slots=True)
class FlowRecord:
    name: str
    source: str
    ir: dict[str, Any]
    updated_at: datetime


class FlowQueries(StoreBase):
    def save_flow(self, name: str, source: str, ir: Mapping[str, Any]) -> None:
        values = {"source": source, "ir": dict(ir), "updated_at": utcnow()}
        with self._write() as conn:
            updated = conn.execute(
                sa.update(t.flows).where(t.flows.c.name == name).values(**values)
            )
            if updated.rowcount == 0:
                conn.execute(sa.insert(t.flows).values(name=name, **values))

    def flow(self, name: str) -> FlowRecord | None:
        with self._read() as conn:
            row = conn.execute(sa.select(t.flows).where(t.flows.c.name == name)).first()
        return FlowRecord(row.name, row.source, row.ir, row.updated_at) if row else None

    def flows(self) -> list[FlowRecord]:
        with self._read() as conn:
            rows = conn.execute(sa.select(t.flows).order_by(t.flows.c.name)).all()
        return [FlowRecord(r.name, r.source, r.ir, r.updated_at) for r in rows]
