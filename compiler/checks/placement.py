"""Pass 4, where each job runs: its executor (the job's own, else the flow's, else the
built-in local one), the `resources` entries that executor declares beyond cpu, memory
and gpu, a remote executor's jobs that publish to an `embedded` topic (E302), and demands
the executor can never satisfy (E303)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tideflow.compiler import schema as s
from tideflow.dsl import ast
from tideflow.dsl.ast import expr_kind
from tideflow.dsl.diagnostics import Related
from tideflow.dsl.suggest import suggest
from tideflow.plugins.api import options as o

from .common import head_span, item_parts, reference_span, value_span, with_defaults
from .context import CheckContext
from .model import Declaration, Item, Section

__all__ = ["place_jobs"]

#: the broker whose topics are files on the orchestrator's disk
EMBEDDED: Final = "embedded"
_BUILT_IN: Final = "local"
_STANDARD: Final = tuple(f.name for f in s.RESOURCES.fields)  # cpu, memory, gpu


@dataclass(frozen=True, slots=True)
class _Executor:
    """An executor jobs run on: its block (None: the built-in local executor), its
    backend, and what one attempt can ever get there (`BackendSpec.capacity` of the
    block's options; empty when nothing is declared)."""

    declaration: Declaration | None
    spec: o.BackendSpec | None
    capacity: Mapping[str, float]

    def describe(self) -> str:
        if self.declaration is None:
            return "the built-in local executor"
        kind = self.spec.name if self.spec is not None else "?"
        return f'executor "{self.declaration.name}" ({kind})'

    @property
    def remote(self) -> bool:
        return self.declaration is not None and self.spec is not None and self.spec.remote

    @property
    def extras(self) -> tuple[str, ...]:
        """The `resources` entries it takes beyond cpu, memory and gpu: those its class
        declares, and those its block declares an amount of."""
        declared = self.spec.resource_options if self.spec is not None else ()
        more = (name for name in self.capacity if name not in _STANDARD and name not in declared)
        return (*declared, *more)


def place_jobs(ctx: CheckContext, flow: Declaration | None) -> None:
    """Check each job against the executor it runs on."""
    executors: dict[str | None, _Executor | None] = {}
    flow_choice = _choice(flow)
    for job in ctx.declarations["job"].values():
        choice = _choice(job) if "executor" in job.section.items else flow_choice
        if choice is None:
            continue  # its `executor =` had a problem, reported where it is written
        name, chosen_at = choice
        if name not in executors:
            executors[name] = _executor(ctx, name)
        executor = executors[name]
        if executor is None:
            continue  # its kind is unknown (E211)
        resources = job.section.values.get("resources")
        if isinstance(resources, Section):
            _check_extras(ctx, job, resources, executor)
        if executor.remote:
            _check_embedded(ctx, job, executor, chosen_at)
        if isinstance(resources, Section) and executor.capacity:
            _check_capacity(ctx, job, resources, executor)


def _choice(declaration: Declaration | None) -> tuple[str | None, Item | None] | None:
    """The executor a block's `executor =` names (None: it says nothing), and where it
    is written; None when the attribute had a problem."""
    if declaration is None:
        return None, None
    item = declaration.section.items.get("executor")
    if item is None:
        return None, None
    name = declaration.section.values.get("executor")
    return (name, item) if isinstance(name, str) else None


def _executor(ctx: CheckContext, name: str | None) -> _Executor | None:
    if name is None:
        return _Executor(None, ctx.catalog.get("executor", _BUILT_IN), {})
    declaration = ctx.declarations["executor"].get(name)
    if declaration is None or declaration.section.backend is None:
        return None
    spec = declaration.section.backend
    return _Executor(declaration, spec, _capacity(spec, with_defaults(declaration.section)))


def _capacity(spec: o.BackendSpec, options: Mapping[str, Any]) -> Mapping[str, float]:
    if spec.capacity is None:
        return {}
    try:
        found = spec.capacity(options)
    except Exception:  # a plugin's mistake is not the flow's: no capacity is known
        return {}
    return found or {}


def _check_extras(
    ctx: CheckContext, job: Declaration, resources: Section, executor: _Executor
) -> None:
    """The entries beyond cpu, memory and gpu: the executor must declare each one."""
    if not resources.deferred:
        return
    owner = f"resources of {job.block.describe()}"
    declared = executor.extras
    for name, item in resources.deferred.items():
        name_span = item_parts(item)[1]
        if name not in declared:
            takes = ", ".join((*_STANDARD, *declared))
            ctx.error(
                "E202",
                f"unknown attribute `{name}` in {owner}",
                name_span,
                label=f"{job.block.describe()} runs on {executor.describe()}, which takes {takes}",
                help=suggest(name, (*_STANDARD, *declared), fold_case=True),
            )
            continue
        value = _extra_value(ctx, item.value, name, owner)  # type: ignore[union-attr]
        if value is not None:
            resources.options[name] = value


def _extra_value(ctx: CheckContext, expr: ast.Expr, name: str, owner: str) -> Any:
    """A declared extra's value: a number (at least 0), a size (bytes) or a string; None
    after reporting any other value."""
    match expr:
        case ast.Size():
            return expr.bytes
        case ast.String():
            return expr.value
        case ast.Number() if expr.value < 0:
            found = expr.raw
            ctx.error("E208", f"`{name}` in {owner} must be at least 0, found {found}", expr.span)
            return None
        case ast.Number():
            return expr.value
    ctx.error(
        "E203",
        f"wrong type for `{name}` in {owner}: expected number, size or string, "
        f"found {expr_kind(expr)}",
        expr.span,
    )
    return None


def _check_embedded(
    ctx: CheckContext, job: Declaration, executor: _Executor, chosen_at: Item | None
) -> None:
    """E302: an embedded topic is a file on the orchestrator's disk, out of a remote
    executor's reach."""
    topics, brokers = ctx.declarations["topic"], ctx.declarations["broker"]
    for name in job.section.values.get("publishes", ()):
        topic = topics.get(name)
        broker = brokers.get(topic.section.values.get("broker", "")) if topic else None
        if topic is None or broker is None or broker.section.backend is None:
            continue
        if broker.section.backend.name != EMBEDDED:
            continue
        related = [Related(head_span(broker.block), f'topic "{name}" is on this broker')]
        if chosen_at is not None:
            related.insert(0, Related(value_span(chosen_at), "the executor is set here"))
        ctx.error(
            "E302",
            f"{job.block.describe()} runs on remote {executor.describe()} but publishes "
            f'to embedded topic "{name}"',
            reference_span(job.section.items["publishes"], name),
            label="a file on the orchestrator's disk: the executor's machines cannot reach it",
            help=f'put topic "{name}" on a kafka or nats broker, '
            'or run the job on an executor of `kind = "local"`',
            related=tuple(related),
        )


def _check_capacity(
    ctx: CheckContext, job: Declaration, resources: Section, executor: _Executor
) -> None:
    """E303: a demand above what the executor's options say one attempt can ever get."""
    assert executor.declaration is not None  # the built-in local executor declares none
    demands = {**resources.values, **resources.options}
    for name, amount in demands.items():
        most = executor.capacity.get(name)
        if most is None or isinstance(amount, bool) or not isinstance(amount, int | float):
            continue
        if amount <= most:
            continue
        written = resources.items[name].value  # type: ignore[union-attr]
        shown = written.raw if isinstance(written, ast.Number | ast.Size) else _number(amount)
        as_size = name == "memory" or type(written) is ast.Size
        limit = _size(int(most)) if as_size else _number(most)
        ctx.error(
            "E303",
            f"{job.block.describe()} asks for `{name} = {shown}`, more than "
            f"{executor.describe()} ever gives one attempt ({limit})",
            written.span,
            label="no attempt of this job could ever start",
            help=f"ask for at most {limit}, or declare more in the executor's options"
            if most > 0
            else f"run the job on an executor that offers {name}, or declare some in the "
            "executor's options",
            related=(
                Related(head_span(executor.declaration.block), f"its {name} capacity: {limit}"),
            ),
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


_UNITS: Final = (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024))


def _size(count: int) -> str:
    """A byte count as the language writes it: `32Gi`, `1.5Gi`, `512Mi`, `100`."""
    for unit, size in _UNITS:
        if count >= size:
            return f"{round(count / size, 2):g}{unit}"
    return f"{count}"
