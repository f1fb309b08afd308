"""Topic policy on a real broker: what ``topics.ensure`` creates and what ``verify`` refuses."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streamjobs import Producer, Settings, Task
from streamjobs.errors import TopicError
from streamjobs.topics import cluster_replication, ensure, queue_topics, topic_specs, verify
from tests.integration.conftest import TEST_SETTINGS, build_settings, latest, read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 3})


def _config(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=10.0)
    return {name: str(entry.value) for name, entry in entries.items()}


def _partitions(admin: AdminClient) -> dict[str, int]:
    topics = admin.list_topics(timeout=10.0).topics
    return {name: len(meta.partitions) for name, meta in topics.items()}


class Ping(Task):
    n: int


def test_status_and_submitted_topics_are_compacted(settings: Settings, admin: AdminClient) -> None:
    names = queue_topics(settings)

    assert _config(admin, names.status)["cleanup.policy"] == "compact"
    assert _config(admin, names.submitted)["cleanup.policy"] == "compact"


def test_queued_records_are_keyed_by_task_id(settings: Settings, producer: Producer) -> None:
    handles = producer.submit_many([Ping(n=n) for n in range(3)])

    # a new task's queued record is on the submitted topic (streamjobs.confirmed)
    records = read_topic(settings, queue_topics(settings).submitted)
    assert {r.key for r in records} == {h.task_id.encode() for h in handles}
    assert all(latest(settings, h.task_id) is not None for h in handles)


def test_ensure_creates_every_topic_of_the_queue_with_the_configured_partitions(
    settings: Settings, admin: AdminClient
) -> None:
    names = queue_topics(settings)
    existing = _partitions(admin)

    for topic in [*names.task_topics, names.dlq, names.status, names.submitted]:
        assert existing.get(topic) == settings.partitions, topic
    assert existing.get(names.schemas) == 1
    assert _config(admin, names.schemas)["cleanup.policy"] == "compact"
    assert _config(admin, names.dlq)["cleanup.policy"] == "delete"


def test_ensure_is_idempotent(settings: Settings, admin: AdminClient) -> None:
    before = {t: n for t, n in _partitions(admin).items() if t.startswith(settings.topic_prefix)}

    assert ensure(settings) == []
    assert ensure(settings) == []
    verify(settings)
    after = {t: n for t, n in _partitions(admin).items() if t.startswith(settings.topic_prefix)}
    assert after == before


def test_verify_refuses_a_status_topic_that_is_not_compacted(
    kafka_bootstrap: str, unique_prefix: str, admin: AdminClient
) -> None:
    prefix = f"{unique_prefix}-delete"
    status_topic = f"{prefix}.status"
    created = admin.create_topics(
        [NewTopic(status_topic, 3, 1, config={"cleanup.policy": "delete"})]
    )
    created[status_topic].result(timeout=30.0)

    with pytest.raises(TopicError, match=r"status: cleanup\.policy=delete, expected compact"):
        build_settings(kafka_bootstrap, prefix)  # ensure() creates the rest, then verifies
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, **TEST_SETTINGS)
    with pytest.raises(TopicError, match=status_topic):
        verify(settings)
    assert _config(admin, status_topic)["cleanup.policy"] == "delete"  # never altered


def test_verify_names_every_missing_topic(settings: Settings) -> None:
    other_queue = settings.model_copy(update={"queue": "never-ensured"})
    names = queue_topics(other_queue)

    with pytest.raises(TopicError) as refused:
        verify(other_queue)
    for topic in [*names.task_topics, names.dlq]:
        assert f"{topic}: missing" in str(refused.value)
    assert names.status not in str(refused.value)  # shared by the prefix, and fine


# -- replication ----------------------------------------------------------------------------------


def _brokers(admin: AdminClient) -> int:
    return len(admin.list_topics(timeout=10.0).brokers)


def test_ensure_gives_every_topic_the_replication_derived_from_the_broker_count(
    settings: Settings, admin: AdminClient
) -> None:
    brokers = _brokers(admin)
    factor = min(3, brokers)
    min_insync = max(1, factor - 1)
    assert (
        cluster_replication(settings)
        .describe()
        .startswith(f"replication factor {factor}, min.insync.replicas {min_insync}")
    )
    metadata = admin.list_topics(timeout=10.0).topics
    for spec in topic_specs(settings):
        assert {len(p.replicas) for p in metadata[spec.name].partitions.values()} == {factor}
        assert _config(admin, spec.name)["min.insync.replicas"] == str(min_insync), spec.name


def test_verify_reports_topics_replicated_below_the_settings(
    settings: Settings, admin: AdminClient
) -> None:
    wanting = settings.model_copy(update={"replication_factor": _brokers(admin) + 1})
    with pytest.raises(TopicError, match=rf"{settings.topic_prefix}\.status: 1 replicas"):
        verify(wanting)
    warned = verify(wanting, replicas_strict=False)  # what a worker logs and runs with
    assert len(warned) == len(topic_specs(settings))
    assert verify(settings) == []
