"""The batch/v1 Job that runs one attempt: its name, labels and manifest.

The Job's one container runs tideflow's one-shot runner (`python -m
tideflow.runtime.job_worker --once env:TIDEFLOW_ATTEMPT --termination-log
/dev/termination-log`) with the request in the environment; see
docs/kubernetes.md for the manifest in full."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from tideflow.plugins.api import AttemptRequest, AttemptResources, BackendError
from tideflow.plugins.api.executors import WORKER_MODULE

__all__ = [
    "CONTAINER",
    "GPU_RESOURCE",
    "JOB_NAME_LABEL",
    "KEY_ANNOTATION",
    "LABEL_PREFIX",
    "MANAGED_BY",
    "MANAGED_BY_LABEL",
    "NAME_LIMIT",
    "REQUEST_ENV",
    "TERMINATION_LOG",
    "attempt_labels",
    "cpu_quantity",
    "job_manifest",
    "job_name",
    "label_value",
    "memory_quantity",
    "resource_requirements",
]

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "tideflow"
LABEL_PREFIX: Final = "tideflow.dev/"
KEY_ANNOTATION: Final = "tideflow.dev/key"
#: the container that runs the attempt
CONTAINER: Final = "attempt"
#: the environment variable holding the attempt's request (JSON, no secret values)
REQUEST_ENV: Final = "TIDEFLOW_ATTEMPT"
TERMINATION_LOG: Final = "/dev/termination-log"
GPU_RESOURCE: Final = "nvidia.com/gpu"
#: Job names stay short enough for the pods' names (the Job's and 6 more) and the
#: `job-name` label (63 at most), as kubectl keeps CronJob names to 52
NAME_LIMIT: Final = 52
#: the label the Job controller gives a Job's pods (kept beside its newer
#: `batch.kubernetes.io/job-name`, which clusters before 1.27 lack)
JOB_NAME_LABEL: Final = "job-name"


def job_name(request: AttemptRequest) -> str:
    """A DNS-safe name unique to the attempt: `flow-job-run-attempt` (the flow and
    job names cut to fit) and 8 hex digits of the request's hash. The same request
    gives the same name, so a create tried again finds its own Job."""
    digest = hashlib.sha256(request.to_json(with_secrets=False).encode()).hexdigest()[:8]
    tail = f"-{request.job_run_id}-{request.attempt}-{digest}"
    head = re.sub(r"[^a-z0-9]+", "-", f"{request.flow}-{request.job}".lower()).strip("-")
    head = head[: NAME_LIMIT - len(tail)].rstrip("-") or "attempt"
    return f"{head}{tail}"


def label_value(text: str) -> str:
    """`text` as a label value: at most 63 of [A-Za-z0-9._-], alphanumeric at the ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return value.strip("-._")


def attempt_labels(request: AttemptRequest) -> dict[str, str]:
    """The Job's and its pod's labels: the request's own (`tideflow.dev/` before each
    key), then flow, job, run and attempt, and the managed-by label `attempts()`
    lists by."""
    labels = {
        f"{LABEL_PREFIX}{key}": label_value(str(value))
        for key, value in request.labels.items()
        if re.fullmatch(r"[a-z0-9]([a-z0-9._-]{0,40}[a-z0-9])?", key)
    }
    labels.update(
        {
            f"{LABEL_PREFIX}flow": label_value(request.flow),
            f"{LABEL_PREFIX}job": label_value(request.job),
            f"{LABEL_PREFIX}run": str(request.job_run_id),
            f"{LABEL_PREFIX}attempt": str(request.attempt),
            MANAGED_BY_LABEL: MANAGED_BY,
        }
    )
    return labels


def cpu_quantity(cores: float) -> str:
    """Cores as a Kubernetes quantity: "2", or millicores ("500m")."""
    if float(cores).is_integer():
        return str(int(cores))
    return f"{max(1, round(cores * 1000))}m"


def memory_quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: "16Gi", "512Mi", or the plain number."""
    for unit, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def resource_requirements(resources: AttemptResources) -> dict[str, dict[str, str]]:
    """Requests and limits, equal (the pod's QoS class is Guaranteed when all are set)."""
    amounts: dict[str, str] = {}
    if resources.cpu is not None:
        amounts["cpu"] = cpu_quantity(resources.cpu)
    if resources.memory is not None:
        amounts["memory"] = memory_quantity(int(resources.memory))
    if resources.gpu:
        amounts[GPU_RESOURCE] = str(int(resources.gpu))
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def job_manifest(request: AttemptRequest, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The batch/v1 Job that runs `request`, given the executor's `options` (with
    their defaults). Raises `BackendError` for a secret with no `secret_name`."""
    env: list[dict[str, Any]] = [
        {"name": var, "value": value} for var, value in request.env.items()
    ]
    secret_name = options.get("secret_name")
    if request.secret_env and not secret_name:
        names = ", ".join(sorted(f'secret("{s.name}")' for s in request.secret_env.values()))
        raise BackendError(
            f'job "{request.job}" reads {names}, but the kubernetes executor has no '
            "`secret_name`: set it to the Secret that holds them (one key per secret name)"
        )
    env.extend(
        {
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": secret.name}},
        }
        for var, secret in request.secret_env.items()
    )
    env.append({"name": REQUEST_ENV, "value": request.to_json(with_secrets=False)})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options["image"],
        "command": [
            options.get("python") or "python",
            "-m",
            WORKER_MODULE,
            "--once",
            f"env:{REQUEST_ENV}",
            "--termination-log",
            TERMINATION_LOG,
        ],
        "env": env,
        "terminationMessagePath": TERMINATION_LOG,
        # the runner's summary; without one (killed before writing it), the log's tail
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if options.get("image_pull_policy"):
        container["imagePullPolicy"] = options["image_pull_policy"]
    requirements = resource_requirements(request.resources)
    if requirements:
        container["resources"] = requirements
    labels = attempt_labels(request)
    annotations = {KEY_ANNOTATION: request.key}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": math.ceil(float(options.get("grace_period") or 30.0)),
        "containers": [container],
    }
    if options.get("service_account"):
        pod_spec["serviceAccountName"] = options["service_account"]
    if options.get("node_selector"):
        pod_spec["nodeSelector"] = dict(options["node_selector"])
    if options.get("tolerations"):
        pod_spec["tolerations"] = [dict(t) for t in options["tolerations"]]
    spec: dict[str, Any] = {
        # tideflow decides about retries: Kubernetes never starts a second pod
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
            "spec": pod_spec,
        },
    }
    if request.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(request.timeout))
    ttl = options.get("ttl_seconds_after_finished")
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = int(ttl)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": options.get("namespace") or "default",
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
