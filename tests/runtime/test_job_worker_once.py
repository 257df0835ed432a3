"""`python -m tideflow.runtime.job_worker --once`: one attempt in a fresh process, as a
Dask worker or a Kubernetes pod runs it (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tideflow.plugins.api import AttemptRequest, SecretEnv, reply_from_json, worker_argv

JOBS = "tideflow.testing.executor_jobs"


def run_once(
    tmp_path: Path, request: AttemptRequest, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    path = tmp_path / "request.json"
    path.write_text(request.to_json(with_secrets=False))
    reply = tmp_path / "reply.json"
    argv = worker_argv(str(path), str(reply), str(tmp_path / "logs"))
    done = subprocess.run(
        argv, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )
    return done, reply


def test_a_secret_the_engine_supplies_is_redacted_from_what_python_prints(
    tmp_path: Path,
) -> None:
    """The value comes from the process's environment (a Kubernetes secretKeyRef),
    not from the request: the runner redacts it from print() and from log records."""
    request = AttemptRequest(
        key="f/leak/1/1",
        flow="f",
        job="leak",
        job_run_id=1,
        attempt=1,
        target=f"{JOBS}:prints_env",
        params={"expect": {"API_TOKEN": "engine-supplied-value"}},
        secret_env={"API_TOKEN": SecretEnv("API_TOKEN")},
    )
    done, reply = run_once(tmp_path, request, {"API_TOKEN": "engine-supplied-value"})
    assert done.returncode == 0, done.stderr
    assert "API_TOKEN: match" in done.stdout
    result = reply_from_json(
        reply.read_text(),
        exit_code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
        logs_text=(tmp_path / "logs").read_text() if (tmp_path / "logs").exists() else "",
    )
    assert result.status == "success"


def test_a_printed_secret_never_reaches_the_output(tmp_path: Path) -> None:
    module = tmp_path / "leaky_job.py"
    module.write_text(
        "import os, sys\n"
        "def leak(ctx):\n"
        "    print('token is', os.environ['API_TOKEN'])\n"
        "    print('again', os.environ['API_TOKEN'], file=sys.stderr)\n"
        "    ctx.logger.info('logged %s', os.environ['API_TOKEN'])\n"
    )
    request = AttemptRequest(
        key="f/leak/1/1",
        flow="f",
        job="leak",
        job_run_id=1,
        attempt=1,
        target="leaky_job:leak",
        secret_env={"API_TOKEN": SecretEnv("API_TOKEN")},
        sys_path=(str(tmp_path),),
    )
    done, _ = run_once(tmp_path, request, {"API_TOKEN": "hunter2-from-the-engine"})
    assert done.returncode == 0, done.stderr
    logs = (tmp_path / "logs").read_text()
    for text in (done.stdout, done.stderr, logs):
        assert "hunter2-from-the-engine" not in text
    assert "token is [secret]" in done.stdout
    assert "again [secret]" in done.stderr
    assert json.loads(logs.splitlines()[0])[2] == "logged [secret]"


def test_a_request_in_an_environment_variable_and_a_termination_message(
    tmp_path: Path,
) -> None:
    request = AttemptRequest(
        key="f/fail/1/1",
        flow="f",
        job="fail",
        job_run_id=1,
        attempt=1,
        target=f"{JOBS}:fails",
        params={"why": "x" * 20_000},
    )
    termination = tmp_path / "termination-log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tideflow.runtime.job_worker",
            "--once",
            "env:TIDEFLOW_ATTEMPT",
            "--termination-log",
            str(termination),
        ],
        env={**os.environ, "TIDEFLOW_ATTEMPT": request.to_json()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    summary = json.loads(termination.read_text())
    assert len(termination.read_bytes()) <= 4096  # what Kubernetes keeps
    kind, message, _, function, _ = summary["error"]
    assert (kind, function) == ("ValueError", f"{JOBS}._raise_value_error")
    assert message.startswith("xxxx")
    # without --logs-file the log records are lines on stderr
    ok = AttemptRequest(
        key="f/ok/1/1", flow="f", job="ok", job_run_id=1, attempt=1, target=f"{JOBS}:succeeds"
    )
    done = subprocess.run(
        [sys.executable, "-m", "tideflow.runtime.job_worker", "--once", "env:TIDEFLOW_ATTEMPT"],
        env={**os.environ, "TIDEFLOW_ATTEMPT": ok.to_json()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "INFO an info record from ok" in done.stderr


def test_a_missing_request_says_so(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tideflow.runtime.job_worker", "--once", "env:NOT_SET_HERE_X"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NOT_SET_HERE_X"},
    )
    assert done.returncode != 0
    assert "no attempt request in $NOT_SET_HERE_X" in done.stderr
    assert "Traceback" not in done.stderr
