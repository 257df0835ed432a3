"""The `kubernetes` scaler, driven through the official `kubernetes` client.

No Kubernetes API server can run on this machine (nor on CI's); the scaler is
tested against `fake_kubernetes.FakeKubernetes` (in this folder), started per
test on a free loopback port. This fake implements the scale subresource's
GET/PATCH (and PUT) as the Kubernetes API reference documents them (an
`autoscaling/v1` Scale whose `spec.replicas` is omitted at zero, `Status` objects
for errors, resourceVersion conflicts), plus GET of the workload for
`status.readyReplicas`. The client reaches it through a kubeconfig written to
`tmp_path` (`server: http://127.0.0.1:PORT` and a bearer token), exactly as it
would reach a cluster.

The contract suite runs as a third party enables it: a `tideflow_scaler_factory`
fixture and a subclass of `ScalerContract`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kubernetes import FakeKubernetes
from tideflow.compiler import compile_source
from tideflow.compiler.ir import ConsumerNode, ScaleRule
from tideflow.plugins.api import (
    BackendClosedError,
    BackendConfigError,
    BackendContext,
    BackendError,
    check_backend_class,
)
from tideflow.plugins.kubernetes_scaler import ATTEMPTS, KubernetesScaler, WorkloadNotFoundError
from tideflow.plugins.manager import load_plugins

from tideflow.testing import ScalerContract, ScalerFactory

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
NAMESPACE = "shop"
PLURAL = {"deployment": "deployments", "statefulset": "statefulsets"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_api() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(user=f"system:serviceaccount:{NAMESPACE}:tideflow") as api:
        yield api


@pytest.fixture
def kubeconfig(tmp_path: Path, fake_api: FakeKubernetes) -> Path:
    return fake_api.write_kubeconfig(tmp_path / "kubeconfig")


def consumer(drain_timeout: float = 30.0) -> ConsumerNode:
    return ConsumerNode(
        name="order_workers",
        consumes="orders",
        group="order-workers",
        run="shop.workers:handle",
        scale=ScaleRule(max=12, backend="kubernetes", drain_timeout=drain_timeout),
    )


ScalerMaker = Callable[..., KubernetesScaler]


@pytest.fixture
def make_scaler(kubeconfig: Path) -> ScalerMaker:
    """A scaler of `shop/order-workers` through the fake's kubeconfig; keyword
    arguments override options (`None` removes one)."""

    def make(*, drain_timeout: float = 30.0, **overrides: Any) -> KubernetesScaler:
        options: dict[str, Any] = {
            "name": "order-workers",
            "namespace": NAMESPACE,
            "kubeconfig": str(kubeconfig),
        }
        options.update(overrides)
        return KubernetesScaler(
            {k: v for k, v in options.items() if v is not None}, consumer(drain_timeout)
        )

    return make


# --- the contract, as a third party enables it ---------------------------------------------


@pytest.fixture(params=["deployment", "statefulset"])
def tideflow_scaler_factory(
    request: pytest.FixtureRequest, fake_api: FakeKubernetes, kubeconfig: Path
) -> ScalerFactory:
    resource = request.param
    fake_api.add_workload(PLURAL[resource], "contract-workers", namespace=NAMESPACE, replicas=0)
    options = {
        "name": "contract-workers",
        "resource": resource,
        "namespace": NAMESPACE,
        "kubeconfig": str(kubeconfig),
    }
    return lambda: KubernetesScaler(options, consumer())


class TestKubernetesScalerContract(ScalerContract):
    pass


# --- scale, current, ready -----------------------------------------------------------------


async def test_scale_patches_spec_replicas_through_the_scale_subresource(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=1)
    async with make_scaler() as scaler:
        await scaler.scale(7)
        assert fake_api.workload("deployments", "order-workers", namespace=NAMESPACE).replicas == 7
        assert await scaler.current() == 7
    (patch,) = fake_api.requests_to("PATCH")
    assert patch.path == f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/order-workers/scale"
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.body == {"spec": {"replicas": 7}}
    assert [r.path for r in fake_api.requests_to("GET")] == [patch.path]


async def test_statefulsets_are_scaled_through_their_own_subresource(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("statefulsets", "order-workers", namespace=NAMESPACE, replicas=2)
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    async with make_scaler(resource="statefulset") as scaler:
        await scaler.scale(5)
        assert await scaler.current() == 5
        assert await scaler.ready() == 5
    assert fake_api.workload("statefulsets", "order-workers", namespace=NAMESPACE).replicas == 5
    assert fake_api.workload("deployments", "order-workers", namespace=NAMESPACE).replicas == 2
    assert all("/statefulsets/order-workers" in r.path for r in fake_api.requests)


async def test_current_reads_zero_when_the_api_omits_spec_replicas(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=3)
    async with make_scaler() as scaler:
        assert await scaler.current() == 3
        await scaler.scale(0)
        assert await scaler.current() == 0
        assert await scaler.ready() == 0  # readyReplicas is omitted too


async def test_current_follows_changes_made_by_someone_else(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    async with make_scaler() as scaler:
        assert await scaler.current() == 2
        fake_api.set_replicas("deployments", "order-workers", 9, namespace=NAMESPACE)
        assert await scaler.current() == 9


async def test_ready_reports_ready_replicas_lagging_behind_the_spec(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=1)
    fake_api.ready_follows_spec = False
    async with make_scaler() as scaler:
        await scaler.scale(4)
        assert await scaler.current() == 4
        assert await scaler.ready() == 1, "pods are starting: spec moved, readiness has not"
        fake_api.set_ready("deployments", "order-workers", 3, namespace=NAMESPACE)
        assert await scaler.ready() == 3
        await scaler.scale(0)
        assert await scaler.current() == 0
        assert await scaler.ready() == 3, "pods are draining"
        fake_api.set_ready("deployments", "order-workers", 0, namespace=NAMESPACE)
        assert await scaler.ready() == 0
    assert fake_api.requests_to("GET", "/deployments/order-workers"), "ready reads the workload"


async def test_scale_to_the_same_count_changes_nothing(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    before = fake_api.workload("deployments", "order-workers", namespace=NAMESPACE)
    async with make_scaler() as scaler:
        await scaler.scale(2)
    after = fake_api.workload("deployments", "order-workers", namespace=NAMESPACE)
    assert (after.replicas, after.resource_version) == (2, before.resource_version)


async def test_refused_counts_send_nothing(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    async with make_scaler() as scaler:
        for wrong in (-1, 2**31, True):
            with pytest.raises(ValueError, match="instances must be between 0 and"):
                await scaler.scale(wrong)
    assert fake_api.requests == []


async def test_aclose_leaves_the_replicas_and_refuses_further_calls(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=0)
    scaler = make_scaler()
    await scaler.scale(3)
    await scaler.aclose()
    assert fake_api.workload("deployments", "order-workers", namespace=NAMESPACE).replicas == 3
    for call in (scaler.current(), scaler.ready(), scaler.scale(1)):
        with pytest.raises(BackendClosedError, match='deployment "order-workers"'):
            await call
    assert len(fake_api.requests) == 1


async def test_calls_run_off_the_event_loop(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    async with make_scaler() as scaler:
        await scaler.current()  # the client is made (kubeconfig read) before the pause
        fake_api.pause()
        try:
            call = asyncio.create_task(scaler.current())
            # this loop runs only if the call does not block the event loop; the fake
            # holds the request until resumed, so the call cannot finish first
            for _ in range(500):
                if fake_api.held:
                    break
                await asyncio.sleep(0.01)
            assert fake_api.held == 1
            assert not call.done()
        finally:
            fake_api.resume()
        assert await call == 2


# --- errors people can act on --------------------------------------------------------------


async def test_a_missing_workload_is_named_with_its_namespace(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    async with make_scaler() as scaler:
        with pytest.raises(WorkloadNotFoundError) as caught:
            await scaler.scale(1)
    assert str(caught.value) == 'deployment "order-workers" not found in namespace "shop"'
    assert len(fake_api.requests_to("PATCH")) == 1, "a 404 is not tried again"


async def test_a_missing_workload_of_the_other_kind_is_pointed_out(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("statefulsets", "order-workers", namespace=NAMESPACE)
    async with make_scaler() as scaler:
        with pytest.raises(WorkloadNotFoundError) as caught:
            await scaler.current()
    assert str(caught.value) == (
        'deployment "order-workers" not found in namespace "shop"; a statefulset of that '
        "name exists there: set `resource = statefulset` in the scale block"
    )


@pytest.mark.parametrize(
    ("denied", "call", "verb", "resource"),
    [
        (("patch", "deployments/scale"), "scale", "patch", "deployments/scale"),
        (("get", "deployments/scale"), "current", "get", "deployments/scale"),
        (("get", "deployments"), "ready", "get", "deployments"),
    ],
)
async def test_forbidden_names_the_verb_and_resource_the_role_must_grant(
    fake_api: FakeKubernetes,
    make_scaler: ScalerMaker,
    denied: tuple[str, str],
    call: str,
    verb: str,
    resource: str,
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE)
    fake_api.deny(*denied)
    async with make_scaler() as scaler:
        with pytest.raises(BackendError) as caught:
            await (scaler.scale(2) if call == "scale" else getattr(scaler, call)())
    message = str(caught.value)
    assert message.startswith(
        f'forbidden to {verb} {resource} in namespace "shop": the orchestrator\'s Role must '
        'grant verbs ["get", "patch"] on "deployments/scale" and ["get"] on "deployments" '
        'in API group "apps" (see docs/kubernetes.md); the server said: '
    )
    assert f'cannot {verb} resource "{resource}" in API group "apps"' in message
    assert len(fake_api.requests) == 1, "a 403 is not tried again"


async def test_refused_credentials_are_reported_without_the_token(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, tmp_path: Path
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE)
    wrong_token = "not-the-token-" + "x" * 20
    wrong = fake_api.write_kubeconfig(tmp_path / "wrong", token=wrong_token)
    async with make_scaler(kubeconfig=str(wrong)) as scaler:
        with pytest.raises(BackendError) as caught:
            await scaler.current()
    message = str(caught.value)
    assert message == (
        f"the Kubernetes API at {fake_api.url} refused the credentials of kubeconfig {wrong} "
        "(401 Unauthorized): check that its token or client certificate is valid and has "
        "not expired"
    )
    assert wrong_token not in message
    assert fake_api.token not in message
    assert fake_api.requests[0].status == 401


async def test_conflicts_are_tried_again(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=1)
    fake_api.fail_next(409, count=ATTEMPTS - 1, method="PATCH")
    async with make_scaler() as scaler:
        await scaler.scale(6)
    assert [r.status for r in fake_api.requests_to("PATCH")] == [409] * (ATTEMPTS - 1) + [200]
    assert fake_api.workload("deployments", "order-workers", namespace=NAMESPACE).replicas == 6


async def test_conflicts_give_up_after_the_last_attempt(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=1)
    fake_api.fail_next(409, count=ATTEMPTS + 5, method="PATCH")
    async with make_scaler() as scaler:
        with pytest.raises(BackendError) as caught:
            await scaler.scale(6)
    assert str(caught.value) == (
        'conflicting updates of deployment "order-workers" in namespace "shop": still 409 '
        f"Conflict after {ATTEMPTS} attempts: injected failure (409) by the fake"
    )
    assert len(fake_api.requests_to("PATCH")) == ATTEMPTS
    assert fake_api.workload("deployments", "order-workers", namespace=NAMESPACE).replicas == 1


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_server_errors_are_tried_again(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, status: int
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=4)
    fake_api.fail_next(status, count=2, method="GET")
    async with make_scaler() as scaler:
        assert await scaler.current() == 4
    assert [r.status for r in fake_api.requests_to("GET")] == [status, status, 200]


async def test_server_errors_give_up_with_the_answer(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE)
    fake_api.fail_next(503, count=ATTEMPTS)
    async with make_scaler() as scaler:
        with pytest.raises(BackendError) as caught:
            await scaler.current()
    assert str(caught.value) == (
        f"the Kubernetes API at {fake_api.url} answered 503 Service Unavailable {ATTEMPTS} "
        'times to get deployments/scale of deployment "order-workers" in namespace "shop": '
        "injected failure (503) by the fake"
    )
    assert len(fake_api.requests) == ATTEMPTS


async def test_an_unreachable_api_is_tried_again_then_reported(
    make_scaler: ScalerMaker, fake_api: FakeKubernetes, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    document = json.loads(fake_api.write_kubeconfig(tmp_path / "kc").read_text())
    document["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    (tmp_path / "kc").write_text(json.dumps(document))
    async with make_scaler(kubeconfig=str(tmp_path / "kc")) as scaler:
        with pytest.raises(BackendError) as caught:
            await scaler.scale(1)
    message = str(caught.value)
    assert message.startswith(
        f"cannot reach the Kubernetes API at http://127.0.0.1:{port} after {ATTEMPTS} attempts: "
    )
    assert "refused" in message.lower()


async def test_drain_timeout_longer_than_the_grace_period_is_warned_about_once(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.add_workload(
        "deployments", "order-workers", namespace=NAMESPACE, termination_grace_period=30
    )
    with caplog.at_level(logging.WARNING, logger="tideflow.plugins.kubernetes_scaler"):
        async with make_scaler(drain_timeout=45.5) as scaler:
            await scaler.ready()
            await scaler.ready()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        'deployment "order-workers" in namespace "shop": terminationGracePeriodSeconds is 30s, '
        'shorter than drain_timeout (45.5s) of consumer "order_workers": pods are killed '
        "before they finish draining; set it to at least 46"
    ]


async def test_a_grace_period_covering_the_drain_timeout_is_not_warned_about(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, caplog: pytest.LogCaptureFixture
) -> None:
    fake_api.add_workload(
        "deployments", "order-workers", namespace=NAMESPACE, termination_grace_period=60
    )
    with caplog.at_level(logging.WARNING, logger="tideflow.plugins.kubernetes_scaler"):
        async with make_scaler(drain_timeout=60.0) as scaler:
            await scaler.ready()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# --- configuration -------------------------------------------------------------------------


async def test_a_relative_kubeconfig_is_read_from_the_flow_files_directory(
    fake_api: FakeKubernetes, tmp_path: Path
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=3)
    flows = tmp_path / "flows"
    (flows / "k8s").mkdir(parents=True)
    fake_api.write_kubeconfig(flows / "k8s" / "config")
    scaler = KubernetesScaler(
        {"name": "order-workers", "namespace": NAMESPACE, "kubeconfig": "k8s/config"},
        consumer(),
        context=BackendContext("order_workers", flows / "orders.flow"),
    )
    async with scaler:
        assert await scaler.current() == 3


async def test_the_context_option_picks_the_kubeconfig_context(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, tmp_path: Path
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=5)
    document = json.loads(fake_api.write_kubeconfig(tmp_path / "kc", context="prod").read_text())
    # the current context uses a token the server refuses
    document["users"].append({"name": "stale", "user": {"token": "stale-token"}})
    document["contexts"].append({"name": "old", "context": {"cluster": "fake", "user": "stale"}})
    document["current-context"] = "old"
    (tmp_path / "kc").write_text(json.dumps(document))
    async with make_scaler(kubeconfig=str(tmp_path / "kc"), context="prod") as scaler:
        assert await scaler.current() == 5
    async with make_scaler(kubeconfig=str(tmp_path / "kc")) as scaler:
        with pytest.raises(BackendError, match=r"\(401 Unauthorized\)"):
            await scaler.current()


async def test_an_unknown_context_is_a_configuration_error(make_scaler: ScalerMaker) -> None:
    async with make_scaler(context="staging") as scaler:
        with pytest.raises(BackendConfigError) as caught:
            await scaler.current()
    assert str(caught.value).startswith("cannot load the Kubernetes configuration from kubeconfig ")
    assert '(context "staging")' in str(caught.value)


async def test_a_missing_kubeconfig_file_is_a_configuration_error(
    make_scaler: ScalerMaker, tmp_path: Path
) -> None:
    async with make_scaler(kubeconfig=str(tmp_path / "nowhere")) as scaler:
        with pytest.raises(BackendConfigError) as caught:
            await scaler.scale(1)
    assert str(caught.value) == (
        f"kubeconfig file {tmp_path / 'nowhere'} (option `kubeconfig`) does not exist"
    )


async def test_without_the_option_kubeconfig_from_the_environment_is_used(
    fake_api: FakeKubernetes,
    make_scaler: ScalerMaker,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=2)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    async with make_scaler(kubeconfig=None) as scaler:
        assert await scaler.current() == 2


async def test_without_any_configuration_the_error_says_where_it_looked(
    make_scaler: ScalerMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    async with make_scaler(kubeconfig=None) as scaler:
        with pytest.raises(BackendConfigError) as caught:
            await scaler.current()
    assert str(caught.value) == (
        "no Kubernetes configuration: not running in a pod (KUBERNETES_SERVICE_HOST is unset) "
        f"and no kubeconfig at {tmp_path / 'absent'}; set `kubeconfig` in the scale block"
    )


async def test_in_a_pod_the_service_account_is_used(
    make_scaler: ScalerMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kubernetes.config.incluster_config as incluster

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    async with make_scaler(kubeconfig=None) as scaler:
        with pytest.raises(BackendConfigError) as caught:
            await scaler.current()
    assert str(caught.value) == (
        "cannot load the Kubernetes configuration from the pod's service account "
        "(in-cluster configuration): Service token file does not exist."
    )


async def test_a_context_outside_a_pod_means_a_kubeconfig(
    fake_api: FakeKubernetes,
    make_scaler: ScalerMaker,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_api.add_workload("deployments", "order-workers", namespace=NAMESPACE, replicas=1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    async with make_scaler(kubeconfig=None, context="fake") as scaler:
        assert await scaler.current() == 1


def test_constructing_touches_no_file_and_no_network(tmp_path: Path) -> None:
    scaler = KubernetesScaler(
        {"name": "order-workers", "kubeconfig": str(tmp_path / "not-yet")}, consumer()
    )
    assert scaler.namespace == "default"
    assert scaler.workload == 'deployment "order-workers" in namespace "default"'
    assert scaler.kubeconfig == tmp_path / "not-yet"


def test_options_are_checked_against_the_schema() -> None:
    with pytest.raises(BackendConfigError, match="missing required option `name`"):
        KubernetesScaler({}, consumer())
    with pytest.raises(BackendConfigError, match="did you mean `namespace`"):
        KubernetesScaler({"name": "w", "namespaces": "shop"}, consumer())


def test_the_class_declares_what_a_backend_must() -> None:
    assert check_backend_class(KubernetesScaler) == []
    assert KubernetesScaler.name == "kubernetes"


def test_the_module_registers_the_scaler_through_its_hook() -> None:
    plugins = load_plugins(
        default_plugins=("tideflow.plugins.kubernetes_scaler",), entry_points=(), environ={}
    )
    assert plugins.scaler_class("kubernetes") is KubernetesScaler
    assert plugins.catalog.get("scaler", "kubernetes") is not None


# --- the fake, against the reference -------------------------------------------------------


def test_the_fakes_scale_object_has_the_reference_shape(fake_api: FakeKubernetes) -> None:
    import urllib.request

    state = fake_api.add_workload("deployments", "web", namespace=NAMESPACE, replicas=0)
    request = urllib.request.Request(
        f"{fake_api.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/web/scale",
        headers={"Authorization": f"Bearer {fake_api.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        scale = json.load(response)
    assert scale == {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": "web",
            "namespace": NAMESPACE,
            "uid": state.uid,
            "resourceVersion": str(state.resource_version),
            "creationTimestamp": state.created,
        },
        "spec": {},
        "status": {"replicas": 0, "selector": "app=web"},
    }


@pytest.mark.parametrize(
    ("content_type", "body", "status", "message"),
    [
        ("application/merge-patch+json", {"spec": {"replicas": 4}}, 200, None),
        ("application/merge-patch+json", {"spec": {"replicas": None}}, 200, None),
        (
            "application/strategic-merge-patch+json",
            {"spec": {"replicas": -2}},
            422,
            'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -2: '
            "must be greater than or equal to 0",
        ),
        (
            "application/merge-patch+json",
            {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 4}},
            409,
            'Operation cannot be fulfilled on deployments.apps "web": the object has been '
            "modified; please apply your changes to the latest version and try again",
        ),
        ("application/json-patch+json", [{"op": "replace"}], 415, None),
    ],
)
def test_the_fake_applies_merge_patches_as_the_api_server_does(
    fake_api: FakeKubernetes,
    content_type: str,
    body: Any,
    status: int,
    message: str | None,
) -> None:
    import urllib.error
    import urllib.request

    fake_api.add_workload("deployments", "web", namespace=NAMESPACE, replicas=1)
    request = urllib.request.Request(
        f"{fake_api.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/web/scale",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {fake_api.token}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer, code = json.load(response), response.status
    except urllib.error.HTTPError as error:
        answer, code = json.load(error), error.code
        error.close()
    assert code == status
    replicas = fake_api.workload("deployments", "web", namespace=NAMESPACE).replicas
    if status == 200:
        expected = (body["spec"]["replicas"]) or 0
        assert replicas == expected
        assert answer["spec"] == ({"replicas": expected} if expected else {})
    else:
        assert replicas == 1
        assert (answer["kind"], answer["code"]) == ("Status", status)
        if message is not None:
            assert answer["message"] == message


async def test_the_fake_refuses_a_put_with_a_stale_resource_version(
    fake_api: FakeKubernetes, kubeconfig: Path
) -> None:
    from kubernetes import client, config

    fake_api.add_workload("deployments", "web", namespace=NAMESPACE, replicas=1)
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    with client.ApiClient(configuration) as api_client:
        apps = client.AppsV1Api(api_client)
        scale = apps.read_namespaced_deployment_scale("web", NAMESPACE)
        fake_api.set_replicas("deployments", "web", 2, namespace=NAMESPACE)  # someone else
        assert scale.spec is not None
        scale.spec.replicas = 5
        with pytest.raises(client.ApiException) as caught:
            apps.replace_namespaced_deployment_scale("web", NAMESPACE, scale)
        assert caught.value.status == 409
        assert json.loads(caught.value.body or "")["message"] == (
            'Operation cannot be fulfilled on deployments.apps "web": the object has been '
            "modified; please apply your changes to the latest version and try again"
        )
        fresh = apps.read_namespaced_deployment_scale("web", NAMESPACE)
        assert fresh.spec is not None
        fresh.spec.replicas = 5
        replaced = apps.replace_namespaced_deployment_scale("web", NAMESPACE, fresh)
        assert replaced.spec is not None
        assert replaced.spec.replicas == 5
    assert fake_api.workload("deployments", "web", namespace=NAMESPACE).replicas == 5


# --- docs/kubernetes.md --------------------------------------------------------------------


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.S | re.M)


def doc_manifests() -> list[dict[str, Any]]:
    return [doc for block in doc_blocks("yaml") for doc in yaml.safe_load_all(block) if doc]


def manifest(kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in doc_manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def test_the_docs_yaml_parses_into_the_objects_the_page_describes() -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in doc_manifests())
    assert kinds == [
        ("Deployment", "order-workers"),
        ("Deployment", "tideflow"),
        ("Job", "shop-train-412-1-1aea42d7"),  # the executor's (tests/executors)
        ("Role", "tideflow-executor"),
        ("Role", "tideflow-scaler"),
        ("RoleBinding", "tideflow-executor"),
        ("RoleBinding", "tideflow-scaler"),
        ("ServiceAccount", "tideflow"),
    ]
    binding = manifest("RoleBinding", "tideflow-scaler")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "tideflow-scaler",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tideflow", "namespace": "shop"}
    ]
    orchestrator = manifest("Deployment", "tideflow")["spec"]["template"]["spec"]
    assert orchestrator["serviceAccountName"] == "tideflow"


def test_the_docs_flow_and_worker_deployment_agree() -> None:
    result = compile_source(doc_blocks("flow")[0], "orders.flow")
    assert result.diagnostics == ()
    assert result.ir is not None
    (name,) = result.ir.consumers
    rule = result.ir.consumers[name].scale
    assert rule is not None
    assert rule.backend == "kubernetes"
    workers = manifest("Deployment", rule.options["name"])
    assert workers["metadata"]["namespace"] == rule.options["namespace"]
    assert "replicas" not in workers["spec"], "tideflow owns the replica count"
    pod = workers["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= rule.drain_timeout
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    assert container["args"] == ["tideflow", "worker", f"{mount['mountPath']}/orders.flow", name]
    env = {e["name"]: e for e in container["env"]}
    assert env["TIDEFLOW_STATE"]["valueFrom"]["secretKeyRef"]["key"] == "TIDEFLOW_STATE"
    # the worker resolves the flow's secret() and env() values itself
    assert {"KAFKA_PASSWORD", "KAFKA_BOOTSTRAP"} <= set(env)


@pytest.mark.parametrize("resource", ["deployment", "statefulset"])
async def test_the_docs_role_is_exactly_enough_for_the_scaler(
    fake_api: FakeKubernetes, make_scaler: ScalerMaker, resource: str
) -> None:
    rules = manifest("Role", "tideflow-scaler")["rules"]
    grants = {
        (verb, name)
        for rule in rules
        if rule["apiGroups"] == ["apps"]
        for name in rule["resources"]
        for verb in rule["verbs"]
    }
    fake_api.allow_only(grants)
    fake_api.add_workload(PLURAL[resource], "order-workers", namespace=NAMESPACE, replicas=0)
    async with make_scaler(resource=resource) as scaler:
        await scaler.scale(3)
        assert await scaler.current() == 3
        assert await scaler.ready() == 3
    used = {(r.method, r.path.rsplit("/", 1)[-1]) for r in fake_api.requests}
    assert all(r.status == 200 for r in fake_api.requests)
    assert used == {("PATCH", "scale"), ("GET", "scale"), ("GET", "order-workers")}
    # and nothing more than the scaler uses
    assert grants == {
        (verb, plural + suffix)
        for plural in PLURAL.values()
        for verb, suffix in (("get", "/scale"), ("patch", "/scale"), ("get", ""))
    }
