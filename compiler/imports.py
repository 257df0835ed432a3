"""The import check: is each `run = "module:function"` there, and callable as the
runtime will call it?

It imports the flow's Python code, as a job worker and a consumer instance will
(the flow file's folder on `sys.path`), so it runs only when asked:
`tideflow lint --check-imports`, and `tideflow run` before the first schedule
fires (`--no-check-imports` skips it). Without it, a misspelt module is found
when the job first runs, possibly at night.

- E501: the module cannot be imported (it does not exist, or importing it raised);
- E502: the module has no such function, or what it names is not callable;
- E503: the function cannot be called as the runtime calls it: a job's with the
  job's context (`ctx`) or with nothing, a consumer's with `(ctx, message)`.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tideflow.dsl.ast import Attribute, Block, FlowFile, Span
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.suggest import closest, suggest

from .ir import FlowIR

__all__ = ["check_imports", "handler_signature_problem", "job_signature_problem"]


def check_imports(ir: FlowIR, files: Sequence[FlowFile]) -> list[Diagnostic]:
    """E501-E503 for every job and consumer whose `run` names a Python function, at the
    `run` value in the flow. Imports the flow's modules (their top-level code runs)."""
    folder = str(Path(ir.info.source).resolve().parent) if ir.info.source else None
    if folder is not None and folder not in sys.path:
        sys.path.append(folder)  # where the runtime looks too (after the installed ones)
    spans = dict(_run_spans(files))
    found: list[Diagnostic] = []
    targets: list[tuple[str, str, str, Callable[[Any], str | None]]] = [
        ("job", job.name, job.run, job_signature_problem)
        for job in ir.jobs.values()
        if job.run is not None
    ]
    targets += [
        ("consumer", consumer.name, consumer.run, handler_signature_problem)
        for consumer in ir.consumers.values()
    ]
    for kind, name, target, signature_problem in targets:
        span = spans.get((kind, name))
        problem = _check(target, span, folder, signature_problem, f'{kind} "{name}"')
        if problem is not None:
            found.append(problem)
    return found


def job_signature_problem(function: Any) -> str | None:
    """Why the runtime cannot call a job's `function` (with `ctx`, or with nothing if it
    takes no positional argument); None when it can, or when it has no signature."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: trust it
        return None
    for arguments in ((None,), ()):
        try:
            signature.bind(*arguments)
        except TypeError:
            continue
        return None
    return f"it takes {_shown(signature)}; a job's function takes one argument, `ctx`, or none"


def handler_signature_problem(function: Any) -> str | None:
    """Why the runtime cannot call a consumer's handler with `(ctx, message)`."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None)
    except TypeError:
        return f"it takes {_shown(signature)}; a handler takes two arguments, `(ctx, message)`"
    return None


def _shown(signature: inspect.Signature) -> str:
    return "no argument" if not signature.parameters else f"`{signature}`"


def _check(
    target: str,
    span: Span | None,
    folder: str | None,
    signature_problem: Callable[[Any], str | None],
    owner: str,
) -> Diagnostic | None:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            return Diagnostic(
                "E501",
                f"{owner} runs `{target}`, but there is no module `{missing}`",
                span,
                label=f"no module `{missing}`",
                help=_module_suggestion(missing, target, folder),
                notes=(_SEARCHED,),
            )
        return _import_failed(exc, target, module_name, span, owner, folder)
    except Exception as exc:  # the module exists; importing it raised
        return _import_failed(exc, target, module_name, span, owner, folder)
    try:
        function: Any = _attribute(module, attribute)
    except AttributeError:
        return Diagnostic(
            "E502",
            f"{owner} runs `{target}`, but module `{module_name}` has no `{attribute}`",
            span,
            label=f"no `{attribute}` in `{module_name}`",
            help=suggest(attribute, _callables(module)),
        )
    if not callable(function):
        return Diagnostic(
            "E502",
            f"{owner} runs `{target}`, which is not a function (it is {type(function).__name__})",
            span,
        )
    problem = signature_problem(function)
    if problem is None:
        return None
    return Diagnostic(
        "E503",
        f"{owner} runs `{target}`, which cannot be called as the runtime calls it",
        span,
        label=problem.partition(";")[0],
        help=problem.partition("; ")[2],
        notes=_defined_at(function, folder),
    )


def _import_failed(
    exc: BaseException,
    target: str,
    module_name: str,
    span: Span | None,
    owner: str,
    folder: str | None,
) -> Diagnostic:
    where = _innermost(exc, folder)
    return Diagnostic(
        "E501",
        f"{owner} runs `{target}`, but importing `{module_name}` raised "
        f"{type(exc).__name__}: {exc}",
        span,
        label=f"`{module_name}` cannot be imported",
        notes=(f"raised at {where}",) if where else (),
    )


def _attribute(module: ModuleType, path: str) -> Any:
    found: Any = module
    for part in path.split("."):
        found = getattr(found, part)
    return found


def _run_spans(files: Iterable[FlowFile]) -> Iterator[tuple[tuple[str, str], Span]]:
    """The span of the `run` value of each job and consumer block, by (kind, name)."""
    for file in files:
        for block in file.blocks:
            if block.type in ("job", "consumer") and block.label is not None:
                run = _attribute_named(block, "run")
                if run is not None:
                    yield (block.type, block.label.value), run.value.span


def _attribute_named(block: Block, name: str) -> Attribute | None:
    return next((a for a in block.attributes if a.name == name), None)


def _callables(module: ModuleType) -> list[str]:
    return [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]


def _module_suggestion(missing: str, target: str, folder: str | None) -> str | None:
    """The target with a close name among the top-level modules of the flow's folder,
    for a misspelt first part (`handlers.jobs:extract` for `handlerz.jobs:extract`)."""
    if folder is None or "." in missing:
        return None
    names = [m.name for m in pkgutil.iter_modules([folder])]
    close = closest(missing, names)
    return f"did you mean `{close}{target[len(missing) :]}`?" if close else None


_SEARCHED = "modules are looked for in the flow file's folder, then in the installed packages"


def _innermost(exc: BaseException, folder: str | None) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "importlib" not in f.filename]
    if not ours:
        return None
    last = ours[-1]
    return f"{_relative(last.filename, folder)}:{last.lineno}"


def _defined_at(function: Any, folder: str | None) -> tuple[str, ...]:
    try:
        path = inspect.getsourcefile(function)
        _, line = inspect.getsourcelines(function)
    except (OSError, TypeError):
        return ()
    return (f"defined at {_relative(path, folder)}:{line}",) if path else ()


def _relative(path: str, folder: str | None) -> str:
    """`path` from the flow's folder when it is inside it (short, and the same on every
    machine), else as it is."""
    if folder is not None:
        try:
            return str(Path(path).resolve().relative_to(folder))
        except ValueError:
            pass
    return path
