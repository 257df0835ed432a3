"""tideflow's pytest plugin (entry point `pytest11`): the backend contract suite.

A package providing a broker enables the suite with a fixture and a subclass
(`ScalerContract` and `NotifierContract` work the same way; see their fixtures
below)::

    # conftest.py
    import pytest
    from tideflow_redis import RedisBroker

    @pytest.fixture
    def tideflow_broker_factory(redis_prefix):
        return lambda topics: RedisBroker({"url": URL, "key_prefix": redis_prefix}, topics)

    # test_contract.py
    from tideflow.testing import BrokerContract

    class TestRedisBroker(BrokerContract):
        pass

A plugin's tests import tideflow from here and from `tideflow.plugins.api`
only: besides the suite, this module gives them the records a backend is built
with (`TopicNode`, `ConsumerNode`), `compile_flow` for end-to-end tests of a
`.flow` file naming their backend, and the `tideflow_installed_plugins` fixture
(the plugins as a user's `tideflow` loads them, entry points included).

This module is loaded by every pytest run in an environment where tideflow is
installed, so it stays light: the suite itself (`tideflow.testing.contract`)
and everything else named above are imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

# the suite's asserts should explain themselves in third parties' runs too
pytest.register_assert_rewrite("tideflow.testing.contract", "tideflow.testing.executor_contract")

if TYPE_CHECKING:
    from tideflow.compiler import compile_flow
    from tideflow.compiler.ir import ConsumerNode, TopicNode
    from tideflow.plugins.manager import PluginSet

    from .contract import (
        BrokerContract,
        BrokerFactory,
        NotifierContract,
        NotifierDelivered,
        NotifierFactory,
        ScalerContract,
        ScalerFactory,
        receive,
        unique_name,
    )
    from .executor_contract import ExecutorContract, ExecutorFactory, attempt_request

__all__ = [
    "BrokerContract",
    "BrokerFactory",
    "ConsumerNode",
    "ExecutorContract",
    "ExecutorFactory",
    "NotifierContract",
    "NotifierDelivered",
    "NotifierFactory",
    "PluginSet",
    "ScalerContract",
    "ScalerFactory",
    "TopicNode",
    "attempt_request",
    "compile_flow",
    "receive",
    "tideflow_broker_factory",
    "tideflow_contract_timeout",
    "tideflow_executor_factory",
    "tideflow_executor_reattaches",
    "tideflow_failing_notifier_factory",
    "tideflow_installed_plugins",
    "tideflow_notifier_delivered",
    "tideflow_notifier_factory",
    "tideflow_quiet_period",
    "tideflow_scaler_factory",
    "unique_name",
]

_CONTRACT_NAMES = frozenset(
    {
        "BrokerContract",
        "BrokerFactory",
        "NotifierContract",
        "NotifierDelivered",
        "NotifierFactory",
        "ScalerContract",
        "ScalerFactory",
        "receive",
        "unique_name",
    }
)


# lazy (pytest start-up): name -> the module that defines it
_ELSEWHERE = {
    "ConsumerNode": "tideflow.compiler.ir",
    "TopicNode": "tideflow.compiler.ir",
    "compile_flow": "tideflow.compiler",
    "PluginSet": "tideflow.plugins.manager",
}


_EXECUTOR_CONTRACT_NAMES = frozenset({"ExecutorContract", "ExecutorFactory", "attempt_request"})


def __getattr__(name: str) -> Any:
    if name in _EXECUTOR_CONTRACT_NAMES:
        return getattr(importlib.import_module("tideflow.testing.executor_contract"), name)
    if name in _CONTRACT_NAMES:
        return getattr(importlib.import_module("tideflow.testing.contract"), name)
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _missing(fixture: str, contract: str, returns: str) -> NoReturn:
    pytest.fail(
        f"{contract} needs a `{fixture}` fixture (in conftest.py) returning {returns}; "
        "see docs/plugins.md",
        pytrace=False,
    )


@pytest.fixture
def tideflow_broker_factory() -> BrokerFactory:
    """Override in conftest.py: a callable taking topic records, returning a broker."""
    _missing("tideflow_broker_factory", "BrokerContract", "a callable(topics) -> Broker")


@pytest.fixture
def tideflow_executor_factory() -> ExecutorFactory:
    """Override in conftest.py: a callable taking nothing, returning an executor."""
    _missing("tideflow_executor_factory", "ExecutorContract", "a callable() -> Executor")


@pytest.fixture
def tideflow_executor_reattaches() -> bool:
    """Override with False for an executor that cannot re-attach from a new instance."""
    return True


@pytest.fixture
def tideflow_scaler_factory() -> ScalerFactory:
    """Override in conftest.py: a callable taking nothing, returning a scaler."""
    _missing("tideflow_scaler_factory", "ScalerContract", "a callable() -> Scaler")


@pytest.fixture
def tideflow_notifier_factory() -> NotifierFactory:
    """Override in conftest.py: a callable taking nothing, returning a notifier that
    delivers where `tideflow_notifier_delivered` reads."""
    _missing("tideflow_notifier_factory", "NotifierContract", "a callable() -> Notifier")


@pytest.fixture
def tideflow_notifier_delivered() -> NotifierDelivered:
    """Override in conftest.py: a callable returning the JSON events delivered so far
    where the factory's notifiers deliver, oldest first."""
    _missing(
        "tideflow_notifier_delivered",
        "NotifierContract",
        "a callable() -> the delivered events as JSON objects",
    )


@pytest.fixture
def tideflow_failing_notifier_factory() -> NotifierFactory | None:
    """Override in conftest.py (optional): a callable returning a notifier whose
    deliveries fail; without it the failure test is skipped."""
    return None


@pytest.fixture
def tideflow_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginSet]:
    """The installed plugins as `tideflow` loads them for a user, entry points
    included (a test suite may have turned auto-loading off); what the compiler
    and the runtime use during the test."""
    from tideflow.plugins import manager  # lazy: every pytest run loads this module

    monkeypatch.delenv(manager.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(manager.DISABLED_PLUGINS_ENV, raising=False)
    manager.installed_plugins.cache_clear()
    yield manager.installed_plugins()
    manager.installed_plugins.cache_clear()  # later tests load with their own settings


@pytest.fixture
def tideflow_contract_timeout() -> float:
    """Longest the suite waits for something that must happen, in seconds."""
    return 15.0


@pytest.fixture
def tideflow_quiet_period() -> float:
    """How long nothing must happen for the suite to conclude it never will (seconds);
    keep it above the redelivery delay of the backend's test configuration."""
    return 2.0
