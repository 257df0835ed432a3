"""Loading plugins through pluggy and entry points of (fake) installed distributions.

Tests named `test_hook_<hook name>...` are the ones `test_hook_coverage.py`
requires for each hook.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import reference_backends as rb
from fake_dists import FakeInstall
from tideflow.compiler import compile_source
from tideflow.compiler.ir import FlowIR
from tideflow.dsl.diagnostics import Diagnostic, Severity
from tideflow.plugins import builtin_options
from tideflow.plugins.api import (
    BackendRegistry,
    Broker,
    DurationType,
    Field,
    IntType,
    LintRuleRegistry,
    Notifier,
    NotifyEvent,
    StringType,
    hookimpl,
)
from tideflow.plugins.manager import (
    DEFAULT_PLUGINS,
    PluginError,
    PluginSet,
    UnknownBackendError,
    default_catalog,
    default_lint_rules,
    installed_plugins,
    load_plugins,
)

pytestmark = pytest.mark.usefixtures("no_installed_plugins")


class AcmeQueue(rb.MemoryBroker):
    """Acme's message queue."""

    name: ClassVar[str] = "acme"
    options: ClassVar[tuple[Field, ...]] = (
        *rb.MemoryBroker.options,
        Field("lease", DurationType(), "How long a message stays leased.", default=30.0),
    )
    partitioned: ClassVar[bool] = False


class OtherAcmeQueue(AcmeQueue):
    """Someone else's queue that took the same name."""


class NomadScaler(rb.MemoryScaler):
    """Scales a Nomad job group."""

    name: ClassVar[str] = "nomad"
    options: ClassVar[tuple[Field, ...]] = (
        Field("job", StringType(), "Nomad job.", required=True),
        Field("count_limit", IntType(minimum=1), "Most allocations.", default=10),
    )


class PagerNotifier(Notifier):
    """Pages the person on call."""

    name: ClassVar[str] = "pager"
    options: ClassVar[tuple[Field, ...]] = (
        Field("service", StringType(secretable=True), "Pager service key.", required=True),
    )
    sent: ClassVar[list[NotifyEvent]] = []

    async def send(self, event: NotifyEvent) -> None:
        self.sent.append(event)

    async def aclose(self) -> None:
        pass


class OwnerRule:
    """Every job says who owns it in its params."""

    code = "ACME001"
    summary = "job without an owner"

    def check(self, flow: FlowIR) -> Iterable[Diagnostic]:
        for job in flow.jobs.values():
            if "owner" not in job.params:
                yield Diagnostic(
                    self.code,
                    f'job "{job.name}" has no owner',
                    flow.span_of("job", job.name),
                    help='add `params = { owner = "team" }`',
                    level=Severity.ERROR,
                )


def registering(kind_hook: str, *classes: type) -> dict[str, Any]:
    """Hook implementations for a fake plugin module."""

    @hookimpl
    def hook(registry: BackendRegistry[Any]) -> None:
        for cls in classes:
            registry.register(cls)

    hook.__name__ = kind_hook
    return {kind_hook: hook}


def messages(plugins: PluginSet) -> list[str]:
    return [str(problem) for problem in plugins.problems]


FLOW = """
broker "q" {{
  kind = "acme"
  namespace = "n"
  {extra}
}}
topic "orders" {{ broker = broker.q }}
job "extract" {{
  command   = ["true"]
  schedule  = every(1h)
  publishes = topic.orders
  {params}
}}
consumer "workers" {{
  consumes = topic.orders
  run      = "shop.workers:handle"
  scale {{
    backend = "nomad"
    max = 3
    job = "workers"
  }}
}}
"""


# --- each hook ----------------------------------------------------------------------------


def test_hook_tideflow_register_brokers(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "acme",
        "tideflow-acme",
        "2.1.0",
        **registering("tideflow_register_brokers", AcmeQueue),
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == []
    (info,) = plugins.plugins
    assert (info.name, info.distribution, info.version) == ("acme", "tideflow-acme", "2.1.0")
    assert info.backends == (("broker", "acme"),)
    assert plugins.broker_class("acme") is AcmeQueue
    spec = plugins.catalog.get("broker", "acme")
    assert spec is not None
    assert spec.options == AcmeQueue.options
    assert spec.doc == "Acme's message queue."
    assert spec.partitioned is False


def test_hook_tideflow_register_brokers_feeds_the_compiler(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    fake_install.plugin(
        "nomad", "tideflow-nomad", **registering("tideflow_register_scalers", NomadScaler)
    )
    plugins = load_plugins(default_plugins=())
    good = compile_source(FLOW.format(extra="lease = 10s", params=""), catalog=plugins.catalog)
    assert [d.message for d in good.errors] == []
    assert good.ir is not None
    assert dict(good.ir.brokers["q"].options)["lease"] == 10.0

    typo = compile_source(FLOW.format(extra="leese = 10s", params=""), catalog=plugins.catalog)
    (error,) = typo.errors
    assert (error.code, error.help) == ("E202", "did you mean `lease`?")
    wrong = compile_source(FLOW.format(extra='lease = "long"', params=""), catalog=plugins.catalog)
    assert [d.code for d in wrong.errors] == ["E203"]


def test_hook_tideflow_register_scalers(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "nomad", "tideflow-nomad", **registering("tideflow_register_scalers", NomadScaler)
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == []
    assert plugins.scaler_class("nomad") is NomadScaler
    assert plugins.plugins[0].backends == (("scaler", "nomad"),)
    spec = plugins.catalog.get("scaler", "nomad")
    assert spec is not None
    assert [o.name for o in spec.options] == ["job", "count_limit"]
    missing = FLOW.format(extra="", params="").replace('job = "workers"', "")
    errors = compile_source(missing, catalog=plugins.catalog).errors
    assert ("E204", 'missing required attribute `job` in scale of consumer "workers"') in {
        (d.code, d.message) for d in errors
    }


def test_hook_tideflow_register_notifiers(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "pager", "tideflow-pager", **registering("tideflow_register_notifiers", PagerNotifier)
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == []
    assert plugins.notifier_class("pager") is PagerNotifier
    assert plugins.catalog.names("notifier") == ["pager"]
    with pytest.raises(UnknownBackendError, match='unknown broker "pager"'):
        plugins.broker_class("pager")


def test_hook_tideflow_lint_rules(fake_install: FakeInstall) -> None:
    @hookimpl
    def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
        registry.register(OwnerRule)

    fake_install.plugin("owners", "acme-lint", tideflow_lint_rules=tideflow_lint_rules)
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    fake_install.plugin(
        "nomad", "tideflow-nomad", **registering("tideflow_register_scalers", NomadScaler)
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == []
    assert [rule.code for rule in plugins.lint_rules] == ["ACME001"]
    assert plugins.plugins[0].lint_rules == ("ACME001",)

    flow = FLOW.format(extra="", params="")
    result = compile_source(flow, "orders.flow", catalog=plugins.catalog, rules=plugins.lint_rules)
    (finding,) = result.diagnostics
    assert (finding.code, finding.severity, finding.message) == (
        "ACME001",
        Severity.ERROR,
        'job "extract" has no owner',
    )
    assert finding.span is not None
    assert finding.span.line == 8  # the job block
    owned = flow.replace("schedule  =", 'params = { owner = "shop" }\n  schedule  =')
    assert compile_source(owned, catalog=plugins.catalog, rules=plugins.lint_rules).ok


def test_hook_tideflow_lint_rules_refuses_tideflows_own_codes(fake_install: FakeInstall) -> None:
    class Impostor(OwnerRule):
        code = "E201"

    @hookimpl
    def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
        registry.register(Impostor)

    fake_install.plugin("impostor", "acme-lint", "0.3", tideflow_lint_rules=tideflow_lint_rules)
    plugins = load_plugins(default_plugins=())
    assert plugins.lint_rules == ()
    (problem,) = messages(plugins)
    assert problem.startswith('plugin "impostor" (acme-lint 0.3): `tideflow_lint_rules` failed')
    assert "E201 is one of tideflow's own codes" in problem


def test_hook_tideflow_lint_rules_takes_classes_not_instances(fake_install: FakeInstall) -> None:
    @hookimpl
    def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
        registry.register(OwnerRule())  # type: ignore[arg-type]

    fake_install.plugin("owners", "acme-lint", "0.3", tideflow_lint_rules=tideflow_lint_rules)
    plugins = load_plugins(default_plugins=())
    assert plugins.lint_rules == ()
    (problem,) = messages(plugins)
    assert problem.startswith('plugin "owners" (acme-lint 0.3): `tideflow_lint_rules` failed')
    assert "is not a class; register the lint rule's class" in problem


def test_hook_tideflow_lint_rules_a_rule_that_cannot_be_created(fake_install: FakeInstall) -> None:
    class NeedsArguments(OwnerRule):
        def __init__(self, team: str) -> None:
            self.team = team

    @hookimpl
    def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
        registry.register(NeedsArguments)
        registry.register(OwnerRule)

    fake_install.plugin("owners", "acme-lint", "0.3", tideflow_lint_rules=tideflow_lint_rules)
    plugins = load_plugins(default_plugins=())
    (problem,) = messages(plugins)
    assert problem.startswith(
        'plugin "owners" (acme-lint 0.3): lint rule ACME001 could not be created: TypeError'
    )
    assert [type(rule) for rule in plugins.lint_rules] == [OwnerRule]


# --- the built-ins, names ----------------------------------------------------------


def test_builtins_register_first_through_the_same_hooks(fake_install: FakeInstall) -> None:
    class KafkaForTest(rb.MemoryBroker):
        """Kafka, as a built-in registers it."""

        name: ClassVar[str] = "kafka"

    fake_install.module(
        "fake_builtin_kafka", **registering("tideflow_register_brokers", KafkaForTest)
    )
    fake_install.plugin(
        "squatter", "tideflow-squatter", **registering("tideflow_register_brokers", OtherAcmeQueue)
    )
    plugins = load_plugins(default_plugins=("fake_builtin_kafka",))
    builtin, squatter = plugins.plugins
    assert (builtin.name, builtin.distribution, builtin.builtin) == (
        "fake_builtin_kafka",
        "tideflow",
        True,
    )
    assert squatter.builtin is False
    assert plugins.broker_class("kafka") is KafkaForTest
    spec = plugins.catalog.get("broker", "kafka")
    assert spec is not None
    assert spec.options == KafkaForTest.options


def test_builtin_names_are_reserved(fake_install: FakeInstall) -> None:
    class FakeKafka(rb.MemoryBroker):
        """Not the real Kafka."""

        name: ClassVar[str] = "kafka"

    fake_install.plugin(
        "fake", "tideflow-fake", **registering("tideflow_register_brokers", FakeKafka)
    )
    plugins = load_plugins(default_plugins=DEFAULT_PLUGINS)
    (problem,) = [m for m in messages(plugins) if '"kafka"' in m]
    assert "is already provided by tideflow.plugins." in problem
    assert 'plugin "fake", tideflow-fake' in problem
    spec = plugins.catalog.get("broker", "kafka")
    assert spec is not None
    assert spec.options == builtin_options.KAFKA_BROKER
    with pytest.raises(PluginError, match="provided more than once"):
        plugins.broker_class("kafka")


def test_duplicate_backend_names_both_classes(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "acme", "tideflow-acme", "1.0", **registering("tideflow_register_brokers", AcmeQueue)
    )
    fake_install.plugin(
        "other", "tideflow-other", "3.2", **registering("tideflow_register_brokers", OtherAcmeQueue)
    )
    plugins = load_plugins(default_plugins=())
    (problem,) = messages(plugins)
    first = f"{__name__}.AcmeQueue"
    second = f"{__name__}.OtherAcmeQueue"
    assert problem == (
        f'plugin "other" (tideflow-other 3.2): broker "acme" of {second} (plugin "other", '
        f'tideflow-other 3.2) is already provided by {first} (plugin "acme", tideflow-acme 1.0); '
        "the first is kept"
    )
    with pytest.raises(PluginError) as raised:
        plugins.broker_class("acme")
    assert first in str(raised.value)
    assert second in str(raised.value)
    assert "TIDEFLOW_DISABLED_PLUGINS" in str(raised.value)


def test_unknown_backend_lists_the_available_ones(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    plugins = load_plugins(default_plugins=DEFAULT_PLUGINS)
    with pytest.raises(UnknownBackendError) as raised:
        plugins.broker_class("acmee")
    assert str(raised.value) == (
        'unknown broker "acmee" (did you mean "acme"?); '
        "available brokers: acme, embedded, kafka, nats"
    )
    with pytest.raises(UnknownBackendError, match=r"available scalers: kubernetes, local$"):
        plugins.scaler_class("zzz")


# --- failures are reported, named, and not fatal ----------------------------------------


def test_plugin_that_fails_to_import_is_reported(
    fake_install: FakeInstall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_tideflow_plugin.py").write_text("import not_a_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake_install.distribution("tideflow-broken", "0.9", {"broken": "broken_tideflow_plugin"})
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == [
        'plugin "broken" (tideflow-broken 0.9): cannot be imported: ModuleNotFoundError: '
        "No module named 'not_a_module_anywhere'"
    ]
    assert [p.name for p in plugins.plugins] == ["acme"]
    assert plugins.broker_class("acme") is AcmeQueue
    sys.modules.pop("broken_tideflow_plugin", None)


def test_hook_that_raises_is_reported_and_its_registrations_dropped(
    fake_install: FakeInstall,
) -> None:
    @hookimpl
    def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
        registry.register(AcmeQueue)
        raise RuntimeError("no licence key")

    fake_install.plugin(
        "acme",
        "tideflow-acme",
        tideflow_register_brokers=tideflow_register_brokers,
        **registering("tideflow_register_scalers", NomadScaler),
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == [
        'plugin "acme" (tideflow-acme 1.0): `tideflow_register_brokers` failed: '
        "RuntimeError: no licence key"
    ]
    assert "acme" not in plugins.names("broker")
    assert plugins.scaler_class("nomad") is NomadScaler


def test_unknown_hook_gets_did_you_mean(fake_install: FakeInstall) -> None:
    @hookimpl
    def tideflow_register_broker(registry: BackendRegistry[Broker]) -> None:
        registry.register(AcmeQueue)

    fake_install.plugin("typo", "tideflow-typo", tideflow_register_broker=tideflow_register_broker)
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == [
        'plugin "typo" (tideflow-typo 1.0): implements unknown hook `tideflow_register_broker` '
        "(did you mean `tideflow_register_brokers`?)"
    ]
    assert plugins.plugins == ()


def test_hook_without_marker_is_reported(fake_install: FakeInstall) -> None:
    def tideflow_register_brokers(registry: BackendRegistry[Broker]) -> None:
        registry.register(AcmeQueue)

    fake_install.plugin(
        "unmarked", "tideflow-unmarked", tideflow_register_brokers=tideflow_register_brokers
    )
    plugins = load_plugins(default_plugins=())
    assert messages(plugins) == [
        'plugin "unmarked" (tideflow-unmarked 1.0): `tideflow_register_brokers` is not marked '
        "with `@tideflow.hookimpl`, so it never runs"
    ]


def test_hook_with_wrong_argument_is_reported(fake_install: FakeInstall) -> None:
    @hookimpl
    def tideflow_register_brokers(registry: Any, catalog: Any) -> None:
        raise AssertionError("never called")

    fake_install.plugin(
        "args", "tideflow-args", tideflow_register_brokers=tideflow_register_brokers
    )
    (problem,) = messages(load_plugins(default_plugins=()))
    assert problem.startswith('plugin "args" (tideflow-args 1.0): cannot be registered:')
    assert "'catalog'" in problem


@pytest.mark.parametrize(
    ("registered", "expected"),
    [
        (rb.MemoryScaler, "is not a broker class (a subclass of tideflow.plugins.api.Broker)"),
        (OwnerRule(), "is not a broker class"),
        (Broker, "must set `name`"),
        (type("Nameless", (AcmeQueue,), {"name": "Bad Name", "__doc__": "x"}), "not 'Bad Name'"),
        (type("Undocumented", (AcmeQueue,), {"__doc__": None}), "has no docstring"),
        (
            type(
                "Twice",
                (AcmeQueue,),
                {"__doc__": "x", "options": (*AcmeQueue.options, *AcmeQueue.options)},
            ),
            "declares option `namespace` twice",
        ),
        (
            type(
                "Loose",
                (AcmeQueue,),
                {"__doc__": "x", "options": (Field("u", StringType(), "", required=True),)},
            ),
            "option `u` has no doc",
        ),
    ],
)
def test_invalid_registrations_are_reported(
    fake_install: FakeInstall, registered: Any, expected: str
) -> None:
    fake_install.plugin(
        "bad", "tideflow-bad", **registering("tideflow_register_brokers", registered)
    )
    plugins = load_plugins(default_plugins=())
    (problem,) = messages(plugins)
    assert problem.startswith('plugin "bad" (tideflow-bad 1.0): `tideflow_register_brokers` failed')
    assert expected in problem
    assert plugins.plugins[0].backends == ()


def test_same_plugin_name_in_two_distributions(fake_install: FakeInstall) -> None:
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    fake_install.module("fake_clash", **registering("tideflow_register_scalers", NomadScaler))
    fake_install.distribution("acme-clone", "0.1", {"acme": "fake_clash"})
    plugins = load_plugins(default_plugins=())
    (problem,) = messages(plugins)
    assert problem.startswith('plugin "acme" (acme-clone 0.1): the plugin name is already taken')
    assert "nomad" not in plugins.names("scaler")


# --- switches ---------------------------------------------------------------------------


def test_autoload_can_be_disabled(fake_install: FakeInstall) -> None:
    fake_install.module(
        "fake_builtin_pager", **registering("tideflow_register_notifiers", PagerNotifier)
    )
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    plugins = load_plugins(
        default_plugins=("fake_builtin_pager",),
        environ={"TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert [p.name for p in plugins.plugins] == ["fake_builtin_pager"]
    assert "acme" not in plugins.names("broker")
    assert plugins.notifier_class("pager") is PagerNotifier


@pytest.mark.parametrize("blocked", ["acme", "tideflow-acme", " tideflow_acme , other"])
def test_named_plugins_can_be_disabled(fake_install: FakeInstall, blocked: str) -> None:
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    fake_install.plugin(
        "nomad", "tideflow-nomad", **registering("tideflow_register_scalers", NomadScaler)
    )
    plugins = load_plugins(default_plugins=(), environ={"TIDEFLOW_DISABLED_PLUGINS": blocked})
    assert plugins.disabled == ("acme",)
    assert [p.name for p in plugins.plugins] == ["nomad"]
    assert "acme" not in plugins.names("broker")


def test_entry_points_can_be_given_explicitly() -> None:
    point = importlib.metadata.EntryPoint("direct", "fake_direct_plugin", "tideflow")
    other = importlib.metadata.EntryPoint("ignored", "fake_direct_plugin", "console_scripts")
    module = type(sys)("fake_direct_plugin")
    module.__dict__.update(registering("tideflow_register_brokers", AcmeQueue))
    sys.modules["fake_direct_plugin"] = module
    try:
        plugins = load_plugins(default_plugins=(), entry_points=[point, other], environ={})
    finally:
        del sys.modules["fake_direct_plugin"]
    (info,) = plugins.plugins
    assert (info.name, info.distribution, info.version) == ("direct", None, None)
    assert plugins.broker_class("acme") is AcmeQueue


def test_defaults_are_loaded_once_per_process(
    fake_install: FakeInstall, monkeypatch: pytest.MonkeyPatch
) -> None:
    @hookimpl
    def tideflow_lint_rules(registry: LintRuleRegistry) -> None:
        registry.register(OwnerRule)

    fake_install.plugin("owners", "acme-lint", tideflow_lint_rules=tideflow_lint_rules)
    fake_install.plugin(
        "acme", "tideflow-acme", **registering("tideflow_register_brokers", AcmeQueue)
    )
    installed_plugins.cache_clear()
    try:
        calls: list[Mapping[str, object]] = []
        real = load_plugins

        def counting(**params: Any) -> PluginSet:
            calls.append(params)
            return real(**params)

        monkeypatch.setattr("tideflow.plugins.manager.load_plugins", counting)
        catalog = default_catalog()
        assert catalog.get("broker", "acme") is not None
        assert [rule.code for rule in default_lint_rules()] == ["ACME001"]
        assert default_catalog() is catalog
        assert installed_plugins() is installed_plugins()
        assert len(calls) == 1
    finally:
        installed_plugins.cache_clear()


def test_built_ins_keep_the_names_users_disable_them_by() -> None:
    """The modules became packages (tideflow.plugins.kafka, ...); the plugin names that
    `tideflow plugins` shows and TIDEFLOW_DISABLED_PLUGINS takes did not change."""
    plugins = load_plugins(default_plugins=DEFAULT_PLUGINS, entry_points=(), environ={})
    assert sorted(info.name for info in plugins.plugins) == [
        "dask_executor",
        "embedded_broker",
        "kafka_broker",
        "kubernetes_executor",
        "kubernetes_scaler",
        "local_scaler",
        "nats_broker",
        "notifiers",
    ]
    disabled = load_plugins(
        default_plugins=DEFAULT_PLUGINS,
        entry_points=(),
        environ={"TIDEFLOW_DISABLED_PLUGINS": "kafka_broker,local_scaler"},
    )
    assert "kafka" not in disabled.names("broker")
    assert "local" not in disabled.names("scaler")
