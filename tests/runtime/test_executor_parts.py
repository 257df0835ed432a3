"""The executor's pure parts: admission of attempts, resolving and redacting secrets."""

from __future__ import annotations

import asyncio

import pytest
from tideflow.compiler.ir import EnvRef, SecretRef
from tideflow.runtime.resources import Admission, Capacity, Demand, machine_capacity
from tideflow.runtime.secrets import Redactor, UnresolvedValueError, resolve, secret_values

MACHINE = Capacity(cpu=4.0, memory=8 << 30)


def test_the_machines_capacity_is_read_from_the_os() -> None:
    import os

    capacity = machine_capacity()
    assert capacity.cpu == os.cpu_count()
    assert capacity.memory == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 0


@pytest.mark.anyio
async def test_waiting_requests_are_admitted_in_order_as_room_frees() -> None:
    admission = Admission(concurrency=10, pools={"db": 2}, capacity=MACHINE)
    one = Demand(pool="db")
    assert admission.try_acquire(one) and admission.try_acquire(one)
    assert not admission.try_acquire(one)
    second, third = admission.wait(one), admission.wait(one)
    admission.release(one)
    assert second.done() and second.result() is True and not third.done()
    admission.release(one)
    assert third.result() is True
    assert admission.pool_used["db"] == 2 and admission.waiting == 0


@pytest.mark.anyio
async def test_a_small_request_passes_a_big_one_that_does_not_fit() -> None:
    admission = Admission(concurrency=10, pools={"db": 3}, capacity=MACHINE)
    assert admission.try_acquire(Demand(pool="db", slots=2))
    big = admission.wait(Demand(pool="db", slots=3))
    assert admission.try_acquire(Demand(pool="db", slots=1))  # fits now: not held up
    admission.release(Demand(pool="db", slots=1))
    assert not big.done()
    admission.release(Demand(pool="db", slots=2))
    assert big.result() is True


@pytest.mark.anyio
async def test_cpu_memory_and_concurrency_all_bound_admission() -> None:
    admission = Admission(concurrency=3, pools={}, capacity=MACHINE)
    assert admission.try_acquire(Demand(cpu=0.1)) and admission.try_acquire(Demand(cpu=0.2))
    assert not admission.try_acquire(Demand(cpu=3.8))  # 0.3 + 3.8 > 4, exactly
    assert admission.try_acquire(Demand(cpu=3.7))  # 0.1 + 0.2 + 3.7 == 4: fits
    assert not admission.try_acquire(Demand())  # three running: the concurrency limit
    for cpu in (0.1, 0.2, 3.7):
        admission.release(Demand(cpu=cpu))
    assert admission.cpu_used == 0 and admission.running == 0
    assert admission.try_acquire(Demand(memory=6 << 30))
    assert not admission.try_acquire(Demand(memory=3 << 30))


@pytest.mark.anyio
async def test_a_withdrawn_request_is_never_granted() -> None:
    admission = Admission(concurrency=1, pools={}, capacity=MACHINE)
    assert admission.try_acquire(Demand())
    withdrawn, kept = admission.wait(Demand()), admission.wait(Demand())
    admission.withdraw(withdrawn)
    assert withdrawn.result() is False
    admission.release(Demand())
    assert kept.result() is True and admission.running == 1
    await asyncio.sleep(0)


def test_requests_that_can_never_fit_are_explained() -> None:
    admission = Admission(concurrency=4, pools={"db": 2}, capacity=Capacity(2.0, 1 << 30))
    assert admission.impossible(Demand(pool="db", slots=2, cpu=2.0, memory=1 << 30)) is None
    assert admission.impossible(Demand(pool="nope")) == 'pool "nope" does not exist'
    assert admission.impossible(Demand(cpu=2.5)) == (
        "the job needs 2.5 CPUs and this machine has 2"
    )
    assert admission.impossible(Demand(memory=1536 << 20)) == (
        "the job needs 1.5GiB of memory and this machine has 1GiB"
    )


def test_env_and_secret_values_are_resolved_and_secrets_remembered() -> None:
    environ = {"DB_URL": "postgres://u:pw@h/db", "REGION": "eu"}
    resolved = resolve(
        {"DB": SecretRef("DB_URL"), "REGION": EnvRef("REGION"), "MODE": EnvRef("MODE", "dry")},
        ("run", SecretRef("DB_URL")),
        where='job "load"',
        environ=environ,
    )
    assert resolved.env == {"DB": "postgres://u:pw@h/db", "REGION": "eu", "MODE": "dry"}
    assert resolved.argv == ("run", "postgres://u:pw@h/db")
    assert resolved.secrets == {"postgres://u:pw@h/db"}


def test_a_missing_variable_names_itself_and_where_it_is_read() -> None:
    with pytest.raises(UnresolvedValueError) as caught:
        resolve({"X": EnvRef("NOT_SET")}, where='job "load"', environ={})
    assert str(caught.value) == (
        "environment variable `NOT_SET` is not set "
        '(read by env("NOT_SET") in the env of job "load")'
    )


def test_redaction_replaces_every_secret_longest_first() -> None:
    redact = Redactor(["abc", "abcdef", ""])
    assert redact("x abcdef y abc z") == "x [secret] y [secret] z"
    assert not Redactor([]) and Redactor([]).__call__("abc") == "abc"


def test_secret_values_are_found_inside_nested_options() -> None:
    options = {"auth": {"password": SecretRef("PW")}, "hosts": [SecretRef("H"), "plain"]}
    assert secret_values([options], {"PW": "pw1", "H": "h1"}) == {"pw1", "h1"}
    assert secret_values([options], {}) == set()
