"""The compiler: `.flow` files in, a validated `FlowIR` and diagnostics out.

The chain is explicit, one stage per module: load and parse the files
(`dsl.loader`), check them against the schema (`checks`), build the IR
(`build`), then run the plugins' lint rules (`rules`). Each stage collects
diagnostics; none raises on a user's mistake. `pipeline` chains them.

The chain's names are loaded on first use (PEP 562): a process that only reads
an IR (`compiler.ir`, `compiler.irjson`: consumer instances, job workers) never
loads the parser, lark or the checks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .pipeline import CompileResult, compile_flow, compile_loaded, compile_source
    from .rules import LintRule

__all__ = ["CompileResult", "LintRule", "compile_flow", "compile_loaded", "compile_source"]

_LAZY: Final = {
    "CompileResult": ".pipeline",
    "compile_flow": ".pipeline",
    "compile_loaded": ".pipeline",
    "compile_source": ".pipeline",
    "LintRule": ".rules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
