"""Shared helpers of the plugin tests.

The helper modules `reference_backends`, `fake_dists` and `fake_kubernetes` (a stand-in
for the Kubernetes API server) are imported by name, here and in the separate pytest
processes that run the contract suite (through PYTHONPATH); pytest's importlib mode
does not put this folder on sys.path, so they are loaded explicitly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest


def _load_helper(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing: dataclasses look their module up
    spec.loader.exec_module(module)


_load_helper("reference_backends")
_load_helper("fake_dists")
_load_helper("fake_kubernetes")

from fake_dists import FakeDistribution, FakeFinder, FakeInstall  # noqa: E402


@pytest.fixture
def fake_install(monkeypatch: pytest.MonkeyPatch) -> FakeInstall:
    """Fake distributions seen by `importlib.metadata` (and so by `load_plugins`); the
    real ones stay visible, so tests ask for `load_plugins` with what they need."""
    finder = FakeFinder()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    # the suite turns auto-loading off (tests/conftest.py); these tests are about it
    monkeypatch.delenv("TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    return FakeInstall(finder, monkeypatch)


@pytest.fixture
def no_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the plugins really installed in this environment (tideflow-redis, ...)."""
    real = importlib.metadata.entry_points

    def only_fakes(**params: Any) -> importlib.metadata.EntryPoints:
        found = real(**params)
        return importlib.metadata.EntryPoints(
            ep for ep in found if ep.dist is not None and isinstance(ep.dist, FakeDistribution)
        )

    monkeypatch.setattr(importlib.metadata, "entry_points", only_fakes)
