"""The contract suite itself, run the way a third party runs it (a separate pytest
process that loads `tideflow.testing` through its `pytest11` entry point): it
passes the in-memory reference backends and catches each mutant."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import reference_backends as rb

from tideflow.testing import contract

HERE = Path(__file__).parent

CONFTEST = """
import pytest

@pytest.fixture
def tideflow_quiet_period():
    return 0.1

@pytest.fixture
def tideflow_contract_timeout():
    return 5.0
"""

MODULE_HEAD = """
import uuid

import pytest
import reference_backends as rb
from tideflow.testing import BrokerContract, ScalerContract


def brokers(cls):
    namespace = uuid.uuid4().hex
    return lambda topics: cls({"namespace": namespace}, topics)


class TestUnconfigured(BrokerContract):
    pass
"""

BROKER_CLASS = """

class Test{name}(BrokerContract):
{disabled}
    @pytest.fixture
    def tideflow_broker_factory(self):
        return brokers(rb.{name})
"""

SCALER_CLASS = """

class Test{name}(ScalerContract):
{disabled}
    @pytest.fixture
    def tideflow_scaler_factory(self):
        return lambda: rb.{name}({{}}, rb.consumer_record())
"""

MUTANT_TIMEOUT = """
    @pytest.fixture
    def tideflow_contract_timeout(self):
        return 0.5  # what a mutant fails to do never happens: do not wait long for it
"""


@dataclass(frozen=True)
class Outcome:
    passed: frozenset[str]
    failed: Mapping[str, str]  # test name -> failure message


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Outcome]:
    """Runs the suite once over the reference backends and every mutant; outcomes
    by test class name."""
    root = tmp_path_factory.mktemp("contract")
    classes = [
        BROKER_CLASS.format(name="MemoryBroker", disabled=""),
        SCALER_CLASS.format(name="MemoryScaler", disabled=""),
    ]
    for template, base, mutants in (
        (BROKER_CLASS, contract.BrokerContract, rb.BROKER_MUTANTS),
        (SCALER_CLASS, contract.ScalerContract, rb.SCALER_MUTANTS),
    ):
        for cls, catching_test in mutants.items():
            # a mutant runs only the test expected to catch it; the others would
            # pass, or wait for nothing
            disabled = "".join(
                f"    {name} = None\n" for name in contract_tests(base) - {catching_test}
            )
            classes.append(template.format(name=cls.__name__, disabled=disabled) + MUTANT_TIMEOUT)
    module = MODULE_HEAD + "".join(classes)
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_generated.py").write_text(module)
    report = root / "report.xml"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-W",
            "error",
            "-p",
            "no:cacheprovider",
            # a third party's project like any other: the asyncio plugin that pytest-lsp
            # brings into this environment would refuse to start under -W error there
            # (its fixture loop scope is configured in our pyproject, not theirs)
            "-p",
            "no:asyncio",
            f"--junitxml={report}",
            "--rootdir",
            str(root),
            str(root),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.exists(), run.stdout + run.stderr
    by_class: dict[str, tuple[set[str], dict[str, str]]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        passed, failed = by_class.setdefault(cls, (set(), {}))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None and case.find("skipped") is None:
            passed.add(case.get("name", ""))
        elif problem is not None:
            failed[case.get("name", "")] = problem.get("message", "") + (problem.text or "")
    return {cls: Outcome(frozenset(passed), failed) for cls, (passed, failed) in by_class.items()}


def contract_tests(base: type) -> set[str]:
    return {name for name in dir(base) if name.startswith("test_")}


def test_reference_broker_passes_every_broker_test(outcomes: Mapping[str, Outcome]) -> None:
    outcome = outcomes["TestMemoryBroker"]
    assert dict(outcome.failed) == {}
    assert outcome.passed == contract_tests(contract.BrokerContract)


def test_reference_scaler_passes_every_scaler_test(outcomes: Mapping[str, Outcome]) -> None:
    outcome = outcomes["TestMemoryScaler"]
    assert dict(outcome.failed) == {}
    assert outcome.passed == contract_tests(contract.ScalerContract)


@pytest.mark.parametrize(
    ("mutant", "caught_by"),
    [(cls.__name__, test) for cls, test in {**rb.BROKER_MUTANTS, **rb.SCALER_MUTANTS}.items()],
)
def test_contract_catches_mutant(
    outcomes: Mapping[str, Outcome], mutant: str, caught_by: str
) -> None:
    outcome = outcomes[f"Test{mutant}"]
    assert caught_by in outcome.failed, f"{mutant} passed {caught_by}"


def test_missing_factory_fixture_is_explained(outcomes: Mapping[str, Outcome]) -> None:
    outcome = outcomes["TestUnconfigured"]
    assert outcome.passed == frozenset()
    message = outcome.failed["test_publish_then_consume_round_trip"]
    assert "needs a `tideflow_broker_factory` fixture" in message
