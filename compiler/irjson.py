"""The IR as JSON: `tideflow compile` writes it, the runtime may read it back.

The document is stable: keys come in a fixed order (records in field order),
nodes and edges in graph order. `env()` and `secret()` stay references,
`{"$env": "NAME", "default": ...}` and `{"$secret": "NAME"}`, never values. A
map that has a key starting with `$` is wrapped as `{"$map": {...}}` so that it
cannot be mistaken for a reference. Spans keep their start only:
`{"path", "line", "column"}`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tideflow.dsl.ast import Span

from .ir import (
    FORMAT_VERSION,
    Backoff,
    BrokerNode,
    ConsumerNode,
    EdgeKind,
    EnvRef,
    ExecutorNode,
    FlowInfo,
    FlowIR,
    JobNode,
    NotifyNode,
    PoolNode,
    Resources,
    RetryPolicy,
    ScaleRule,
    Schedule,
    SecretRef,
    TopicNode,
)

__all__ = ["from_json", "to_json"]

_RECORDS: Mapping[str, type[Any]] = {
    "broker": BrokerNode,
    "topic": TopicNode,
    "pool": PoolNode,
    "job": JobNode,
    "consumer": ConsumerNode,
    "notify": NotifyNode,
    "executor": ExecutorNode,
}
# record fields that hold another record: decoded by class, not as plain data
_NESTED: Mapping[type[Any], Mapping[str, type[Any]]] = {
    FlowInfo: {"retry": RetryPolicy},
    RetryPolicy: {"backoff": Backoff},
    JobNode: {"schedule": Schedule, "retry": RetryPolicy, "resources": Resources},
    ConsumerNode: {"scale": ScaleRule},
}


def to_json(ir: FlowIR) -> dict[str, Any]:
    """A JSON-ready dict of `ir` (pass it to `json.dumps`)."""
    nodes = [
        {"id": key, "kind": kind, "span": _span(span), "record": _encode(record)}
        for key, kind, record, span in ir.nodes()
    ]
    edges = [
        {"source": source, "target": target, "kind": str(kind)}
        for source, target, kind in ir.edges()
    ]
    return {
        "format_version": FORMAT_VERSION,
        "flow": _encode(ir.info),
        "nodes": nodes,
        "edges": edges,
    }


def from_json(document: Mapping[str, Any]) -> FlowIR:
    """The IR that `to_json` wrote; ValueError for a document it cannot have written."""
    if not isinstance(document, Mapping) or "format_version" not in document:
        raise ValueError("not a tideflow IR document: it has no `format_version`")
    version = document["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"invalid IR format_version {version!r}: expected an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"IR format version {version} is newer than this tideflow reads "
            f"(up to {FORMAT_VERSION}): upgrade tideflow, or compile the flow again"
        )
    if version < 1:
        raise ValueError(f"unknown IR format version {version}")
    try:
        ir = FlowIR(_decode_record(FlowInfo, document["flow"]))
        for node in document["nodes"]:
            record_class = _RECORDS.get(node["kind"])
            if record_class is None:
                raise ValueError(f"unknown node kind {node['kind']!r}")
            key = ir.add(_decode_record(record_class, node["record"]), _unspan(node.get("span")))
            if key != node["id"]:
                raise ValueError(f"node id {node['id']!r} does not match its record ({key!r})")
        for edge in document["edges"]:
            for end in (edge["source"], edge["target"]):
                if end not in ir:
                    raise ValueError(f"edge names an unknown node {end!r}")
            ir.connect(edge["source"], edge["target"], EdgeKind(edge["kind"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed IR document: {type(exc).__name__}: {exc}") from None
    return ir


# --- encoding --------------------------------------------------------------------------------


def _span(span: Span | None) -> dict[str, Any] | None:
    if span is None:
        return None
    return {"path": span.path, "line": span.line, "column": span.column}


_PLAIN = (type(None), str, bool, int, float)


def _encode(value: Any) -> Any:
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is SecretRef:
        return {"$secret": value.name}
    if kind is EnvRef:
        return {"$env": value.name, "default": value.default}
    if kind is tuple or kind is list:
        return [_encode(item) for item in value]
    names = _field_names(kind)
    if names:
        return {name: _encode(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        encoded = {str(key): _encode(item) for key, item in value.items()}
        if any(key.startswith("$") for key in encoded):
            return {"$map": encoded}
        return encoded
    raise TypeError(f"cannot write {kind.__name__} into IR JSON")


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(kind: type[Any]) -> tuple[str, ...]:
    """A record's field names in declaration order; empty for anything else."""
    names = _FIELD_NAMES.get(kind)
    if names is None:
        is_record = dataclasses.is_dataclass(kind)
        names = tuple(f.name for f in dataclasses.fields(kind)) if is_record else ()
        _FIELD_NAMES[kind] = names
    return names


# --- decoding --------------------------------------------------------------------------------


def _unspan(data: Mapping[str, Any] | None) -> Span | None:
    if data is None:
        return None
    line, column = int(data["line"]), int(data["column"])
    # JSON keeps the start only: the span is empty, and offsets are unknown (0)
    return Span(str(data["path"]), line, column, line, column, 0, 0)


def _decode_record(record_class: type[Any], data: Mapping[str, Any]) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object for {record_class.__name__}, found {data!r}")
    nested = _NESTED.get(record_class, {})
    names = {f.name for f in dataclasses.fields(record_class)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown fields of {record_class.__name__}: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for name, raw in data.items():
        inner = nested.get(name)
        if inner is not None and raw is not None:
            fields[name] = _decode_record(inner, raw)
        else:
            fields[name] = _decode(raw)
    return record_class(**fields)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(item) for item in value)
    if isinstance(value, Mapping):
        if "$secret" in value and len(value) == 1:
            return SecretRef(str(value["$secret"]))
        if "$env" in value and set(value) <= {"$env", "default"}:
            return EnvRef(str(value["$env"]), value.get("default"))
        if "$map" in value and len(value) == 1:
            return {key: _decode(item) for key, item in value["$map"].items()}
        return {key: _decode(item) for key, item in value.items()}
    return value
