"""Topic administration: confluent-kafka's ``AdminClient`` behind our methods and errors.

Owns :class:`KafkaAdmin` (broker count, partition and replica counts, topic creation, effective
topic configs, deletion)
and :func:`cluster_ready`. Raises only :mod:`streamjobs.errors`. Does not decide which topics a
queue needs (:mod:`streamjobs.topics`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported in stubs
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streamjobs.client.config import Config
from streamjobs.client.failures import NO_ANSWER, code_of, text_of
from streamjobs.client.logs import callbacks
from streamjobs.client.reach import Reach, contacted
from streamjobs.client.records import TopicSpec
from streamjobs.errors import TopicError


class KafkaAdmin:
    """One librdkafka admin client."""

    def __init__(self, config: Config, reach: Reach | None = None) -> None:
        self._reach = reach or Reach.of(config)
        self._admin = AdminClient({**callbacks("admin", self._reach), **config})

    def topic_partitions(self, timeout: float = 10.0) -> dict[str, int]:
        """Partition count of every topic the cluster reports."""
        try:
            metadata: Any = self._admin.list_topics(timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._admin) from exc
        return {
            name: len(meta.partitions) for name, meta in metadata.topics.items() if not meta.error
        }

    def broker_count(self, timeout: float = 10.0) -> int:
        """How many brokers the cluster reports."""
        try:
            metadata: Any = self._admin.list_topics(timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._admin) from exc
        return len(metadata.brokers)

    def topic_replicas(self, timeout: float = 10.0) -> dict[str, int]:
        """The fewest replicas any partition of each topic has."""
        try:
            metadata: Any = self._admin.list_topics(timeout=self._bound(timeout))
        except KafkaException as exc:
            raise self._reach.error(exc, self._admin) from exc
        return {
            name: min((len(p.replicas) for p in meta.partitions.values()), default=0)
            for name, meta in metadata.topics.items()
            if not meta.error
        }

    def create_topics(self, specs: Iterable[TopicSpec], timeout: float = 30.0) -> None:
        """Create the missing topics; an existing topic is left alone (verify checks it)."""
        new = [
            NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config))
            for s in specs
        ]
        if not new:
            return
        futures = self._admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                self._raise_unreached(exc)
                if code_of(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                    reason = text_of(exc)
                    raise TopicError(f"cannot create topic {name}: {reason}") from exc

    def topic_configs(
        self, names: Iterable[str], timeout: float = 10.0
    ) -> dict[str, dict[str, str]]:
        """Effective configuration of each named topic."""
        resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
        result: dict[str, dict[str, str]] = {}
        described = self._admin.describe_configs(resources, request_timeout=self._bound(timeout))
        for resource, future in described.items():
            try:
                entries = future.result()
            except KafkaException as exc:
                self._raise_unreached(exc)
                reason = text_of(exc)
                raise TopicError(f"cannot describe {resource.name}: {reason}") from exc
            result[resource.name] = {k: str(v.value) for k, v in entries.items()}
        return result

    def delete_topics(self, names: list[str], timeout: float = 30.0) -> None:
        for future in self._admin.delete_topics(names, operation_timeout=timeout).values():
            try:
                future.result()
            except KafkaException as exc:
                raise self._reach.error(exc, self._admin, "topic deletion failed") from exc

    def _bound(self, timeout: float) -> float:
        return self._reach.bound(timeout, self._admin)

    def _raise_unreached(self, exc: KafkaException) -> None:
        """The one-line error when a request got no answer from a cluster never reached."""
        if code_of(exc) in NO_ANSWER and not contacted(self._admin):
            raise self._reach.error(exc, self._admin) from exc


def cluster_ready(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    """True when a broker at ``bootstrap_servers`` answers a metadata request with a broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        metadata: Any = admin.list_topics(timeout=timeout)
        return bool(metadata.brokers)
    except KafkaException:
        return False
