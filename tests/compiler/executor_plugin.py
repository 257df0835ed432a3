"""A plugin with two executors for the compiler's tests, registered through the real hook
(`tideflow_register_executors`), so that the catalog entry the compiler reads is the one
the plugin manager builds: `farm`, remote, with resources of its own and a capacity its
options declare, and `nearby`, on this machine. They never run an attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from tideflow.plugins.api import (
    AttemptHandle,
    AttemptRequest,
    AttemptResult,
    BackendRegistry,
    Executor,
    Field,
    IntType,
    NumberType,
    SizeType,
    StringType,
    hookimpl,
)


class _Idle(Executor):
    async def start(self, request: AttemptRequest) -> AttemptHandle:
        raise NotImplementedError

    async def wait(self, handle: AttemptHandle) -> AttemptResult:
        raise NotImplementedError

    async def cancel(self, handle: AttemptHandle, *, grace: float) -> None:
        raise NotImplementedError

    async def attempts(self) -> Sequence[AttemptHandle]:
        return ()

    async def aclose(self) -> None:
        pass


class FarmExecutor(_Idle):
    """Runs attempts on a farm of machines."""

    name: ClassVar[str] = "farm"
    remote: ClassVar[bool] = True
    resource_options: ClassVar[tuple[str, ...]] = ("GPU", "licence", "scratch")
    options: ClassVar[tuple[Field, ...]] = (
        Field("address", StringType(secretable=True), "The farm's address.", required=True),
        Field("max_cpu", NumberType(positive=True), "Cores of the largest machine."),
        Field("max_memory", SizeType(), "Memory of the largest machine."),
        Field("gpus", IntType(minimum=0), "GPUs of the largest machine.", default=0),
    )

    @classmethod
    def capacity(cls, options: Mapping[str, Any]) -> Mapping[str, float] | None:
        found: dict[str, float] = {"gpu": options["gpus"], "GPU": options["gpus"]}
        if "max_cpu" in options:
            found["cpu"] = options["max_cpu"]
        if "max_memory" in options:
            found["memory"] = options["max_memory"]
        found["scratch"] = 10 * 1024**3
        found["tape"] = 2  # declared by the block's capacity only, not by the class
        return found


class NearbyExecutor(_Idle):
    """Runs attempts on this machine."""

    name: ClassVar[str] = "nearby"
    remote: ClassVar[bool] = False
    options: ClassVar[tuple[Field, ...]] = (
        Field("workers", IntType(minimum=1), "Processes.", default=2),
    )


class BrokenExecutor(_Idle):
    """Its `capacity` has a bug: the compiler must not fail because of it."""

    name: ClassVar[str] = "broken"
    remote: ClassVar[bool] = True

    @classmethod
    def capacity(cls, options: Mapping[str, Any]) -> Mapping[str, float] | None:
        raise KeyError("oops")


@hookimpl
def tideflow_register_executors(registry: BackendRegistry[Executor]) -> None:
    registry.register(FarmExecutor)
    registry.register(NearbyExecutor)
    registry.register(BrokenExecutor)
