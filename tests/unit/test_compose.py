"""docker-compose.yml as Docker Compose itself reads it (``docker-compose config``).

Needs the ``docker-compose`` command (Debian package; ``make system-deps`` installs it) but no
Docker engine: ``config`` only parses, validates and resolves the file.
"""

from __future__ import annotations

import json
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


def test_compose_defines_kafka_jaeger_topics_worker_prometheus_and_grafana(
    compose: dict[str, Any],
) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "jaeger",
        "topics",
        "worker",
        "prometheus",
        "grafana",
    }


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
    assert worker["command"][:3] == ["streamjobs", "consume", "streamjobs.dev.demo:registry"]
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


def test_worker_serves_metrics_inside_the_compose_network(compose: dict[str, Any]) -> None:
    command = compose["services"]["worker"]["command"]
    assert "--metrics-port=9464" in command
    assert "--metrics-host=0.0.0.0" in command  # the container's own address, no host port


def test_prometheus_scrapes_every_worker_replica_with_the_alert_rules(
    compose: dict[str, Any],
) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    assert mounts == {
        Path("deploy/prometheus/prometheus.yml"): "/etc/prometheus/prometheus.yml",
        Path("deploy/prometheus/alerts.yml"): "/etc/prometheus/alerts.yml",
    }
    assert _host_ips(prometheus) == {"127.0.0.1"}
    config = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "streamjobs"  # the alerts' up{job="streamjobs"}
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9464, "refresh_interval": "15s"}
    ]


def test_grafana_provisions_the_prometheus_source_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    assert mounts == {
        Path("deploy/grafana/provisioning"): "/etc/grafana/provisioning",
        Path("deploy/grafana/dashboards"): "/var/lib/grafana/dashboards",
    }
    assert _host_ips(grafana) == {"127.0.0.1"}
    source = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/streamjobs.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {source["datasources"][0]["uid"]}
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("throughput by outcome", "duration percentiles", "lag", "in flight", "workers"):
        assert topic in titles


def _mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Bind mounts as (path in the repository, path in the container), whichever syntax the
    installed docker-compose resolves them to (``src:dst:ro`` or a mapping)."""
    found = {}
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[Path(source).relative_to(REPO)] = target
    return found


def _host_ips(service: dict[str, Any]) -> set[str]:
    return {p.split(":")[0] if isinstance(p, str) else p["host_ip"] for p in service["ports"]}
