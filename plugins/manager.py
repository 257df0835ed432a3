"""Loading plugins: the built-ins first, then the `tideflow` entry-point group.

`load_plugins()` is the one explicit place where plugins are found, imported and
asked to register; nothing happens at import time. A plugin that fails (cannot
be imported, implements an unknown hook, raises in a hook, registers something
invalid or a name already taken) becomes a `PluginProblem` naming the plugin and
its distribution: reported, never fatal to commands that do not need it.

`default_catalog()` and `default_lint_rules()` are what the compiler uses when
it is given none. This module imports only the plugin API and the dsl, so the
compiler may import it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import os
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import pluggy
from tideflow.dsl.diagnostics import CODES
from tideflow.dsl.suggest import suggest

from .api import hooks
from .api.backends import Backend, Broker, Notifier, Scaler, backend_summary
from .api.executors import Executor
from .api.lint import LintRule
from .api.options import BackendSpec, Catalog
from .api.registry import BackendRegistry, LintRuleRegistry

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLED_PLUGINS_ENV",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "BackendEntry",
    "PluginError",
    "PluginInfo",
    "PluginProblem",
    "PluginSet",
    "UnknownBackendError",
    "default_catalog",
    "default_lint_rules",
    "installed_plugins",
    "load_plugins",
]

# The built-in backends are plugins too, registered through the same hooks, in
# this order, before any installed plugin. Each entry is a module implementing
# some of the `tideflow_register_*` hooks.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "tideflow.plugins.dask_executor",
    "tideflow.plugins.embedded",
    "tideflow.plugins.kafka",
    "tideflow.plugins.kubernetes_executor",
    "tideflow.plugins.kubernetes_scaler",
    "tideflow.plugins.local",
    "tideflow.plugins.nats_broker",
    "tideflow.plugins.notifiers",
)

ENTRY_POINT_GROUP = "tideflow"
DISABLE_AUTOLOAD_ENV = "TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD"
DISABLED_PLUGINS_ENV = "TIDEFLOW_DISABLED_PLUGINS"

BUILTIN_DISTRIBUTION = "tideflow"

# The names users know from `tideflow plugins` and TIDEFLOW_DISABLED_PLUGINS, kept when
# these modules became packages; any other built-in is named after its module.
BUILTIN_NAMES: Mapping[str, str] = {
    "tideflow.plugins.embedded": "embedded_broker",
    "tideflow.plugins.kafka": "kafka_broker",
    "tideflow.plugins.local": "local_scaler",
}

# kind -> (registration hook, interface)
BACKEND_HOOKS: Mapping[str, tuple[str, type[Backend]]] = {
    "broker": ("tideflow_register_brokers", Broker),
    "scaler": ("tideflow_register_scalers", Scaler),
    "notifier": ("tideflow_register_notifiers", Notifier),
    "executor": ("tideflow_register_executors", Executor),
}
LINT_HOOK = "tideflow_lint_rules"


class PluginError(Exception):
    """A backend cannot be used because of how plugins are installed."""


class UnknownBackendError(PluginError, LookupError):
    """No installed plugin provides the backend asked for."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One loaded plugin and what it provides."""

    name: str  # entry-point name, or the last part of a built-in's module path
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    backends: tuple[tuple[str, str], ...] = ()  # (kind, name)
    lint_rules: tuple[str, ...] = ()  # codes

    def describe(self) -> str:
        """`plugin "redis" (tideflow-redis 0.1.0)`."""
        return _describe_plugin(self.name, self.distribution, self.version)


def _describe_plugin(name: str, distribution: str | None, version: str | None) -> str:
    if distribution is None:
        return f'plugin "{name}"'
    return f'plugin "{name}" ({distribution}{" " + version if version else ""})'


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """Something wrong with one plugin, named with its distribution."""

    plugin: str
    distribution: str | None
    version: str | None
    message: str

    def __str__(self) -> str:
        return f"{_describe_plugin(self.plugin, self.distribution, self.version)}: {self.message}"


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A backend the catalog knows: its class and the plugin that registered it."""

    kind: str
    name: str
    spec: BackendSpec
    backend_class: type[Backend]
    plugin: PluginInfo | None

    def describe(self) -> str:
        """`tideflow_redis.broker.RedisBroker (plugin "redis", tideflow-redis 0.1.0)`."""
        where = f"{self.backend_class.__module__}.{self.backend_class.__qualname__}"
        if self.plugin is None:
            return where
        owner = self.plugin
        dist = f", {owner.distribution}" if owner.distribution else ""
        ver = f" {owner.version}" if owner.distribution and owner.version else ""
        return f'{where} (plugin "{owner.name}"{dist}{ver})'


@dataclass(frozen=True)
class PluginSet:
    """The outcome of `load_plugins()`: plugins, backends, lint rules, problems."""

    manager: pluggy.PluginManager
    plugins: tuple[PluginInfo, ...]
    backends: Mapping[str, Mapping[str, BackendEntry]]  # kind -> name -> entry
    lint_rules: tuple[LintRule, ...]  # in plugin order; the compiler guards their failures
    problems: tuple[PluginProblem, ...]
    disabled: tuple[str, ...]  # plugin names blocked by TIDEFLOW_DISABLED_PLUGINS
    # (kind, name) -> every entry that claimed the name, the one in `backends` first
    conflicts: Mapping[tuple[str, str], tuple[BackendEntry, ...]] = field(default_factory=dict)

    @cached_property
    def catalog(self) -> Catalog:
        """What the compiler validates blocks against."""
        return Catalog(
            {
                kind: {name: entry.spec for name, entry in sorted(entries.items())}
                for kind, entries in self.backends.items()
            }
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self.backends.get(kind, {}))

    def entry(self, kind: str, name: str) -> BackendEntry:
        """The backend `name` of `kind`; `UnknownBackendError` lists the available ones."""
        entries = self.backends.get(kind, {})
        if name in entries:
            return entries[name]
        available = ", ".join(sorted(entries)) or "none"
        close = suggest(name, entries, '"{}"')
        hint = f" ({close})" if close else ""
        raise UnknownBackendError(f'unknown {kind} "{name}"{hint}; available {kind}s: {available}')

    def find(self, name: str) -> list[BackendEntry]:
        """Every backend called `name`, whatever its kind."""
        return [entries[name] for _, entries in sorted(self.backends.items()) if name in entries]

    def backend_class(self, kind: str, name: str) -> type[Backend]:
        """The class to construct for a block naming backend `name` of `kind`.

        Raises `UnknownBackendError`, or `PluginError` when two plugins provide the
        name."""
        entry = self.entry(kind, name)
        claims = self.conflicts.get((kind, name))
        if claims:
            parts = " and ".join(c.describe() for c in claims)
            raise PluginError(
                f'{kind} "{name}" is provided more than once: by {parts}; uninstall one, '
                f"or block one with {DISABLED_PLUGINS_ENV}"
            )
        return entry.backend_class

    # the registries accepted only subclasses of each kind's interface, hence the asserts
    def broker_class(self, name: str) -> type[Broker]:
        cls = self.backend_class("broker", name)
        assert issubclass(cls, Broker)
        return cls

    def scaler_class(self, name: str) -> type[Scaler]:
        cls = self.backend_class("scaler", name)
        assert issubclass(cls, Scaler)
        return cls

    def notifier_class(self, name: str) -> type[Notifier]:
        cls = self.backend_class("notifier", name)
        assert issubclass(cls, Notifier)
        return cls

    def executor_class(self, name: str) -> type[Executor]:
        cls = self.backend_class("executor", name)
        assert issubclass(cls, Executor)
        return cls


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A plugin found but not yet imported."""

    name: str
    module: str
    load: Callable[[], object]
    distribution: str | None
    version: str | None
    builtin: bool

    def info(
        self, backends: tuple[tuple[str, str], ...], lint_rules: tuple[str, ...]
    ) -> PluginInfo:
        return PluginInfo(
            self.name,
            self.module,
            self.distribution,
            self.version,
            self.builtin,
            backends=backends,
            lint_rules=lint_rules,
        )

    def problem(self, message: str) -> PluginProblem:
        return PluginProblem(self.name, self.distribution, self.version, message)


def _builtin_candidates(modules: Sequence[str]) -> Iterator[_Candidate]:
    version = importlib.metadata.version(BUILTIN_DISTRIBUTION)
    for module in modules:
        yield _Candidate(
            BUILTIN_NAMES.get(module, module.rpartition(".")[2]),
            module,
            functools.partial(importlib.import_module, module),
            BUILTIN_DISTRIBUTION,
            version,
            builtin=True,
        )


def _entry_point_candidates(
    entry_points: Iterable[importlib.metadata.EntryPoint],
) -> Iterator[_Candidate]:
    for ep in entry_points:
        dist = ep.dist
        yield _Candidate(
            ep.name,
            ep.module,
            ep.load,
            dist.name if dist is not None else None,
            dist.version if dist is not None else None,
            builtin=False,
        )


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _disabled_names(environ: Mapping[str, str]) -> set[str]:
    raw = environ.get(DISABLED_PLUGINS_ENV, "")
    return {_normalise(part.strip()) for part in raw.split(",") if part.strip()}


def _is_disabled(candidate: _Candidate, disabled: set[str]) -> bool:
    names = {candidate.name, candidate.module}
    if candidate.distribution and not candidate.builtin:
        names.add(candidate.distribution)
    return any(_normalise(n) in disabled for n in names)


def _hook_names() -> list[str]:
    return [n for n in vars(hooks) if n.startswith("tideflow_")]


def _validate_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Problems with a registered plugin's hook implementations."""
    problems: list[str] = []
    known = _hook_names()
    for caller in pm.get_hookcallers(plugin) or ():
        if not caller.has_spec():
            close = suggest(caller.name, known)
            hint = f" ({close})" if close else ""
            problems.append(f"implements unknown hook `{caller.name}`{hint}")
    # a function with a hook's name but no marker is silently ignored by pluggy;
    # that is nearly always a forgotten `@tideflow.hookimpl`
    namespace = vars(plugin) if isinstance(plugin, types.ModuleType) else {}
    marker = f"{hooks.PROJECT_NAME}_impl"
    for attr in known:
        value = namespace.get(attr)
        if inspect.isfunction(value) and not hasattr(value, marker):
            problems.append(f"`{attr}` is not marked with `@tideflow.hookimpl`, so it never runs")
    return problems


def load_plugins(
    *,
    default_plugins: Sequence[str] = DEFAULT_PLUGINS,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PluginSet:
    """Find, import and register plugins, then ask each for its backends and rules.

    The built-ins (`default_plugins`) come first, then the `tideflow` entry-point
    group of the installed distributions (or `entry_points`, when given), unless
    `TIDEFLOW_DISABLE_PLUGIN_AUTOLOAD` is set. `TIDEFLOW_DISABLED_PLUGINS` (comma
    separated plugin, module or distribution names) blocks plugins."""
    env = os.environ if environ is None else environ
    pm = pluggy.PluginManager(hooks.PROJECT_NAME)
    pm.add_hookspecs(hooks)

    candidates = list(_builtin_candidates(default_plugins))
    if not env.get(DISABLE_AUTOLOAD_ENV):
        found = (
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
            if entry_points is None
            else [ep for ep in entry_points if ep.group == ENTRY_POINT_GROUP]
        )
        candidates.extend(_entry_point_candidates(found))

    problems: list[PluginProblem] = []
    disabled: list[str] = []
    disabled_names = _disabled_names(env)
    loaded: dict[str, _Candidate] = {}
    for candidate in candidates:
        if _is_disabled(candidate, disabled_names):
            disabled.append(candidate.name)
            continue
        if candidate.name in loaded:
            first = loaded[candidate.name]
            problems.append(
                candidate.problem(
                    f"the plugin name is already taken by {first.module} "
                    f"({first.distribution or 'unknown distribution'}); this one is ignored"
                )
            )
            continue
        try:
            plugin = candidate.load()
        except Exception as exc:
            problems.append(candidate.problem(f"cannot be imported: {_error_text(exc)}"))
            continue
        try:
            pm.register(plugin, name=candidate.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            problems.append(candidate.problem(f"cannot be registered: {_error_text(exc)}"))
            continue
        hook_problems = _validate_hooks(pm, plugin)
        problems.extend(candidate.problem(message) for message in hook_problems)
        if any(message.startswith("implements unknown hook") for message in hook_problems):
            pm.unregister(plugin)
            continue
        loaded[candidate.name] = candidate

    return _collect(pm, loaded, problems, tuple(disabled))


def _call_hook(
    pm: pluggy.PluginManager,
    hook_name: str,
    loaded: Mapping[str, _Candidate],
    make_registry: Callable[[], Any],
    problems: list[PluginProblem],
) -> Iterator[tuple[_Candidate, Any]]:
    """Call each plugin's implementation of a registration hook with a fresh
    registry, in registration order (built-ins first); yields the registries of
    the calls that succeeded."""
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():
        candidate = loaded[impl.plugin_name]
        if impl.hookwrapper or impl.wrapper:
            problems.append(candidate.problem(f"`{hook_name}` cannot be a hook wrapper"))
            continue
        registry = make_registry()
        arguments = {"registry": registry}
        try:
            impl.function(*(arguments[name] for name in impl.argnames))
        except Exception as exc:
            problems.append(candidate.problem(f"`{hook_name}` failed: {_error_text(exc)}"))
            continue
        yield candidate, registry


def _collect(
    pm: pluggy.PluginManager,
    loaded: Mapping[str, _Candidate],
    problems: list[PluginProblem],
    disabled: tuple[str, ...],
) -> PluginSet:
    provided: dict[str, list[tuple[str, str]]] = {name: [] for name in loaded}
    registered: list[tuple[_Candidate, str, type[Backend]]] = []
    for kind, (hook_name, interface) in BACKEND_HOOKS.items():
        for candidate, registry in _call_hook(
            pm, hook_name, loaded, functools.partial(BackendRegistry, kind, interface), problems
        ):
            for cls in cast("BackendRegistry[Backend]", registry).registered:
                registered.append((candidate, kind, cls))
                provided[candidate.name].append((kind, cls.name))

    rules: list[tuple[_Candidate, LintRule]] = []
    rule_codes: dict[str, list[str]] = {name: [] for name in loaded}
    make_registry = functools.partial(LintRuleRegistry, CODES)
    for candidate, registry in _call_hook(pm, LINT_HOOK, loaded, make_registry, problems):
        for rule_class in cast("LintRuleRegistry", registry).registered:
            try:
                rule = rule_class()
            except Exception as exc:
                problems.append(
                    candidate.problem(
                        f"lint rule {rule_class.code} could not be created: {_error_text(exc)}"
                    )
                )
                continue
            rules.append((candidate, rule))
            rule_codes[candidate.name].append(rule.code)

    infos = {
        name: candidate.info(backends=tuple(provided[name]), lint_rules=tuple(rule_codes[name]))
        for name, candidate in loaded.items()
    }

    backends: dict[str, dict[str, BackendEntry]] = {kind: {} for kind in BACKEND_HOOKS}
    conflicts: dict[tuple[str, str], list[BackendEntry]] = {}
    for candidate, kind, cls in registered:
        spec = BackendSpec(
            cls.name,
            cls.options,
            backend_summary(cls),
            partitioned=issubclass(cls, Broker) and cls.partitioned,
            subject_routed=issubclass(cls, Broker) and cls.subject_routed,
            remote=issubclass(cls, Executor) and cls.remote,
            resource_options=cls.resource_options if issubclass(cls, Executor) else (),
            capacity=cls.capacity if issubclass(cls, Executor) else None,
        )
        entry = BackendEntry(kind, cls.name, spec, cls, infos[candidate.name])
        taken = backends[kind].get(cls.name)
        if taken is not None:
            conflicts.setdefault((kind, cls.name), [taken]).append(entry)
            problems.append(
                candidate.problem(
                    f'{kind} "{cls.name}" of {entry.describe()} is already provided by '
                    f"{taken.describe()}; the first is kept"
                )
            )
            continue
        backends[kind][cls.name] = entry

    lint_rules: list[LintRule] = []
    owners: dict[str, PluginInfo] = {}
    for candidate, rule in rules:
        if rule.code in owners:
            problems.append(
                candidate.problem(
                    f"lint rule {rule.code} is already registered by "
                    f"{owners[rule.code].describe()}; the first is kept"
                )
            )
            continue
        owners[rule.code] = infos[candidate.name]
        lint_rules.append(rule)

    return PluginSet(
        manager=pm,
        plugins=tuple(infos.values()),
        backends=backends,
        lint_rules=tuple(lint_rules),
        problems=tuple(problems),
        disabled=disabled,
        conflicts={key: tuple(entries) for key, entries in conflicts.items()},
    )


@functools.cache
def installed_plugins() -> PluginSet:
    """`load_plugins()` once per process (`installed_plugins.cache_clear()` forgets)."""
    return load_plugins()


def default_catalog() -> Catalog:
    """The catalog the compiler validates against when none is given: the built-ins
    and every installed plugin, loaded once per process."""
    return installed_plugins().catalog


def default_lint_rules() -> tuple[LintRule, ...]:
    """The lint rules installed plugins register through `tideflow_lint_rules`, in
    plugin order (the compiler reports a rule that fails as W409)."""
    return installed_plugins().lint_rules
