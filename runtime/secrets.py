"""Resolving `env()` and `secret()` at run time, and keeping secret values out of records.

Both read the orchestrator's environment when an attempt starts. A missing
variable (an `env()` without a default, or any `secret()`) fails the attempt
with a message naming the variable, never a value. Every resolved secret value
is redacted from what the executor stores: output, log lines and errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tideflow.compiler.ir import EnvRef, SecretRef, TextValue

REDACTED: Final = "[secret]"


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
    """The current values of every `secret()` found (recursively) in `values`; missing
    ones are left out (whoever needs them reports them)."""
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
    return found


class Redactor:
    """Replaces every known secret value in a text with `[secret]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # longest first, so a secret containing another is replaced whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
