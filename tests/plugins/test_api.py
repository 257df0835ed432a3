"""The public plugin API: what it exports, what importing it costs, and the old paths
that still work for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Sequence

import pluggy
import pytest
import reference_backends as rb
from tideflow.compiler.ir import ConsumerNode
from tideflow.plugins import api
from tideflow.plugins.api import ReportsAssignedPartitions, ReportsCrashLoops, hooks


def test_every_public_name_is_exported() -> None:
    assert sorted(api.__all__) == sorted(set(api.__all__))
    for name in api.__all__:
        assert getattr(api, name) is not None, name


def test_importing_the_api_loads_no_plugin_machinery() -> None:
    code = (
        "import sys, tideflow.plugins.api\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tideflow', 'pluggy', 'importlib') )))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "pluggy" not in loaded
    assert "importlib.metadata" not in loaded
    assert [m for m in loaded if m.startswith("tideflow.") and ".api" not in m] == [
        "tideflow.plugins"
    ]


@pytest.mark.parametrize(
    ("module", "name", "new"),
    [
        ("tideflow.plugins", "Broker", "tideflow.plugins.api"),
        ("tideflow.plugins", "OutgoingMessage", "tideflow.plugins.api"),
        ("tideflow.plugins", "hookimpl", "tideflow.plugins.api"),
        ("tideflow.plugins", "load_plugins", "tideflow.plugins.manager"),
        ("tideflow.plugins", "installed_plugins", "tideflow.plugins.manager"),
        ("tideflow.compiler.schema", "Field", "tideflow.plugins.api"),
        ("tideflow.compiler.schema", "StringType", "tideflow.plugins.api"),
        ("tideflow.compiler.schema", "Catalog", "tideflow.plugins.api"),
    ],
)
def test_old_paths_warn_and_still_work(module: str, name: str, new: str) -> None:
    old = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{name} moved: import it from {new}"):
        value = getattr(old, name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_old_path_that_never_existed_is_an_attribute_error() -> None:
    import tideflow.compiler.schema
    import tideflow.plugins

    with pytest.raises(AttributeError):
        _ = tideflow.plugins.NoSuchThing  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        _ = tideflow.compiler.schema.NoSuchThing  # type: ignore[attr-defined]


def test_the_languages_own_schemas_stay_in_the_compiler() -> None:
    from tideflow.compiler.schema import BLOCKS, JOB

    assert BLOCKS["job"] is JOB
    assert isinstance(JOB, api.BlockSchema)


# --- abilities ---------------------------------------------------------------------------


class _PartitionedBroker(rb.MemoryBroker):
    """A broker that can say which partitions this client holds."""

    def assigned_partitions(self, topic: str, group: str) -> Sequence[int]:
        return [0]


class _CrashReportingScaler(rb.MemoryScaler):
    """A scaler that can tell when its instances keep exiting."""

    @property
    def crash_looping(self) -> bool:
        return True


def test_abilities_are_told_by_isinstance() -> None:
    consumer = ConsumerNode(name="workers", consumes="orders", group="workers", run="m:f")
    namespace = {"namespace": "abilities"}
    assert isinstance(_PartitionedBroker(namespace), ReportsAssignedPartitions)
    assert not isinstance(rb.MemoryBroker(namespace), ReportsAssignedPartitions)
    assert isinstance(_CrashReportingScaler({}, consumer), ReportsCrashLoops)
    assert not isinstance(rb.MemoryScaler({}, consumer), ReportsCrashLoops)


def test_the_markers_write_what_pluggys_own_markers_write() -> None:
    """The API marks hooks without importing pluggy; pluggy reads what it wrote."""

    def ours() -> None: ...

    def theirs() -> None: ...

    for options in ({}, {"tryfirst": True}, {"trylast": True}):
        hooks.hookimpl(**options)(ours)
        pluggy.HookimplMarker("tideflow")(**options)(theirs)
        assert ours.tideflow_impl == theirs.tideflow_impl  # type: ignore[attr-defined]
    hooks.hookspec(ours)
    pluggy.HookspecMarker("tideflow")(theirs)
    assert ours.tideflow_spec == theirs.tideflow_spec  # type: ignore[attr-defined]
