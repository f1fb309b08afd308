"""The Helm chart (``deploy/helm/streamjobs``) lints, renders, and every object it renders is valid.

No cluster and no network: Helm is built once from the Go module proxy into the cache
(:mod:`streamjobs.dev.helm_build`, ``make helm-build``); built-in kinds are validated against the
Kubernetes JSON schemas of the ``kubernetes-validate`` package (strict: unknown fields refused),
KEDA's kinds against the CRD schemas pinned in ``deploy/helm/schemas``. Marked ``integration``
for the Go build, not for a broker.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streamjobs import Settings
from streamjobs.dev.helm_build import ensure_binary
from streamjobs.topics import queue_topics
from tests.integration.conftest import REPO_ROOT

pytestmark = [pytest.mark.integration]

CHART = REPO_ROOT / "deploy" / "helm" / "streamjobs"
PINNED = REPO_ROOT / "deploy" / "helm" / "schemas"
KUBERNETES_VERSION = "1.33.0"
BASE = ["kafka.sasl.password=s3cret-value"]


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_binary()


def helm_run(helm: Path, *args: str, values: list[str]) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in values for arg in ("--set", value)]
    return subprocess.run(
        [str(helm), *args, str(CHART), *sets],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(helm: Path, *values: str) -> list[dict[str, Any]]:
    done = helm_run(helm, "template", "jobs", values=[*BASE, *values])
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("keda.sh/"):
        schema = json.loads((PINNED / f"keda.sh-v1alpha1-{obj['kind']}.json").read_text())
        jsonschema.validate(obj, schema)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def one(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return found


def test_the_chart_lints_clean(helm: Path) -> None:
    done = helm_run(helm, "lint", "--strict", values=BASE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["kafka.tls.caSecret=kafka-ca", "worker.exactlyOnce=true", "worker.processes=2"],
        ["autoscaling.enabled=false", "dashboard.enabled=false", "kafka.sasl.enabled=false"],
    ],
    ids=["defaults", "tls-eos-processes", "static-plaintext"],
)
def test_every_rendered_object_is_valid_against_its_schema(helm: Path, values: list[str]) -> None:
    objects = render(helm, *values)
    assert objects
    for obj in objects:
        validate(obj)


def test_the_scaled_object_scales_the_worker_on_its_group_lag_of_the_main_topic(
    helm: Path,
) -> None:
    objects = render(helm, "kafka.topicPrefix=shop", "kafka.queue=emails")
    settings = Settings(topic_prefix="shop", queue="emails")
    scaled = one(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == settings.group
    assert trigger["metadata"]["topic"] == queue_topics(settings).main
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == one(objects, "Deployment", "-worker")["metadata"]["name"]
    )
    env = {
        e["name"]: e.get("value")
        for e in one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert env["STREAMJOBS_TOPIC_PREFIX"] == "shop"
    assert env["STREAMJOBS_QUEUE"] == "emails"


@pytest.mark.parametrize(
    "values",
    [
        ["kafka.partitions=6", "autoscaling.maxReplicas=7"],
        ["kafka.partitions=12", "autoscaling.maxReplicas=7", "worker.processes=2"],
    ],
    ids=["replicas", "replicas-times-processes"],
)
def test_more_group_members_than_partitions_refuses_to_render(
    helm: Path, values: list[str]
) -> None:
    done = helm_run(helm, "template", "jobs", values=[*BASE, *values])
    assert done.returncode != 0
    assert "more than kafka.partitions" in done.stderr


def test_workers_stop_gracefully_with_probes_on_the_health_endpoints(helm: Path) -> None:
    objects = render(helm, "worker.shutdownGraceSeconds=45")
    pod = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 45
    (container,) = pod["containers"]
    assert {"name": "STREAMJOBS_SHUTDOWN_GRACE", "value": "45s"} in container["env"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    job = one(objects, "Job", "-topics")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "ensure"]


def test_the_sasl_password_is_only_in_the_secret(helm: Path) -> None:
    objects = render(helm)
    for obj in objects:
        if obj["kind"] != "Secret":
            assert "s3cret-value" not in json.dumps(obj)
    assert one(objects, "Secret")["stringData"]["password"] == "s3cret-value"
