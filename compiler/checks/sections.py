"""Pass 2: each block body (and nested block) against its schema and the options of the
backend it names: unknown and repeated names, required attributes, each value's type."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from tideflow.compiler import schema as s
from tideflow.dsl import ast
from tideflow.dsl.ast import Attribute, Block, Span
from tideflow.dsl.diagnostics import Related
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import options as o

from .common import item_parts, value_span
from .context import CheckContext
from .model import INVALID, Item, Section
from .values import ValueChecker

__all__ = ["SectionChecker"]

_BACKEND_WORDS: Final = {
    "broker": "brokers",
    "scaler": "scalers",
    "notifier": "notifiers",
    "executor": "executors",
}


@final
class SectionChecker:
    """Checks bodies against schemas; the field tables are built once per schema."""

    def __init__(self, ctx: CheckContext) -> None:
        self.ctx = ctx
        self._values = ValueChecker(ctx, self.section)
        self._field_tables: dict[tuple[int, int], dict[str, tuple[o.Field, bool]]] = {}
        self._required: dict[tuple[int, int], tuple[o.Field, ...]] = {}

    def _fields(
        self, schema: o.BlockSchema, backend: o.BackendSpec | None
    ) -> tuple[dict[str, tuple[o.Field, bool]], tuple[o.Field, ...]]:
        """Name -> (field, is a backend option), and the required fields."""
        key = (id(schema), id(backend))
        table = self._field_tables.get(key)
        if table is None:
            table = {f.name: (f, False) for f in schema.fields}
            for option in backend.options if backend else ():
                table.setdefault(option.name, (option, True))
            self._field_tables[key] = table
            self._required[key] = tuple(f for f, _ in table.values() if f.required)
        return table, self._required[key]

    def _backend(
        self, items: Sequence[Item], schema: o.BlockSchema, owner: str
    ) -> tuple[o.BackendSpec | None, bool]:
        """The backend the block names, and whether its name is known (E211 otherwise)."""
        assert schema.backend_kind is not None and schema.backend_field is not None
        choice: Item | None = None
        for item in items:
            if type(item) is not Block and item_parts(item)[0] == schema.backend_field:
                choice = item
                break
        if choice is None or type(choice) is Block:
            default = schema.by_name[schema.backend_field].default
            if default is None:
                return None, False  # E204 follows from the required field
            return self.ctx.catalog.get(schema.backend_kind, default), True
        value = choice.value  # type: ignore[union-attr]
        if type(value) is not ast.String:
            return None, False  # the field's own type check reports it
        spec = self.ctx.catalog.get(schema.backend_kind, value.value)
        if spec is not None:
            return spec, True
        available = self.ctx.catalog.names(schema.backend_kind)
        words = _BACKEND_WORDS.get(schema.backend_kind, schema.backend_kind + "s")
        self.ctx.error(
            "E211",
            f'unknown {schema.backend_kind} "{value.value}" in {owner}',
            value.span,
            label=f"available {words}: {', '.join(available)}" if available else None,
            help=suggest(value.value, available, '"{}"', fold_case=True),
        )
        return None, False

    def section(
        self, items: Sequence[Item], schema: o.BlockSchema, owner: str, where: Span
    ) -> Section:
        """Check one body against `schema` (and its backend's options); never raises."""
        section = Section()
        known_backend = True
        if schema.backend_kind is not None:
            section.backend, known_backend = self._backend(items, schema, owner)
        table, required = self._fields(schema, section.backend)
        written = section.items
        for item in items:
            kind = type(item)
            if kind is Attribute:
                name, name_span = item.name, item.name_span  # type: ignore[union-attr]
            else:
                name, name_span = item_parts(item)
            entry = table.get(name)
            first = written.get(name)
            if first is not None:
                self._twice(name, name_span, first, owner)
                continue
            if entry is None:
                if schema is s.RESOURCES and kind is not Block:
                    # an entry the job's executor may declare: `placement` checks it
                    written[name] = section.deferred[name] = item
                elif known_backend or kind is Block:
                    self._unknown(name, name_span, kind is Block, table, owner)
                continue
            written[name] = item
            spec, is_option = entry
            if kind is Block:
                value = self._nested(item, spec, name, owner)  # type: ignore[arg-type]
            else:
                special = self._values.special.get((schema.type, name))
                convert = special or self._values.converters[type(spec.type)]
                value = convert(item.value, spec.type, name, owner)  # type: ignore[union-attr]
            if value is not INVALID:
                (section.options if is_option else section.values)[name] = value
        for spec in required:
            if spec.name not in written:
                example = f": `{spec.name} = {spec.example}`" if spec.example else ""
                self.ctx.error(
                    "E204",
                    f"missing required attribute `{spec.name}` in {owner}",
                    where,
                    help=f"add it{example}",
                )
        low, high = section.values.get("min"), section.values.get("max")
        if isinstance(low, int) and isinstance(high, int) and low > high:
            self.ctx.error(
                "E213",
                f"`min` ({low}) is above `max` ({high}) in {owner}",
                value_span(section.items["min"]),
                related=(Related(value_span(section.items["max"]), "`max` set here"),),
            )
        return section

    def _twice(self, name: str, span: Span, first: Item, owner: str) -> None:
        self.ctx.error(
            "E206",
            f"`{name}` is set twice in {owner}",
            span,
            related=(Related(item_parts(first)[1], "first set here"),),
        )

    def _unknown(
        self,
        name: str,
        span: Span,
        is_block: bool,
        table: Mapping[str, tuple[o.Field, bool]],
        owner: str,
    ) -> None:
        if is_block:
            blocks = [n for n, (f, _) in table.items() if isinstance(f.type, o.ObjectType)]
            self.ctx.error(
                "E202",
                f"unknown block `{name}` in {owner}",
                span,
                help=suggest(name, blocks, fold_case=True) or suggest(name, table, fold_case=True),
            )
        else:
            self.ctx.error(
                "E202",
                f"unknown attribute `{name}` in {owner}",
                span,
                help=suggest(name, table, fold_case=True),
            )

    def _nested(self, block: Block, spec: o.Field, name: str, owner: str) -> Any:
        if not isinstance(spec.type, o.ObjectType):
            return self.ctx.error(
                "E203",
                f"wrong type for `{name}` in {owner}: expected {spec.type.describe()}, "
                "found a block",
                block.type_span,
                help=f"write `{name} = {spec.example}`" if spec.example else None,
            )
        if block.label is not None:
            self.ctx.error(
                "E215",
                f"`{name}` blocks take no name",
                block.label.span,
                help=f"write `{name} {{ ... }}`",
            )
        return self.section(block.body, spec.type.schema, f"{name} of {owner}", block.type_span)
