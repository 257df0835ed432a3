"""`runtime.redaction`: secret values never reach a log line, whatever logger wrote it."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator

import pytest
from tideflow.compiler.ir import SecretRef
from tideflow.runtime import redaction
from tideflow.runtime.secrets import resolve_value


def fresh_secret() -> str:
    # the process remembers every secret for good: each test uses its own
    return f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger named like a client library's, writing to a redacting handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    redaction.install([handler])
    logger = logging.getLogger(f"httpx.test{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def test_arguments_exception_and_stack_are_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    secret = fresh_secret()
    redaction.remember([secret])
    url = f"http://127.0.0.1:8099/hook?token={secret}"
    logger.info('HTTP Request: POST %s "HTTP/1.0 200 OK"', url)
    logger.warning(f"formatted by the caller: {secret}")
    try:
        raise ValueError(f"bad token {secret}")
    except ValueError:
        logger.exception("failed with %r", {"token": secret})
    logger.error("here", stack_info=True, extra={})
    text = stream.getvalue()
    assert secret not in text
    assert "POST http://127.0.0.1:8099/hook?token=[secret]" in text
    assert "formatted by the caller: [secret]" in text
    assert "ValueError: bad token [secret]" in text
    assert "failed with {'token': '[secret]'}" in text


def test_a_record_that_says_it_has_no_exception_passes(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """`exc_info=False` (the consumer's crash log passes it) is a bool, not a tuple."""
    logger, stream = captured
    secret = fresh_secret()
    redaction.remember([secret])
    logger.error("crashed with %s", secret, exc_info=False)
    assert stream.getvalue() == f"ERROR {logger.name}: crashed with [secret]\n"


def test_url_encoded_forms_are_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    secret = f"p@ss word/{uuid.uuid4().hex}"
    redaction.remember([secret])
    logger.info("GET http://h/?q=%s and %s", "p%40ss%20word%2F" + secret[10:], secret)
    assert stream.getvalue().count("[secret]") == 2


def test_arguments_that_do_not_fit_are_redacted_too(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    secret = fresh_secret()
    redaction.remember([secret])
    logger.info("one %s two %s", secret)  # a bug in the caller: the handler prints both
    assert secret not in stream.getvalue()
    assert "[secret]" in stream.getvalue()


def test_a_secret_read_from_the_environment_is_remembered(
    captured: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = captured
    secret = fresh_secret()
    monkeypatch.setenv("TF_TEST_WEBHOOK", secret)
    assert resolve_value(SecretRef("TF_TEST_WEBHOOK"), "a test") == secret
    logger.info("posting to %s", secret)
    assert stream.getvalue().strip().endswith("posting to [secret]")


def test_configure_quiets_client_loggers_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("httpx", "nats", "kubernetes", "urllib3"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    redaction.configure({})
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("kubernetes").level == logging.WARNING
    redaction.configure({"TIDEFLOW_LOG": "httpx=debug, nats=INFO"})
    assert logging.getLogger("httpx").level == logging.DEBUG
    assert logging.getLogger("nats").level == logging.INFO
    assert logging.getLogger("urllib3").level == logging.WARNING


def test_a_program_without_handlers_prints_through_last_resort_redacted() -> None:
    """No handler configured (a plain CLI command): Python prints warnings through
    `logging.lastResort`, which `install()` covers too."""
    secret = fresh_secret()
    program = textwrap.dedent(f"""
        import logging, os
        from tideflow.compiler.ir import SecretRef
        from tideflow.runtime import redaction
        from tideflow.runtime.secrets import resolve_value
        redaction.configure()
        os.environ["TF_TOKEN"] = {secret!r}
        resolve_value(SecretRef("TF_TOKEN"), "a test")
        logging.getLogger("kubernetes.client").warning("token %s rejected", {secret!r})
    """)
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stderr == "token [secret] rejected\n"
