"""Resolving `env()` and `secret()` at run time, and keeping secret values out of records.

Both read the orchestrator's environment when an attempt starts. A missing
variable (an `env()` without a default, or any `secret()`) fails the attempt
with a message naming the variable, never a value. Every resolved secret value
is redacted from what the executor stores (output, log lines and errors); each
read from this process's environment is also remembered by `redaction`, which
keeps it out of whatever this process logs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tideflow.compiler.ir import EnvRef, FlowIR, SecretRef, TextValue

from .redaction import REDACTED, Redactor, remember

__all__ = [
    "REDACTED",
    "Redactor",
    "Resolved",
    "UnresolvedValueError",
    "flow_secret_values",
    "resolve",
    "resolve_value",
    "secret_values",
]


class UnresolvedValueError(Exception):
    """A variable that an `env()` or `secret()` reads is not set."""

    def __init__(self, reference: EnvRef | SecretRef, where: str) -> None:
        call = "secret" if isinstance(reference, SecretRef) else "env"
        super().__init__(
            f"environment variable `{reference.name}` is not set "
            f'(read by {call}("{reference.name}") in {where})'
        )
        self.reference = reference


def resolve_value(value: TextValue, where: str, environ: Mapping[str, str] | None = None) -> str:
    """The text of a value, reading `env()`/`secret()` from `environ` (os.environ)."""
    if isinstance(value, str):
        return value
    env = os.environ if environ is None else environ
    found = env.get(value.name)
    if found is not None:
        if isinstance(value, SecretRef) and environ is None:
            remember((found,))
        return found
    if isinstance(value, EnvRef) and value.default is not None:
        return value.default
    raise UnresolvedValueError(value, where)


@dataclass(frozen=True, slots=True)
class Resolved:
    """Resolved values with the secret values among them, for redaction."""

    env: Mapping[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()


def resolve(
    env: Mapping[str, TextValue],
    argv: Sequence[TextValue] = (),
    *,
    where: str,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Resolve a job's `env` and `command`; raises `UnresolvedValueError` on the first
    variable that is missing, in the order written (env first)."""
    secrets: set[str] = set()
    values: dict[str, str] = {}
    for key, value in env.items():
        values[key] = resolve_value(value, f"the env of {where}", environ)
        if isinstance(value, SecretRef):
            secrets.add(values[key])
    args: list[str] = []
    for value in argv:
        args.append(resolve_value(value, f"the command of {where}", environ))
        if isinstance(value, SecretRef):
            secrets.add(args[-1])
    return Resolved(values, tuple(args), frozenset(secrets))


def secret_values(values: Iterable[object], environ: Mapping[str, str] | None = None) -> set[str]:
    """The current values of every `secret()` found (recursively, in mappings,
    sequences and dataclasses) in `values`; missing ones are left out (whoever needs
    them reports them)."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, SecretRef):
            if value.name in env:
                found.add(env[value.name])
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in dataclasses.fields(value))
    if environ is None:
        remember(found)
    return found


def flow_secret_values(flows: Iterable[FlowIR]) -> set[str]:
    """The current values of every `secret()` of `flows` (options, env, commands). A
    program calls this once it has its flows, so that its logs redact them before
    anything it starts (a consumer instance whose output it relays) prints one."""
    return secret_values(record for flow in flows for record in flow.records())
