"""streamjobs.topics: topic names and configs of a queue, derived from settings alone."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest

from streamjobs.client import KafkaAdmin
from streamjobs.settings import Settings
from streamjobs.topics import (
    Replication,
    _known,
    queue_topics,
    replication,
    replication_problems,
    topic_specs,
)

MS250, S5, M30, H1 = (
    timedelta(milliseconds=250),
    timedelta(seconds=5),
    timedelta(minutes=30),
    timedelta(hours=1),
)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        topic_prefix="acme",
        queue="emails",
        partitions=12,
        replication_factor=3,
        retry_tiers="30m,5s",
        delay_tiers="250ms,1h",
        max_message_bytes=2_000_000,
        status_retention="2d",
    )


def test_names_follow_prefix_queue_and_tier_delays(settings: Settings) -> None:
    names = queue_topics(settings)
    assert names.main == "acme.emails"
    assert names.retry == {S5: "acme.emails.retry.5s", M30: "acme.emails.retry.30m"}
    assert names.delay == {MS250: "acme.emails.delay.250ms", H1: "acme.emails.delay.1h"}
    assert names.dlq == "acme.emails.dlq"
    assert names.redriven == "acme.emails.dlq.redriven"
    assert names.status == "acme.status"
    assert names.schemas == "acme.schemas"


def test_task_topics_are_main_then_retry_then_delay_tiers(settings: Settings) -> None:
    assert queue_topics(settings).task_topics == [
        "acme.emails",
        "acme.emails.retry.5s",
        "acme.emails.retry.30m",
        "acme.emails.delay.250ms",
        "acme.emails.delay.1h",
    ]


def test_tier_delay_is_the_fixed_delay_of_a_tier_topic(settings: Settings) -> None:
    names = queue_topics(settings)
    assert names.tier_delay("acme.emails.retry.5s") == S5
    assert names.tier_delay("acme.emails.retry.30m") == M30
    assert names.tier_delay("acme.emails.delay.250ms") == MS250
    assert names.tier_delay("acme.emails.delay.1h") == H1


@pytest.mark.parametrize(
    "topic",
    [
        "acme.emails",
        "acme.emails.dlq",
        "acme.emails.dlq.redriven",
        "acme.status",
        "acme.emails.retry.7s",
        "other",
    ],
)
def test_tier_delay_is_none_for_topics_that_are_not_tiers(settings: Settings, topic: str) -> None:
    assert queue_topics(settings).tier_delay(topic) is None


def test_queues_with_one_prefix_share_status_and_schemas_but_not_task_topics() -> None:
    emails = queue_topics(Settings(topic_prefix="acme", queue="emails"))
    images = queue_topics(Settings(topic_prefix="acme", queue="images"))
    assert (emails.status, emails.schemas) == (images.status, images.schemas)
    assert not set(emails.task_topics) & set(images.task_topics)
    assert emails.dlq != images.dlq


def test_specs_cover_every_topic_of_the_queue_exactly_once(settings: Settings) -> None:
    names = queue_topics(settings)
    spec_names = [spec.name for spec in topic_specs(settings)]
    assert len(spec_names) == len(set(spec_names))
    assert set(spec_names) == {
        *names.task_topics,
        names.dlq,
        names.redriven,
        names.starts,
        names.status,
        names.submitted,
        names.schemas,
        names.schedules,
        names.workers,
        names.cancels,
    }


def test_schedules_topic_is_one_compacted_partition_whose_owner_leads(settings: Settings) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.schedules")
    assert spec.partitions == 1
    assert spec.config["cleanup.policy"] == "compact"


def test_workers_topic_keeps_the_latest_report_and_drops_a_dead_workers_after_a_day(
    settings: Settings,
) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.workers")
    assert spec.partitions == 1
    assert spec.config["cleanup.policy"] == "compact,delete"
    assert spec.config["retention.ms"] == str(86_400_000)


def test_cancels_topic_is_one_compacted_partition_kept_past_the_furthest_due_time(
    settings: Settings,
) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.cancels")
    assert spec.partitions == 1
    assert spec.config["cleanup.policy"] == "compact,delete"
    kept = timedelta(milliseconds=int(spec.config["retention.ms"]))
    assert kept == settings.max_future + settings.status_retention


def test_tiers_dlq_and_status_share_the_main_partition_count(settings: Settings) -> None:
    specs = {spec.name: spec for spec in topic_specs(settings)}
    names = queue_topics(settings)
    for name in [*names.task_topics, names.dlq, names.status, names.submitted]:
        assert specs[name].partitions == 12, name
    assert specs[names.schemas].partitions == 1
    assert {spec.replication_factor for spec in specs.values()} == {3}


@pytest.mark.parametrize("topic", ["acme.status", "acme.submitted"])
def test_status_and_submitted_topics_are_compacted(settings: Settings, topic: str) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == topic)
    assert spec.config["cleanup.policy"] == "compact"
    assert spec.config["delete.retention.ms"] == str(2 * 86_400_000)


def test_schemas_topic_is_compacted_and_kept_forever(settings: Settings) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.schemas")
    assert spec.config == {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
        "min.insync.replicas": "2",
    }


def test_task_topics_and_dlq_accept_the_largest_allowed_record(settings: Settings) -> None:
    specs = {spec.name: spec for spec in topic_specs(settings)}
    names = queue_topics(settings)
    for name in [*names.task_topics, names.dlq]:
        assert int(specs[name].config["max.message.bytes"]) > settings.max_message_bytes, name
        assert "cleanup.policy" not in specs[name].config


def test_redrive_ledger_is_one_compacted_partition_kept_forever(settings: Settings) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.emails.dlq.redriven")
    assert spec.partitions == 1
    assert spec.config == {
        "cleanup.policy": "compact",
        "retention.ms": "-1",
        "min.insync.replicas": "2",
    }


def test_dlq_keeps_dead_letters_for_a_year(settings: Settings) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == "acme.emails.dlq")
    assert spec.config["retention.ms"] == str(365 * 86_400_000)


# --- replication -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (9, 3, 2)]
)
def test_unset_replication_is_derived_from_the_broker_count(
    brokers: int, factor: int, min_insync: int
) -> None:
    chosen = replication(Settings(), brokers)
    assert (chosen.factor, chosen.min_insync, chosen.derived) == (factor, min_insync, True)


def test_a_single_broker_is_said_to_be_for_development_only() -> None:
    text = replication(Settings(), 1).describe()
    assert "replication factor 1, min.insync.replicas 1" in text
    assert "development" in text
    assert "development" not in replication(Settings(), 3).describe()


def test_replication_from_settings_wins_over_the_broker_count() -> None:
    chosen = replication(Settings(replication_factor=5, min_insync_replicas=3), 1)
    assert (chosen.factor, chosen.min_insync, chosen.derived) == (5, 3, False)
    assert replication(Settings(replication_factor=4), 9).min_insync == 3


def test_unknown_cluster_and_broker_default_leave_replication_to_the_broker() -> None:
    assert replication(Settings(), None) == Replication(-1, None, None, True)
    spec = topic_specs(Settings(replication_factor=-1))[0]
    assert spec.replication_factor == -1
    assert "min.insync.replicas" not in spec.config


def test_every_topic_gets_the_min_insync_replicas(settings: Settings) -> None:
    for spec in topic_specs(settings, replication(settings, 3)):
        assert spec.config["min.insync.replicas"] == "2", spec.name


def test_min_insync_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="min_insync_replicas"):
        Settings(replication_factor=2, min_insync_replicas=3)


def test_topics_replicated_less_than_the_settings_are_reported() -> None:
    wanted = Replication(3, 2)
    configs = {
        "a": {"min.insync.replicas": "2"},
        "b": {"min.insync.replicas": "1"},
        "c": {"min.insync.replicas": "2"},
    }
    problems = replication_problems(wanted, {"a": 3, "b": 3, "c": 1}, configs)
    assert problems == [
        "b: min.insync.replicas=1, settings ask for 2",
        "c: 1 replicas, settings ask for 3",
    ]
    assert (
        replication_problems(Replication(1, 1), {"a": 1}, {"a": {"min.insync.replicas": "1"}}) == []
    )


def test_a_replication_factor_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="replication_factor"):
        Settings(replication_factor=0)


class _LaggingAdmin:
    """Answers metadata like a cluster whose answering broker learns a new topic late."""

    def __init__(self, *answers: dict[str, int]) -> None:
        self.answers = list(answers)
        self.asked = 0

    def topic_partitions(self) -> dict[str, int]:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_topic_not_known_yet_is_asked_for_again_within_the_wait() -> None:
    admin = _LaggingAdmin({"a": 3}, {"a": 3}, {"a": 3, "b": 3})
    found = _known(cast(KafkaAdmin, admin), ["a", "b"], timeout=5.0)
    assert found == {"a": 3, "b": 3}
    assert admin.asked == 3


def test_without_a_wait_a_missing_topic_is_reported_at_once() -> None:
    admin = _LaggingAdmin({"a": 3}, {"a": 3, "b": 3})
    assert _known(cast(KafkaAdmin, admin), ["a", "b"], timeout=0.0) == {"a": 3}
    assert admin.asked == 1
