"""`tideflow worker FILE CONSUMER`: run one instance of a consumer until told to stop.

This is what the `local` scaler starts (one OS process per instance) and what a
container runs under Kubernetes. With `--ir IR.json` (or `TIDEFLOW_FLOW_IR`) the
instance reads the flow's compiled IR (`tideflow compile`'s output) instead of
compiling FILE: it runs the flow exactly as compiled, and never loads the compiler.
The instance consumes until SIGTERM or SIGINT,
then drains (see `tideflow.runtime.consumer`); a SIGINT during the drain exits at
once (a repeated SIGTERM does not: one stop may deliver it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import click

from tideflow.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    UsageProblem,
    consumer_of,
    echo_error,
    load_flow,
)
from tideflow.compiler.irjson import from_json
from tideflow.plugins.local.protocol import LIFELINE_ENV, PARENT_ENV
from tideflow.runtime import redaction

if TYPE_CHECKING:
    from tideflow.compiler.ir import ConsumerNode, FlowIR
    from tideflow.runtime.store import Store

__all__ = ["EXIT_CRASHED", "EXIT_DRAIN_TIMEOUT", "worker_command"]

#: The instance failed while running (its broker or the store became unusable, a bug).
EXIT_CRASHED: Final = 3
#: The instance stopped before its messages were finished; they were handed back.
EXIT_DRAIN_TIMEOUT: Final = 4

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# a fresh state store is migrated by whoever opens it first; instances starting
# together wait for one another this many times
STORE_OPEN_ATTEMPTS: Final = 5
PR_SET_PDEATHSIG: Final = 1
#: The environment variable `--ir` defaults to (a path, e.g. a file mounted in a pod).
IR_ENV: Final = "TIDEFLOW_FLOW_IR"


@click.command("worker")
@click.argument("file", metavar="FILE")
@click.argument("consumer_name", metavar="CONSUMER")
@click.option(
    "--state",
    "state_url",
    metavar="URL",
    default=None,
    help="State store: a SQLite path or a postgresql:// URL "
    "(default: $TIDEFLOW_STATE, else state.db in the user's state folder).",
)
@click.option(
    "--instance-id",
    metavar="ID",
    default=None,
    help="This instance's id in the state store (default: CONSUMER-<random>).",
)
@click.option(
    "--ir",
    "ir_path",
    metavar="IR.json",
    envvar=IR_ENV,
    default=None,
    help="Run the flow as compiled in this IR JSON file (`tideflow compile FILE -o "
    f"IR.json`) instead of compiling FILE (default: ${IR_ENV}).",
)
def worker_command(
    file: str,
    consumer_name: str,
    state_url: str | None,
    instance_id: str | None,
    ir_path: str | None,
) -> None:
    """Run one instance of CONSUMER of the flow FILE until SIGTERM or SIGINT.

    It fetches messages in batches, calls the consumer's handler for each,
    acknowledges after success, and dead-letters a message after `max_failures`
    failures. On SIGTERM it stops fetching, finishes what it holds and exits
    within the `drain_timeout`; Ctrl-C (SIGINT) during the drain exits at once.

    Exit status: 0 stopped after draining, 1 configuration problem, 2 usage,
    3 the instance failed, 4 the drain ran out of time.
    """
    _configure_logging()
    flow = load_flow(file) if ir_path is None else _read_ir(ir_path, file)
    consumer = consumer_of(flow, consumer_name, file=file)
    code = _run(flow, consumer, state_url, instance_id or _new_instance_id(consumer.name))
    _exit(code)


def _configure_logging() -> None:
    # a handler's print() is this instance's output too (a pod's log under Kubernetes)
    sys.stdout = redaction.redacting(sys.stdout)
    sys.stderr = redaction.redacting(sys.stderr)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries: warnings and errors only
    logging.getLogger("tideflow").setLevel(logging.INFO)  # ours and the handlers' ctx.logger
    redaction.configure()


def _read_ir(ir_path: str, file: str) -> FlowIR:
    """The flow compiled in the IR JSON file `ir_path`, which must be of a file named
    as FILE is (it may have been compiled elsewhere): an IR that cannot be read is a
    usage problem (exit 2), one that is not a valid IR of such a file a
    configuration problem (exit 1)."""
    try:
        text = Path(ir_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageProblem(f"cannot read the IR `{ir_path}`: {reason.lower()}") from None
    try:
        flow = from_json(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError included
        _configuration_problem(f"`{ir_path}` is not a tideflow IR: {exc}")
    source = flow.info.source
    if not source or Path(source).name != Path(file).name:
        _configuration_problem(
            f'`{ir_path}` is the IR of flow "{flow.info.name}" compiled from '
            f"`{source or '<string>'}`, not from `{file}`"
        )
    # FILE says where the flow is on this machine (its handlers, relative paths),
    # as it does when the instance compiles it: the IR may come from elsewhere
    return dataclasses.replace(flow, info=dataclasses.replace(flow.info, source=file))


def _new_instance_id(consumer: str) -> str:
    return f"{consumer[:48]}-{uuid.uuid4().hex[:12]}"


def _configuration_problem(message: str) -> NoReturn:
    echo_error(message)
    sys.exit(EXIT_PROBLEMS)


def _run(flow: FlowIR, consumer: ConsumerNode, state_url: str | None, instance_id: str) -> int:
    """Set the instance up (every problem found here exits 1), run it, and return the
    exit status."""
    # lazy: CLI start-up (what an instance runs is for this command only)
    from tideflow.plugins.api import BackendError
    from tideflow.plugins.manager import UnknownBackendError
    from tideflow.runtime import secrets
    from tideflow.runtime.backends import open_topic_broker
    from tideflow.runtime.consumer.handler import HandlerError, flow_directory, load_handler
    from tideflow.runtime.consumer.instance import ConsumerInstance, Outcome

    where = f'consumer "{consumer.name}"'
    secrets.flow_secret_values([flow])  # remembered: from now on, no log line shows one
    try:
        resolved = secrets.resolve(consumer.env, where=where)
    except secrets.UnresolvedValueError as exc:
        _configuration_problem(f"cannot start {where}: {exc}")
    os.environ.update(resolved.env)
    brokers = {flow.topics[consumer.consumes].broker}
    if consumer.dead_letter is not None:
        brokers.add(flow.topics[consumer.dead_letter].broker)
    secret_texts = resolved.secrets | secrets.secret_values(
        [flow.brokers[b].options for b in sorted(brokers)]
    )
    redact = secrets.Redactor(secret_texts)

    try:
        handler = load_handler(consumer.run, flow_directory(flow))
    except HandlerError as exc:
        _configuration_problem(f"cannot load the handler of {where}: {redact(str(exc))}")
    try:
        broker = open_topic_broker(flow, consumer.consumes)
    except (secrets.UnresolvedValueError, BackendError, UnknownBackendError) as exc:
        _configuration_problem(f"cannot open the broker of {where}: {redact(str(exc))}")
    store = _open_store(state_url)

    parent_pid = _parent_pid(os.environ.get(PARENT_ENV))
    lifeline = _lifeline_fd(os.environ.get(LIFELINE_ENV))
    instance = ConsumerInstance(
        flow,
        consumer,
        handler,
        broker,
        instance_id=instance_id,
        store=store,
        redact=redact,
        lifeline_fd=lifeline,
        parent_pid=parent_pid,
    )
    if parent_pid is not None:
        _die_with_parent()
        if os.getppid() != parent_pid:  # it went away before we could ask to be told
            instance.request_stop("the process that started this instance is gone")
    try:
        outcome = asyncio.run(instance.run(handle_signals=True))
    finally:
        store.close()
    if outcome is Outcome.DRAINED:
        return EXIT_OK
    if outcome is Outcome.DRAIN_TIMED_OUT:
        return EXIT_DRAIN_TIMEOUT
    return EXIT_CRASHED


def _open_store(url: str | None) -> Store:
    from tideflow.runtime.store import Store, StoreError  # lazy: CLI start-up

    for attempt in range(1, STORE_OPEN_ATTEMPTS + 1):
        try:
            return Store.open(url)
        except StoreError as exc:
            if attempt == STORE_OPEN_ATTEMPTS:
                _configuration_problem(str(exc))
            time.sleep(0.2 * attempt)  # another instance may be creating the tables
    raise AssertionError("unreachable")


def _parent_pid(marker: str | None) -> int | None:
    """The pid in the local scaler's "PID:START" marker, when there is one."""
    if not marker:
        return None
    with contextlib.suppress(ValueError):
        return int(marker.split(":", 1)[0])
    return None


def _lifeline_fd(text: str | None) -> int | None:
    if not text:
        return None
    try:
        fd = int(text)
        os.fstat(fd)
    except (ValueError, OSError):
        logging.getLogger("tideflow.consumer").warning(
            "ignoring %s=%s: not an open file descriptor", LIFELINE_ENV, text
        )
        return None
    os.set_inheritable(fd, False)  # the handler's subprocesses must not keep it open
    return fd


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent goes away (besides the lifeline pipe).

    The signal follows the parent *thread* that started this process, which is
    why it is only an extra: the local scaler starts instances from its event
    loop's thread, which lives as long as the orchestrator."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # lazy: Linux only, and only here

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _exit(code: int) -> NoReturn:
    """Exit with `code`. After a drain that ran out of time, handler threads may still
    run, and the interpreter would wait for them at exit: leave at once instead."""
    if code == EXIT_DRAIN_TIMEOUT:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
