"""`tideflow_register_executors`: built-in and third-party executors reach the catalog."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from tideflow.plugins.api import (
    AttemptHandle,
    AttemptRequest,
    AttemptResult,
    BackendRegistry,
    Executor,
    RegistrationError,
)
from tideflow.plugins.local import LocalExecutor
from tideflow.plugins.manager import installed_plugins


class _Nowhere(Executor):
    """Runs nothing (a class to register)."""

    name = "nowhere"
    resource_options = ("tpu",)

    @classmethod
    def capacity(cls, options: object) -> dict[str, float]:
        return {"tpu": 2}

    async def start(self, request: AttemptRequest) -> AttemptHandle:
        raise NotImplementedError

    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        raise NotImplementedError

    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        raise NotImplementedError

    async def attempts(self) -> Sequence[AttemptHandle]:
        return []

    async def aclose(self) -> None:
        pass


def test_hook_tideflow_register_executors_registers_the_builtin_local_executor() -> None:
    plugins = installed_plugins()
    assert plugins.executor_class("local") is LocalExecutor
    spec = plugins.catalog.get("executor", "local")
    assert spec is not None
    assert spec.remote is False


def test_hook_tideflow_register_executors_accepts_only_complete_executor_classes() -> None:
    registry: BackendRegistry[Executor] = BackendRegistry("executor", Executor)
    assert registry.register(_Nowhere) is _Nowhere

    class Half(Executor):
        """Starts but never waits."""

        name = "half"

        async def start(self, request: AttemptRequest) -> AttemptHandle:
            raise NotImplementedError

    with pytest.raises(RegistrationError, match="unimplemented"):
        registry.register(Half)
    with pytest.raises(RegistrationError, match="is not a executor class"):
        registry.register(object)  # type: ignore[arg-type]
