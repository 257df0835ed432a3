"""No input crashes the compiler: random blocks of schema-shaped attributes with random values.

Every diagnostic has a known code, and whatever compiles round-trips through IR JSON.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tideflow.compiler import compile_source
from tideflow.compiler.irjson import from_json, to_json
from tideflow.compiler.schema import BLOCKS
from tideflow.dsl.diagnostics import CODES
from tideflow.plugins.api import ObjectType
from tideflow.plugins.manager import default_catalog

NAMES = ["a", "b", "main", "orders"]
KINDS = ["job", "topic", "pool", "broker", "consumer", "notify", "executor", "jbo"]


def _attribute_names() -> list[str]:
    names = {f.name for schema in BLOCKS.values() for f in schema.fields}
    for schema in BLOCKS.values():
        for f in schema.fields:
            if isinstance(f.type, ObjectType):
                names.update(g.name for g in f.type.schema.fields)
    catalog = default_catalog()
    for kind in catalog.backends.values():
        for spec in kind.values():
            names.update(o.name for o in spec.options)
    return sorted(names | {"retrys", "password"})


ATTRIBUTES = _attribute_names()

scalars = st.one_of(
    st.sampled_from(
        [
            '"m:f"',
            '"shop.jobs:run"',
            '"embedded"',
            '"kafka"',
            '"nats"',
            '"local"',
            '"webhook"',
            '"Europe/Lisbon"',
            '"0 2 * * *"',
            '""',
            '"x y"',
            "0",
            "1",
            "-3",
            "2.5",
            "0s",
            "10s",
            "1h30m",
            "512Mi",
            "true",
            "false",
            "all_done",
            "failure",
            "latest",
        ]
    ),
    st.builds(lambda k, n: f"{k}.{n}", st.sampled_from(KINDS), st.sampled_from(NAMES)),
)


def _calls(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    functions = st.sampled_from(["cron", "every", "env", "secret", "fixed", "exponential", "crn"])
    keywords = st.lists(
        st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(["timezone", "factor", "x"]), inner),
        max_size=2,
    )
    return st.builds(
        lambda f, args, kws: f"{f}({', '.join(args + kws)})",
        functions,
        st.lists(inner, max_size=3),
        keywords,
    )


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        _calls(inner),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(
            st.builds(lambda k, v: f"{k} = {v}", st.sampled_from([*ATTRIBUTES, "KEY"]), inner),
            max_size=3,
        ).map(lambda entries: "{ " + "  ".join(entries) + " }"),
    ),
    max_leaves=6,
)


def _names_of(kind: str) -> list[str]:
    """Attribute names a block of `kind` knows, with its backends' options."""
    schema = BLOCKS.get(kind)
    if schema is None:
        return ["run", "x"]
    names = {f.name for f in schema.fields}
    if schema.backend_kind is not None:
        for spec in default_catalog().backends.get(schema.backend_kind, {}).values():
            names.update(o.name for o in spec.options)
    return sorted(names)


def _attributes(names: list[str]) -> st.SearchStrategy[str]:
    # mostly names the block knows, sometimes any name at all
    name = st.one_of(st.sampled_from(names), st.sampled_from(names), st.sampled_from(ATTRIBUTES))
    return st.builds(lambda k, v: f"  {k} = {v}", name, values)


def _nested(names: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda k, body: f"  {k} {{\n  " + "\n  ".join(body) + "\n  }",
        st.sampled_from(["retry", "scale", "resources", "run"]),
        st.lists(_attributes(names), max_size=3),
    )


def _block(kind: str) -> st.SearchStrategy[str]:
    names = _names_of(kind)
    inner = sorted({n for n in ATTRIBUTES if n not in names} | {"max", "attempts", "cpu"})
    return st.builds(
        lambda label, body: f"{kind} {label} {{\n" + "\n".join(body) + "\n}",
        st.sampled_from(['"a"', '"b"', '"main"', '"orders"', '"bad name"', ""]),
        st.lists(st.one_of(_attributes(names), _nested(inner)), max_size=5),
    )


blocks = st.sampled_from(["flow", *KINDS]).flatmap(_block)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(blocks, min_size=1, max_size=6))
def test_random_flows_never_crash(flow_blocks: list[str]) -> None:
    text = "\n".join(flow_blocks) + "\n"
    result = compile_source(text, "fuzz.flow")
    for diagnostic in result.diagnostics:
        assert diagnostic.code in CODES, diagnostic
        assert diagnostic.message and diagnostic.message == diagnostic.message.strip()
    if result.ir is not None:
        document = json.loads(json.dumps(to_json(result.ir)))
        back = from_json(document)
        assert [d["record"] for _, d in back.graph.nodes(data=True)] == [
            d["record"] for _, d in result.ir.graph.nodes(data=True)
        ]
