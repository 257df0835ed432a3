"""Suite-wide settings.

- Plugins installed in the environment are not auto-loaded: a test must not
  depend on which third-party packages happen to be installed. Tests of the
  entry-point path (and the Redis plugin's end-to-end test) turn it back on
  with `monkeypatch.delenv("TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD")`.
- Skips are failures unless explicitly allowed. A test may skip only when a
  service it needs cannot be reached; `make test` must then fail loudly rather
  than pass quietly (set TIDEFLOW_ALLOW_SKIPS=1 to accept skips on a machine
  without the services).
- The user's state folder (where the default state store lives) is a temporary
  one: no test reads or writes the real `~/.local/state/tideflow`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        # platformdirs' user_state_path follows XDG_STATE_HOME (the suite runs on Linux)
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
        patch.delenv("TIDEFLOW_STATE", raising=False)
        yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", []))
    if skipped and os.environ.get("TIDEFLOW_ALLOW_SKIPS") != "1" and exitstatus == 0:
        reporter.write_line(
            f"{skipped} test(s) skipped: failing the run (set TIDEFLOW_ALLOW_SKIPS=1 to allow)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
