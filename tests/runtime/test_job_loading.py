"""A job whose `run` cannot be called says why as clearly as a consumer's handler does,
instead of failing "in importlib._bootstrap._find_and_load_unlocked"."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tideflow.runtime.job_worker import JobFunctionError, load_job, run_attempt

SOURCE = """
def ok(ctx):
    return "ran"

def two(ctx, day):
    pass

def broken():
    return {}["missing"]

VALUE = 3
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "jl_jobs.py").write_text(SOURCE)
    (tmp_path / "jl_needs.py").write_text("import jl_not_installed_anywhere\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path)])
    yield tmp_path
    for name in ("jl_jobs", "jl_needs"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("jl_jobz:ok", "cannot import `jl_jobz:ok`: there is no module `jl_jobz`"),
        ("jl_jobs.sub:ok", "there is no module `jl_jobs.sub`"),
    ],
)
def test_a_missing_module_says_which(folder: Path, target: str, message: str) -> None:
    with pytest.raises(ModuleNotFoundError) as raised:
        load_job(target)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("jl_jobs:okk", "cannot load `jl_jobs:okk`: `jl_jobs` has no `okk`"),
        ("jl_jobs:VALUE", "`jl_jobs:VALUE` is not a function"),
        ("jl_jobs.ok", "expected `module:function`, got `jl_jobs.ok`"),
        ("jl_jobs:two", "`jl_jobs:two` must take one argument, `ctx` (or none); it takes"),
    ],
)
def test_a_job_function_that_cannot_be_called_says_why(
    folder: Path, target: str, message: str
) -> None:
    with pytest.raises(JobFunctionError) as raised:
        load_job(target)
    assert message in str(raised.value)


def test_a_module_whose_own_import_fails_keeps_its_error(folder: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match="jl_not_installed_anywhere"):
        load_job("jl_needs:anything")


def attempt(target: str) -> dict[str, Any]:
    request = {
        "target": target,
        "run_id": 1,
        "flow": "f",
        "job": "j",
        "attempt": 1,
        "scheduled_at": None,
        "params": {},
        "env": {},
        "publishes": (),
        "publisher": None,
        "sys_path": (),
    }
    return run_attempt(request, logging.getLogger("tideflow.job.test"), _NoPublishers())


class _NoPublishers:
    def getter(self, factory_path: str, specs: Any) -> Any:  # pragma: no cover - unused
        raise AssertionError("no publishing here")


def test_the_stored_error_names_the_problem_not_importlib(folder: Path) -> None:
    reply = attempt("jl_jobz:ok")
    assert reply["ok"] is False
    kind, message, _text, function, _location = reply["error"]
    assert kind == "ModuleNotFoundError"
    assert "there is no module `jl_jobz`" in message
    assert function is None or "importlib" not in function

    wrong = attempt("jl_jobs:two")
    assert wrong["error"][0].endswith("JobFunctionError")
    assert "must take one argument, `ctx` (or none); it takes `(ctx, day)`" in wrong["error"][1]


def test_the_job_s_own_errors_still_name_its_function(folder: Path) -> None:
    reply = attempt("jl_jobs:broken")
    kind, _message, _text, function, _location = reply["error"]
    assert kind == "KeyError"
    assert function == "jl_jobs.broken"
    assert attempt("jl_jobs:ok")["ok"] is True
