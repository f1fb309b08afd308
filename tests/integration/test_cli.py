"""The ``streamjobs`` command line against a real broker (through typer's CliRunner)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from typer.testing import CliRunner

from streamjobs import Producer, Settings, Task, TaskRegistry
from streamjobs.cli import app
from tests.integration.conftest import ThreadWorker

pytestmark = pytest.mark.integration


class Greet(Task):
    name: str


@pytest.fixture
def cli() -> Callable[..., object]:
    """Invoke ``streamjobs ARGS`` with no STREAMJOBS_* variables leaking in from outside."""
    runner = CliRunner()
    clean_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}

    def invoke(*args: str) -> object:
        return runner.invoke(app, list(args), env=clean_env, catch_exceptions=False)

    return invoke


def test_topics_ensure_then_verify_exit_0(
    cli: Callable[..., object], kafka_bootstrap: str, unique_prefix: str
) -> None:
    where = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", unique_prefix]

    ensured = cli("topics", "ensure", *where)
    verified = cli("topics", "verify", *where)
    again = cli("topics", "ensure", *where)

    assert ensured.exit_code == 0, ensured.output
    assert f"created {unique_prefix}.status" in ensured.output
    brokers = len(
        AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10.0).brokers
    )
    if brokers == 1:  # said, so nobody mistakes a development setup for a production one
        assert (
            "replication factor 1, min.insync.replicas 1 (derived from 1 broker; a single "
            "node is for development only)" in ensured.output
        )
    assert verified.exit_code == 0, verified.output
    assert verified.output.strip() == "ok"
    assert again.exit_code == 0, again.output
    assert "created" not in again.output
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 3})
    resource = ConfigResource(ConfigResource.Type.TOPIC, f"{unique_prefix}.status")
    config = admin.describe_configs([resource])[resource].result(timeout=10.0)
    assert config["cleanup.policy"].value == "compact"


def test_topics_verify_accepts_topics_ensured_with_a_partitions_flag(
    cli: Callable[..., object], kafka_bootstrap: str, unique_prefix: str
) -> None:
    where = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", unique_prefix]

    ensured = cli("topics", "ensure", *where, "--partitions", "2")
    verified = cli("topics", "verify", *where)

    assert ensured.exit_code == 0, ensured.output
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 3})
    assert len(admin.list_topics(timeout=10.0).topics[f"{unique_prefix}.status"].partitions) == 2
    assert verified.exit_code == 0, verified.output


def test_topics_verify_exits_1_when_the_status_topic_is_not_compacted(
    cli: Callable[..., object], kafka_bootstrap: str, unique_prefix: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 3})
    status_topic = f"{unique_prefix}.status"
    created = admin.create_topics(
        [NewTopic(status_topic, 6, 1, config={"cleanup.policy": "delete"})]
    )
    created[status_topic].result(timeout=30.0)
    where = ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", unique_prefix]

    ensured = cli("topics", "ensure", *where)
    verified = cli("topics", "verify", *where)

    assert ensured.exit_code == 1
    assert verified.exit_code == 1
    assert f"{status_topic}: cleanup.policy=delete, expected compact" in verified.output


def test_status_of_an_unknown_id_exits_1_and_says_unknown(
    cli: Callable[..., object], settings: Settings, producer: Producer
) -> None:
    producer.submit(Greet(name="someone else"))  # the status topic has records, not this id
    unknown = uuid.uuid4().hex
    where = ["--bootstrap-servers", settings.bootstrap_servers]
    where += ["--topic-prefix", settings.topic_prefix]

    shown = cli("status", unknown, *where)
    as_json = cli("status", unknown, *where, "--json")

    assert shown.exit_code == 1
    assert "unknown" in shown.output
    assert unknown in shown.output
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"task_id": unknown, "state": "unknown"}


def test_status_json_prints_the_state_and_result_of_a_task(
    cli: Callable[..., object],
    settings: Settings,
    producer: Producer,
    worker: Callable[..., ThreadWorker],
) -> None:
    registry = TaskRegistry()

    @registry.handler(Greet)
    def greet(task: Greet) -> str:
        return f"hello {task.name}"

    queued = producer.submit(Greet(name="queued"))
    where = ["--bootstrap-servers", settings.bootstrap_servers]
    where += ["--topic-prefix", settings.topic_prefix]
    before = cli("status", queued.task_id, *where, "--json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["state"] == "queued"

    worker(registry)
    waited = cli("status", queued.task_id, *where, "--wait", "--timeout", "30", "--json")

    assert waited.exit_code == 0, waited.output
    shown = json.loads(waited.stdout)
    assert shown["task_id"] == queued.task_id
    assert shown["state"] == "succeeded"
    assert shown["result"] == "hello queued"
    assert shown["attempt"] == 1
    human = cli("status", queued.task_id, *where)
    assert human.exit_code == 0
    assert "succeeded" in human.output
