"""Installed distributions that exist only in memory, for plugin-loading tests."""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import os
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory: its metadata and its
    entry points, as `importlib.metadata` reads them from a real one."""

    def __init__(self, name: str, version: str, entry_points: Mapping[str, Mapping[str, str]]):
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
                for group, points in entry_points.items()
            ),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return Path("/nonexistent") / path


class FakeFinder(importlib.abc.MetaPathFinder):
    """Finds no modules; reports the fake distributions to `importlib.metadata`."""

    def __init__(self) -> None:
        self.distributions: list[FakeDistribution] = []

    def find_spec(self, *args: object, **kwargs: object) -> None:
        return None

    def find_distributions(
        self, context: importlib.metadata.DistributionFinder.Context | None = None
    ) -> Iterator[FakeDistribution]:
        wanted = getattr(context, "name", None)
        for dist in self.distributions:
            if wanted is None or dist.metadata["Name"] == wanted:
                yield dist


@dataclass
class FakeInstall:
    """Installs fake plugin distributions (and their in-memory modules) for one test."""

    finder: FakeFinder
    monkeypatch: pytest.MonkeyPatch

    def module(self, name: str, **attributes: object) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        self.monkeypatch.setitem(sys.modules, name, module)
        return module

    def distribution(
        self, name: str, version: str = "1.0", plugins: Mapping[str, str] | None = None
    ) -> FakeDistribution:
        """A distribution whose `tideflow` entry points map plugin names to modules."""
        dist = FakeDistribution(name, version, {"tideflow": plugins or {}})
        self.finder.distributions.append(dist)
        return dist

    def plugin(self, name: str, distribution: str, version: str = "1.0", **hooks: object) -> None:
        """A plugin module implementing `hooks`, shipped alone in `distribution`."""
        module_name = f"fake_{name.replace('-', '_')}_plugin"
        self.module(module_name, **hooks)
        self.distribution(distribution, version, {name: module_name})
