"""Pass 1: block types, labels and duplicate names, so that references can resolve."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

from tideflow.compiler import schema as s
from tideflow.dsl.ast import Block
from tideflow.dsl.diagnostics import Related
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import options as o

from .common import LABEL, head_span
from .context import CheckContext

__all__ = ["Pending", "declare"]

# kind, name (None: the block takes no name, or had a problem), block, its schema
Pending: TypeAlias = tuple[str, str | None, Block, o.BlockSchema]


def declare(ctx: CheckContext, blocks: Sequence[Block]) -> list[Pending]:
    """Record each block's kind and name in `ctx.blocks`; the blocks whose bodies
    are checked next, in source order."""
    pending: list[Pending] = []
    flow_block: Block | None = None
    for block in blocks:
        schema = s.BLOCKS.get(block.type)
        if schema is None:
            ctx.error(
                "E201",
                f"unknown block type `{block.type}`",
                block.type_span,
                help=suggest(block.type, s.BLOCKS, fold_case=True),
            )
            continue
        name = _label(ctx, block, schema)
        if block.type == "flow":
            if flow_block is not None:
                ctx.error(
                    "E205",
                    "a flow has only one `flow` block",
                    head_span(block),
                    related=(Related(head_span(flow_block), "first `flow` block here"),),
                )
            else:
                flow_block = block
        elif name is not None:
            first = ctx.blocks[block.type].get(name)
            if first is not None:
                ctx.error(
                    "E205",
                    f'duplicate {block.type} "{name}"',
                    head_span(block),
                    label=f'another {block.type} is already named "{name}"',
                    related=(Related(head_span(first), "first defined here"),),
                )
            else:
                ctx.blocks[block.type][name] = block
        pending.append((block.type, name, block, schema))
    return pending


def _label(ctx: CheckContext, block: Block, schema: o.BlockSchema) -> str | None:
    if not schema.label:
        if block.label is not None:
            ctx.error(
                "E215",
                f"`{block.type}` blocks take no name",
                block.label.span,
                help=f"write `{block.type} {{ ... }}`",
            )
        return None
    if block.label is None:
        ctx.error(
            "E215",
            f"{block.type} block has no name",
            block.type_span,
            help=f'name it: `{block.type} "NAME" {{ ... }}`',
        )
        return None
    name = block.label.value
    if not LABEL.match(name):
        fixed = re.sub(r"[^A-Za-z0-9_-]", "_", name)
        if not fixed or not (fixed[0].isalpha() or fixed[0] == "_"):
            fixed = "_" + fixed
        ctx.error(
            "E215",
            f'invalid {block.type} name "{name}"',
            block.label.span,
            label="names start with a letter or `_` and hold letters, digits, `_` or `-`",
            help=f'for example "{fixed}"',
        )
    return name
