"""Fixtures for the CLI tests: small `.flow` files written into a temporary folder."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import tideflow.plugins.manager
from tideflow.plugins.manager import DISABLE_AUTOLOAD_ENV, PluginSet, load_plugins

# already in the canonical format (`tideflow fmt` leaves it alone)
GOOD = """\
flow "orders" {
  timezone = "Europe/Lisbon"
}

broker "main" {
  kind = "embedded"
}

topic "orders" {
  broker     = broker.main
  partitions = 4
}

job "extract" {
  schedule  = cron("0 2 * * *")
  run       = "shop.jobs:extract"
  publishes = topic.orders
  timeout   = 15m
}

job "report" {
  command = ["python", "-m", "shop.report"]
  after   = [job.extract]
  trigger = all_done
}

consumer "order_workers" {
  consumes = topic.orders
  run      = "shop.workers:handle"
  scale {
    max              = 4
    lag_per_instance = 500
  }
}
"""

UNKNOWN_ATTRIBUTE = """\
job "extract" {
  run    = "shop.jobs:extract"
  retrys = 3
}
"""

WARNINGS_ONLY = """\
broker "main" { kind = "embedded" }
topic "orders" { partitions = 2 }
job "extract" {
  run = "shop.jobs:extract"
}
"""

SYNTAX_ERROR = """\
job "extract" {
  run   = "shop.jobs:extract"
  after = [job.a job.b]
}
"""

NOT_UTF8 = b'job "x" {\n  run = "caf\xe9:x"\n}\n'

UNFORMATTED = """\
job "extract" {
run="shop.jobs:extract"
    timeout=   15m
}
"""


@pytest.fixture(autouse=True)
def builtin_plugins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sees tideflow's own plugins only, whatever else the environment has
    installed, in this process and in the programs the tests start."""
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.setattr(tideflow.plugins.manager, "installed_plugins", _builtin_plugin_set)


@functools.cache
def _builtin_plugin_set() -> PluginSet:
    return load_plugins(environ={DISABLE_AUTOLOAD_ENV: "1"})


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working folder (file names in messages are then short and stable)."""
    monkeypatch.chdir(tmp_path)
    for name in ("NO_COLOR", "FORCE_COLOR", "TIDEFLOW_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def write(folder: Path, name: str, content: str | bytes) -> str:
    """Write a flow file under `folder`; its path relative to the working folder."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return os.path.relpath(path)


@pytest.fixture
def write_flow(workdir: Path) -> Callable[[str, str | bytes], str]:
    """Write a further file into the working folder: `write_flow(name, content) -> path`."""
    return lambda name, content: write(workdir, name, content)


@pytest.fixture
def good(workdir: Path) -> str:
    return write(workdir, "orders.flow", GOOD)


@pytest.fixture
def unknown_attribute(workdir: Path) -> str:
    return write(workdir, "bad.flow", UNKNOWN_ATTRIBUTE)


@pytest.fixture
def warnings_only(workdir: Path) -> str:
    return write(workdir, "warn.flow", WARNINGS_ONLY)


@pytest.fixture
def syntax_error(workdir: Path) -> str:
    return write(workdir, "syntax.flow", SYNTAX_ERROR)


@pytest.fixture
def not_utf8(workdir: Path) -> str:
    return write(workdir, "latin1.flow", NOT_UTF8)


@pytest.fixture
def unformatted(workdir: Path) -> str:
    return write(workdir, "ugly.flow", UNFORMATTED)
