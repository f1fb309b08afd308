"""docker-compose.yml as Docker Compose itself reads it (``docker-compose config``).

Needs the ``docker-compose`` command (Debian package; ``make system-deps`` installs it) but no
Docker engine: ``config`` only parses, validates and resolves the file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    command = shutil.which("docker-compose")
    if command is None:
        pytest.fail("docker-compose is not installed; run `make system-deps` (apt-get)")
    done = subprocess.run(
        [command, "--file", str(REPO / "docker-compose.yml"), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    resolved: dict[str, Any] = yaml.safe_load(done.stdout)
    return resolved


def test_compose_defines_kafka_jaeger_topics_and_worker(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "jaeger", "topics", "worker"}


def test_kafka_is_a_healthchecked_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = kafka["environment"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert kafka["healthcheck"]["test"]


def test_jaeger_publishes_ui_and_otlp_on_loopback(compose: dict[str, Any]) -> None:
    jaeger = compose["services"]["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/jaeger:2.")
    published = {str(port).split(":")[1]: str(port) for port in jaeger["ports"]}
    assert set(published) == {"16686", "4317", "4318"}
    assert all(port.startswith("127.0.0.1:") for port in published.values())


def test_topics_are_ensured_once_kafka_is_healthy(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["command"] == ["streamjobs", "topics", "ensure"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert topics["environment"]["STREAMJOBS_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_worker_consumes_the_demo_registry_with_tracing(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert worker["command"] == ["streamjobs", "consume", "streamjobs.dev.demo:registry"]
    assert worker["environment"] == {
        "STREAMJOBS_BOOTSTRAP_SERVERS": "kafka:9092",
        "STREAMJOBS_OTLP_ENDPOINT": "http://jaeger:4318",
        "STREAMJOBS_SERVICE_NAME": "streamjobs-worker",
    }
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_worker_can_scale_because_it_has_no_fixed_name_or_host_port(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
