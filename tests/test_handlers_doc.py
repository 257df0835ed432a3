"""`tideflow` exports what a job or handler function receives, and docs/handlers.md
documents every public attribute of it (and nothing that is gone)."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tideflow.runtime import context
from tideflow.runtime.consumer import handler as consumer

import tideflow

DOC = Path(__file__).resolve().parents[1] / "docs" / "handlers.md"


def public(cls: type) -> set[str]:
    slots = getattr(cls, "__slots__", ())
    names = {n for n in slots if not n.startswith("_")}
    names |= {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}
    names |= {n for n, v in vars(cls).items() if isinstance(v, property)}
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
        names -= {n for n, v in vars(cls).items() if isinstance(v, classmethod)}
    return names


def documented(prefix: str) -> set[str]:
    """Names in the first cell of the tables' rows: `ctx.a`, `ctx.b` or `a`, `b`."""
    names: set[str] = set()
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split(" | ")[0]
        for name in re.findall(r"`([^`]+)`", first):
            name = name.split("(")[0]
            if prefix and name.startswith(prefix):
                names.add(name.removeprefix(prefix))
            elif not prefix and "." not in name:
                names.add(name)
    return names


def test_tideflow_exports_the_handler_types() -> None:
    assert tideflow.JobContext is context.JobContext
    assert tideflow.ConsumerContext is consumer.ConsumerContext
    assert tideflow.HandlerMessage is consumer.HandlerMessage
    assert {"JobContext", "ConsumerContext", "HandlerMessage"} <= set(tideflow.__all__)
    with pytest.raises(AttributeError, match="no attribute 'JobContxt'"):
        _ = tideflow.JobContxt  # type: ignore[attr-defined]


def test_importing_tideflow_stays_light() -> None:
    """Job worker processes import `tideflow`: the types load on first use only."""
    code = (
        "import sys, tideflow; print(sorted(m for m in sys.modules if m.startswith('tideflow.')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_every_attribute_of_the_contexts_and_the_message_is_documented() -> None:
    ctx_names = documented("ctx.")
    job = public(context.JobContext) - {"flush"}  # the runtime's, not the job's
    handler = public(consumer.ConsumerContext) - {"outbox"}  # the runtime's queue
    assert job | handler == ctx_names
    message = public(consumer.HandlerMessage)
    assert message <= documented("")
    assert "publish" in ctx_names


def test_publish_is_documented_with_its_signature() -> None:
    text = DOC.read_text()
    for cls in (context.JobContext, consumer.ConsumerContext):
        parameters = list(inspect.signature(cls.publish).parameters)
        assert parameters == ["self", "topic", "value", "key", "headers", "subject"]
    assert "ctx.publish(topic, value, key=None, *, headers=None, subject=None)" in text
