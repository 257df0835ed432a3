"""Every hook has a docs entry, a test, and a version note (datasette's rule): a hook
added without them fails here."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pluggy
from tideflow.plugins.api import hooks

import tideflow

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "plugins.md"
TESTS = Path(__file__).resolve().parent

HOOKS = sorted(name for name in vars(hooks) if name.startswith("tideflow_"))


def hooks_with_docs(markdown: str) -> set[str]:
    """Hooks with a heading of their own, such as "### `tideflow_lint_rules(registry)`"."""
    return set(re.findall(r"^#{2,4} `(tideflow_\w+)\(", markdown, flags=re.MULTILINE))


def hooks_with_tests(sources: dict[str, str]) -> set[str]:
    """Hooks with a test function named `test_hook_<hook>` (or `test_hook_<hook>_...`)."""
    names = {
        node.name
        for text in sources.values()
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return {
        hook
        for hook in HOOKS
        if any(n == f"test_hook_{hook}" or n.startswith(f"test_hook_{hook}_") for n in names)
    }


def test_hooks_exist() -> None:
    assert HOOKS == [
        "tideflow_lint_rules",
        "tideflow_register_brokers",
        "tideflow_register_executors",
        "tideflow_register_notifiers",
        "tideflow_register_scalers",
    ]


def test_every_hook_has_a_docs_entry() -> None:
    documented = hooks_with_docs(DOCS.read_text())
    assert [hook for hook in HOOKS if hook not in documented] == []
    assert sorted(documented - set(HOOKS)) == [], "docs describe hooks that do not exist"


def test_every_hook_has_a_test() -> None:
    sources = {p.name: p.read_text() for p in TESTS.glob("test_*.py")}
    assert [hook for hook in HOOKS if hook not in hooks_with_tests(sources)] == []


def test_every_hook_says_when_it_was_added() -> None:
    for hook in HOOKS:
        doc = inspect.getdoc(getattr(hooks, hook)) or ""
        assert re.search(r"^\.\. versionadded:: \d+\.\d+", doc, re.MULTILINE), hook


def test_the_checks_notice_what_is_missing() -> None:
    assert hooks_with_docs("## `tideflow_lint_rules(registry)`\ntext") == {"tideflow_lint_rules"}
    assert hooks_with_docs("mentions `tideflow_lint_rules(registry)` in passing") == set()
    assert hooks_with_tests({"t.py": "def test_hook_tideflow_lint_rules_x(): pass"}) == {
        "tideflow_lint_rules"
    }
    assert hooks_with_tests({"t.py": "def test_tideflow_lint_rules(): pass"}) == set()


def test_public_marker_is_the_plugin_managers() -> None:
    assert tideflow.hookimpl is hooks.hookimpl

    def tideflow_register_brokers() -> None: ...

    hooks.hookimpl(tryfirst=True)(tideflow_register_brokers)
    # pluggy reads what the marker wrote: the plugin manager finds the hook
    pm = pluggy.PluginManager(hooks.PROJECT_NAME)
    impl = pm.parse_hookimpl_opts(SimpleNamespace(h=tideflow_register_brokers), "h")
    assert impl is not None
    assert (impl["tryfirst"], impl["trylast"]) == (True, False)
