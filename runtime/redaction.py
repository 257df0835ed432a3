"""Keeping `secret()` values out of every log line, whatever logger wrote it.

Each `secret()` value a process reads is remembered (`remember`, called by
`runtime.secrets` when it resolves one). `RedactingFilter`, on every handler of
the root logger and on `logging.lastResort` (`install`), replaces the values
remembered with `[secret]` in each record's message and arguments, exception
text and stack before any handler formats it: a URL that httpx logs, an error a
broker client prints, a notifier command's stderr in a warning. `configure`
does that for a program (the CLI, `tideflow run`, `tideflow worker`, job worker
processes), and quiets the client libraries' loggers (`CLIENT_LOGGERS`) to
warnings unless `TIDEFLOW_LOG` asks otherwise.

Stdlib only: job worker processes import this and must start fast.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from collections.abc import Iterable
from typing import Any, Final, TextIO, cast
from urllib.parse import quote, quote_plus

__all__ = [
    "CLIENT_LOGGERS",
    "LOG_LEVELS_ENV",
    "REDACTED",
    "RedactingFilter",
    "RedactingWriter",
    "Redactor",
    "configure",
    "install",
    "redact",
    "redacting",
    "remember",
]

REDACTED: Final = "[secret]"

#: Loggers of client libraries that log each request or connection at INFO or
#: DEBUG (httpx logs every URL, with its query string): warnings only by default.
CLIENT_LOGGERS: Final = (
    "httpx",
    "httpcore",
    "urllib3",
    "requests",
    "kubernetes",
    "nats",
    "confluent_kafka",
    "kafka",
    "distributed",
    "websockets",
    "multipart",
)

#: `TIDEFLOW_LOG=debug` sets the root level and lifts the client loggers' quiet;
#: `TIDEFLOW_LOG=httpx=info,nats=debug` sets single loggers (both forms combine).
LOG_LEVELS_ENV: Final = "TIDEFLOW_LOG"


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


_lock = threading.Lock()
_known: set[str] = set()
_process_redactor = Redactor()


def remember(values: Iterable[str]) -> None:
    """Add secret values to those this process keeps out of its logs (and their
    URL-encoded forms, as a client logs them in a URL)."""
    global _process_redactor
    fresh = set()
    for value in values:
        if value:
            fresh.update({value, quote(value, safe=""), quote(value), quote_plus(value)})
    with _lock:
        if fresh <= _known:
            return
        _known.update(fresh)
        _process_redactor = Redactor(_known)


def redact(text: str) -> str:
    """`text` without any secret value this process remembers."""
    return _process_redactor(text)


class RedactingFilter(logging.Filter):
    """Redacts a record in place (message with its arguments, exception, stack) and
    lets it through. On a handler, it covers every record that handler emits,
    whatever logger wrote it."""

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = _process_redactor
        if not redactor:
            return True
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit: the handler would print both
            message = f"{record.msg!s} (arguments: {record.args!r})"
        record.msg = redactor(message)
        record.args = None
        # `exc_info=False` is a valid way to log without one: a bool, not a tuple
        if record.exc_info and record.exc_info[0] is not None:
            if not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            # a handler that renders the exception itself (rich's tracebacks, with
            # their locals) would bypass the redacted text
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor(record.stack_info)
        return True


class RedactingWriter:
    """A text stream over `stream` that writes without the secret values this process
    remembers: the stdout and stderr of a `tideflow worker`, where a handler's
    `print` goes (its output under Kubernetes). Each `write` is redacted whole, as
    `print` writes each of its arguments."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(_process_redactor(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, ...
        return getattr(self.stream, name)


def redacting(stream: TextIO) -> TextIO:
    """`stream` behind a `RedactingWriter` (once)."""
    if isinstance(stream, RedactingWriter):
        return cast(TextIO, stream)
    return cast(TextIO, RedactingWriter(stream))


def install(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Put a `RedactingFilter` on `handlers` (default: the root logger's, and
    `logging.lastResort`, which prints when no handler is configured)."""
    if handlers is None:
        chosen = list(logging.getLogger().handlers)
        if logging.lastResort is not None:
            chosen.append(logging.lastResort)
    else:
        chosen = list(handlers)
    for handler in chosen:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def configure(environ: dict[str, str] | None = None) -> None:
    """Redaction on the root handlers, client loggers at WARNING, then the levels
    `TIDEFLOW_LOG` names. Call it again after replacing the root handlers."""
    install()
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    spec = (os.environ if environ is None else environ).get(LOG_LEVELS_ENV, "")
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, level = part.rpartition("=")
        number = logging.getLevelNamesMapping().get(level.strip().upper())
        if number is None:
            logging.getLogger("tideflow").warning(
                "ignoring %s entry %r: %r is not a log level", LOG_LEVELS_ENV, part, level
            )
            continue
        if sep:
            logging.getLogger(name.strip()).setLevel(number)
        else:
            logging.getLogger().setLevel(number)
            for client in CLIENT_LOGGERS:
                logging.getLogger(client).setLevel(logging.NOTSET)
