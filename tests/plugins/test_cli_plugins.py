"""`tideflow plugins`: the listing, `--describe`, JSON, and errors."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
import reference_backends as rb
from click.testing import CliRunner, Result
from fake_dists import FakeInstall
from tideflow.dsl.durations import format_duration
from tideflow.plugins.api import (
    BackendRegistry,
    BoolType,
    DurationType,
    EnumType,
    Field,
    IntType,
    ListType,
    MapType,
    Notifier,
    NotifyEvent,
    StringType,
    hookimpl,
)
from tideflow.plugins.manager import load_plugins

from tideflow.cli.plugins import format_value, plugins_command

pytestmark = pytest.mark.usefixtures("no_installed_plugins")


class AcmeQueue(rb.MemoryBroker):
    """Acme's message queue."""

    name: ClassVar[str] = "acme"
    partitioned: ClassVar[bool] = True
    options: ClassVar[tuple[Field, ...]] = (
        Field("endpoint", StringType(secretable=True), "Where the queue listens.", required=True),
        Field("lease", DurationType(), "How long a message stays leased.", default=90.0),
        Field("mode", EnumType(("fast", "safe")), "Delivery mode.", default="safe"),
    )


class AcmeNotifier(Notifier):
    """Posts to Acme's chat."""

    name: ClassVar[str] = "acme"

    async def send(self, event: NotifyEvent) -> None:
        pass

    async def aclose(self) -> None:
        pass


def hooks(**registrations: tuple[type, ...]) -> dict[str, Any]:
    made: dict[str, Any] = {}
    for hook_name, classes in registrations.items():

        def hook(registry: BackendRegistry[Any], classes: tuple[type, ...] = classes) -> None:
            for cls in classes:
                registry.register(cls)

        hook.__name__ = hook_name
        made[hook_name] = hookimpl(hook)
    return made


@pytest.fixture
def installed(fake_install: FakeInstall, monkeypatch: pytest.MonkeyPatch) -> FakeInstall:
    """`tideflow plugins` sees the fake distributions the test installs."""
    monkeypatch.setattr("tideflow.cli.plugins.installed_plugins", lambda: load_plugins())
    return fake_install


def run(*args: str) -> Result:
    return CliRunner().invoke(plugins_command, list(args))


def test_lists_plugins_distributions_versions_and_backends(installed: FakeInstall) -> None:
    installed.plugin(
        "acme",
        "tideflow-acme",
        "2.0.1",
        **hooks(
            tideflow_register_brokers=(AcmeQueue,), tideflow_register_notifiers=(AcmeNotifier,)
        ),
    )
    result = run()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    (row,) = [line for line in lines if line.startswith("acme ")]
    assert [cell.strip() for cell in row.split("│")] == [
        "acme",
        "tideflow-acme",
        "2.0.1",
        "broker:acme, notifier:acme",
    ]
    assert any("│ broker:kafka" in line for line in lines)  # a built-in, like any plugin
    assert "option schema only" not in result.stdout
    assert result.stderr == ""


def test_lists_as_json(installed: FakeInstall) -> None:
    installed.plugin(
        "acme", "tideflow-acme", "2.0.1", **hooks(tideflow_register_brokers=(AcmeQueue,))
    )
    result = run("--format", "json")
    assert result.exit_code == 0
    listing = json.loads(result.stdout)
    assert [p for p in listing["plugins"] if not p["builtin"]] == [
        {
            "name": "acme",
            "module": "fake_acme_plugin",
            "distribution": "tideflow-acme",
            "version": "2.0.1",
            "builtin": False,
            "backends": [{"kind": "broker", "name": "acme"}],
            "lint_rules": [],
        }
    ]
    assert {"kind": "scaler", "name": "local"} in [
        backend for p in listing["plugins"] if p["builtin"] for backend in p["backends"]
    ]
    assert listing["schema_only"] == []
    assert listing["problems"] == []
    assert listing["disabled"] == []


def test_plugin_problems_are_listed_and_exit_1(installed: FakeInstall) -> None:
    installed.distribution("tideflow-broken", "0.2", {"broken": "no_such_module_for_tideflow"})
    installed.plugin("acme", "tideflow-acme", **hooks(tideflow_register_brokers=(AcmeQueue,)))
    result = run("--format", "json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["problems"] == [
        {
            "plugin": "broken",
            "distribution": "tideflow-broken",
            "version": "0.2",
            "message": "cannot be imported: ModuleNotFoundError: "
            "No module named 'no_such_module_for_tideflow'",
        }
    ]
    assert result.stderr.startswith('error: plugin "broken" (tideflow-broken 0.2): cannot be')


def test_describe_prints_the_options_table(installed: FakeInstall) -> None:
    installed.plugin(
        "acme", "tideflow-acme", "2.0.1", **hooks(tideflow_register_brokers=(AcmeQueue,))
    )
    result = run("--describe", "acme")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == 'broker "acme": Acme\'s message queue.'
    assert 'provided by plugin "acme" (tideflow-acme 2.0.1)' in out
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if "│" in line
        for cells in [[c.strip() for c in line.split("│")]]
    }
    assert rows["endpoint"] == ["string, env() or secret()", "yes", "-", "Where the queue listens."]
    assert rows["lease"] == ["duration", "no", "1m30s", "How long a message stays leased."]
    assert rows["mode"] == ["fast | safe", "no", "safe", "Delivery mode."]


class BracketQueue(rb.MemoryBroker):
    """Keeps [bold]everything[/bold] in [/tmp/q] :thumbs_up:."""

    name: ClassVar[str] = "bracket"
    options: ClassVar[tuple[Field, ...]] = (
        Field("path", StringType(), "A folder such as [/var/q] or \\[x].", default="[/tmp/q]"),
    )


def test_describe_prints_docs_and_defaults_as_they_are(installed: FakeInstall) -> None:
    installed.plugin(
        "bracket", "tideflow-bracket", "1.0", **hooks(tideflow_register_brokers=(BracketQueue,))
    )
    result = run("--describe", "bracket")
    assert result.exit_code == 0, result.output
    assert 'broker "bracket": Keeps [bold]everything[/bold] in [/tmp/q] :thumbs_up:.' in (
        result.stdout
    )
    assert "A folder such as [/var/q] or \\[x]." in result.stdout
    assert '"[/tmp/q]"' in result.stdout


def test_describe_a_builtin_schema(installed: FakeInstall) -> None:
    result = run("--describe", "kafka", "--format", "json")
    assert result.exit_code == 0
    described = json.loads(result.stdout)
    assert (described["kind"], described["implemented"], described["partitioned"]) == (
        "broker",
        True,
        True,
    )
    by_name = {o["name"]: o for o in described["options"]}
    assert by_name["session_timeout"]["default"] == 10.0
    assert by_name["session_timeout"]["default_text"] == "10s"
    assert by_name["bootstrap"]["required"] is True


def test_describe_a_builtin_executor(installed: FakeInstall) -> None:
    """`tideflow plugins` names the kubernetes executor `executor:kubernetes` beside
    the scaler of that name; that form describes it."""
    ambiguous = run("--describe", "kubernetes")
    assert ambiguous.exit_code == 2
    assert "`executor:kubernetes` or `scaler:kubernetes`" in ambiguous.stderr
    result = run("--describe", "executor:kubernetes", "--format", "json")
    assert result.exit_code == 0, result.stderr
    described = json.loads(result.stdout)
    assert described["kind"] == "executor"
    by_name = {o["name"]: o for o in described["options"]}
    assert by_name["image"]["required"] is True
    assert by_name["start_timeout"]["default_text"] == "10m"


def test_ambiguous_name_asks_for_the_kind(installed: FakeInstall) -> None:
    installed.plugin(
        "acme",
        "tideflow-acme",
        **hooks(
            tideflow_register_brokers=(AcmeQueue,), tideflow_register_notifiers=(AcmeNotifier,)
        ),
    )
    result = run("--describe", "acme")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: `acme` names several backends; say which: `broker:acme` or `notifier:acme`\n"
    )
    chosen = run("--describe", "notifier:acme", "--format", "json")
    assert chosen.exit_code == 0
    assert json.loads(chosen.stdout)["summary"] == "Posts to Acme's chat."


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "kafak",
            "error: unknown backend `kafak`; available: broker:embedded, broker:kafka, "
            "broker:nats, scaler:kubernetes, scaler:local, notifier:command, notifier:webhook, "
            "executor:dask, executor:kubernetes, executor:local\n"
            "  help: did you mean `kafka`?\n",
        ),
        (
            "scaler:kafka",
            "error: unknown backend `scaler:kafka`; available: scaler:kubernetes, scaler:local\n",
        ),
        (
            "queue:kafka",
            "error: unknown backend kind `queue` in `queue:kafka`; "
            "kinds: broker, scaler, notifier, executor\n",
        ),
    ],
)
def test_unknown_names_exit_2_and_list_what_exists(
    installed: FakeInstall, name: str, expected: str
) -> None:
    result = run("--describe", name)
    assert result.exit_code == 2
    assert result.stderr == expected
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(30.0, "30s"), (0.5, "500ms"), (5400.0, "1h30m"), (86400.0, "1d"), (0.0, "0s")],
)
def test_durations_are_written_as_in_a_flow(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


@pytest.mark.parametrize(
    ("value", "vtype", "written"),
    [
        (None, StringType(), ""),
        ("tideflow:", StringType(), '"tideflow:"'),
        (True, BoolType(), "true"),
        (5, IntType(), "5"),
        ("latest", EnumType(("earliest", "latest")), "latest"),
        ((1.0, 5.0), ListType(DurationType()), "[1s, 5s]"),
        ({"a": "b"}, MapType(StringType()), '{ a = "b" }'),
    ],
)
def test_defaults_are_written_as_in_a_flow(value: object, vtype: Any, written: str) -> None:
    assert format_value(value, vtype) == written
