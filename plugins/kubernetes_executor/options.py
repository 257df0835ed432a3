"""The `kubernetes` executor's option schema, apart from the class so that the
compiler checks an `executor "NAME" { kind = "kubernetes" ... }` block without
importing the Kubernetes client."""

from __future__ import annotations

from typing import Final

from tideflow.plugins.api.options import (
    DurationType,
    EnumType,
    Field,
    IntType,
    ListType,
    LiteralType,
    MapType,
    NumberType,
    SizeType,
    StringType,
)
from tideflow.plugins.builtin_options import KUBECONFIG

KUBERNETES_EXECUTOR: Final = (
    Field(
        "image",
        StringType(),
        "Container image of the attempts' pods: tideflow and the jobs' code installed.",
        required=True,
        example='"registry.example.com/shop/jobs:1.4.2"',
    ),
    Field("namespace", StringType(), "Namespace of the Jobs.", default="default", example='"shop"'),
    Field(
        "service_account",
        StringType(),
        "ServiceAccount of the attempts' pods (default: the namespace's `default`).",
        example='"nightly-jobs"',
    ),
    Field(
        "node_selector",
        MapType(StringType()),
        "Node labels a pod's node must have.",
        example='{ "cloud.google.com/gke-nodepool" = "gpu" }',
    ),
    Field(
        "tolerations",
        ListType(MapType(LiteralType())),
        "Taints the pods tolerate, as Kubernetes writes them.",
        example='[{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }]',
    ),
    Field(
        "secret_name",
        StringType(),
        "Secret holding the values of the jobs' `secret()`s, one key per secret name; "
        "the pods read them as `secretKeyRef`s.",
        example='"orders-secrets"',
    ),
    Field(
        "ttl_seconds_after_finished",
        # shorter, and a Job could go between its end and the orchestrator's next look
        IntType(minimum=60),
        "Seconds a finished Job the orchestrator never collected is kept (an "
        "orchestrator that restarts within it still records the outcome).",
        default=86400,
        example="3600",
    ),
    Field(
        "image_pull_policy",
        EnumType(("Always", "IfNotPresent", "Never")),
        "When the kubelet pulls the image (default: Kubernetes' own rule).",
        example='"IfNotPresent"',
    ),
    Field(
        "python",
        StringType(),
        "Python interpreter in the image that runs `tideflow.runtime.job_worker`.",
        default="python",
        example='"/opt/venv/bin/python"',
    ),
    Field(
        "grace_period",
        DurationType(),
        "Pods' terminationGracePeriodSeconds: how long a cancelled attempt has "
        "between SIGTERM and SIGKILL.",
        default=30.0,
        example="60s",
    ),
    Field(
        "start_timeout",
        DurationType(),
        "Longest an attempt's pod may take to start its container (scheduling, image "
        "pull, its Secret's keys); past it the attempt fails with the reason.",
        default=600.0,
        example="5m",
    ),
    Field(
        "poll_interval",
        DurationType(),
        "How often the orchestrator reads the Jobs it waits for (one list call each).",
        default=2.0,
        example="5s",
    ),
    Field(
        "max_cpu",
        NumberType(positive=True),
        "Most CPU cores one pod can be given (a larger `resources.cpu` is a compile error).",
        example="16",
    ),
    Field(
        "max_memory",
        SizeType(),
        "Most memory one pod can be given.",
        example="64Gi",
    ),
    Field(
        "max_gpu",
        IntType(minimum=0),
        "Most GPUs (`nvidia.com/gpu`) one pod can be given.",
        example="1",
    ),
    *KUBECONFIG,
)
