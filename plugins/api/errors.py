"""The errors a backend raises; callers catch `BackendError`."""

from __future__ import annotations

__all__ = ["BackendClosedError", "BackendConfigError", "BackendError", "UnknownTopicError"]


class BackendError(Exception):
    """A backend could not do what was asked (server unreachable, bad reply, ...)."""


class BackendConfigError(BackendError):
    """The options given to a backend's constructor do not match its schema."""


class BackendClosedError(BackendError):
    """A method was called after `aclose()`."""


class UnknownTopicError(BackendError):
    """A broker was asked about a topic it was not constructed with."""
