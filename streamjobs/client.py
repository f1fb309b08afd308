"""The one home of confluent-kafka: builds clients and turns their errors into ours.

Owns producer, consumer and admin construction from :class:`~streamjobs.settings.Settings`, the
librdkafka keys our correctness depends on (idempotence, ``acks=all``, manual offset store and
commit, cooperative-sticky assignment, the Java-compatible partitioner), topic administration
calls and the translation of ``KafkaException`` into :mod:`streamjobs.errors`. Does not know
about tasks, statuses or retries: it moves bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported in stubs
    AdminClient,
    ConfigResource,
    NewTopic,
)

from streamjobs.errors import KafkaUnavailable, SubmitError, TopicError
from streamjobs.settings import Settings

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "AdminClient",
    "Consumer",
    "KafkaError",
    "KafkaException",
    "Message",
    "Producer",
    "TopicPartition",
]

Config = dict[str, str | int | float | bool]
Headers = list[tuple[str, bytes | None]]
_log = logging.getLogger(__name__)


def producer_config(settings: Settings, **overrides: str | int | float | bool) -> Config:
    """Producer keys. Idempotence is off by default in librdkafka: we always turn it on."""
    config: Config = {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0,  # a confirmed submit waits for its ack: lingering only adds latency
        "compression.type": "lz4",
        "message.max.bytes": settings.max_message_bytes,
        # the Java client's partitioner, so a Java producer and we agree on key -> partition
        "partitioner": "murmur2_random",
        "log_level": 3,
    }
    config.update(settings.client_config())
    config.update(overrides)
    return config


def new_producer(settings: Settings, **overrides: str | int | float | bool) -> Producer:
    return Producer(producer_config(settings, **overrides))


def consumer_config(settings: Settings, group: str, **overrides: Any) -> Config:
    """Consumer keys: nothing is stored or committed unless the worker says so."""
    config: Config = {
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        **_group_protocol(settings),
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        # a resumed tier partition joins the next fetch: a 500 ms long-poll made retries late
        "fetch.wait.max.ms": 100,
        "fetch.message.max.bytes": max(settings.max_message_bytes, 1_048_576),
        "log_level": 3,
    }
    config.update(settings.client_config())
    config.update(overrides)
    if settings.group_protocol == "consumer":
        for key in _BROKER_SIDE_KEYS & config.keys():
            if key not in _warned:
                _warned.add(key)
                _log.warning("%s is set on the broker with group.protocol=consumer; ignored", key)
            del config[key]
    return config


# KIP-848 moved these to the broker (group.consumer.session.timeout.ms, ...)
_warned: set[str] = set()  # warn once per process, not once per client
_BROKER_SIDE_KEYS = {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"}


def _group_protocol(settings: Settings) -> Config:
    """The group protocol. ``consumer`` (KIP-848, Kafka 4+): incremental rebalances decided by
    the broker's ``range`` assignor, which balances every topic on its own and gives a worker the
    same partition numbers of the main and tier topics. ``classic``: cooperative-sticky, which
    balances partition counts over all topics, so one worker may get every main-topic partition
    and another only tiers."""
    if settings.group_protocol == "consumer":
        return {"group.protocol": "consumer", "group.remote.assignor": "range"}
    return {"partition.assignment.strategy": "cooperative-sticky"}


def new_consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    return Consumer(consumer_config(settings, group, **overrides))


def new_reader(settings: Settings, **overrides: Any) -> Consumer:
    """A consumer for reading by assignment (status lookups, replay, dlq): never commits."""
    return new_consumer(settings, "streamjobs-reader", **overrides)


def new_admin(settings: Settings) -> AdminClient:
    return AdminClient({**settings.client_config(), "log_level": 3})


def cluster_ready(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    """True when a broker at ``bootstrap_servers`` answers a metadata request with a broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        metadata: Any = admin.list_topics(timeout=timeout)
        return bool(metadata.brokers)
    except KafkaException:
        return False


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits: its coordinates, and the time Kafka stamped on it there."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, in our types (confluent's Message has every field optional)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset, self.timestamp_ms)


def consume(consumer: Consumer, count: int, timeout: float) -> list[Record]:
    """Up to ``count`` records. Raises KafkaUnavailable on a fatal error; logs the others."""
    # librdkafka's batch consume waits for a *full* batch or the timeout: an idle worker would
    # sit on a fresh task for the whole timeout. Block for the first record only, then take
    # what is already buffered without waiting.
    messages = consumer.consume(1, timeout=timeout)
    if messages and count > 1:
        messages += consumer.consume(count - 1, timeout=0)
    records = []
    for message in messages:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaUnavailable(f"consumer failed: {error.name()}: {error.str()}")
            _log.warning("consumer: %s", error.str())
            continue
        raw = message.headers() or []
        headers = raw.items() if isinstance(raw, dict) else raw
        records.append(
            Record(
                topic=str(message.topic()),
                partition=int(message.partition() or 0),
                offset=int(message.offset() or 0),
                timestamp_ms=int(message.timestamp()[1]),
                key=_as_bytes(message.key()),
                value=_as_bytes(message.value()),
                headers=[(k, _as_bytes(v)) for k, v in headers],
            )
        )
    return records


def _as_bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def commit(consumer: Consumer, offsets: list[TopicPartition], *, asynchronous: bool) -> None:
    if asynchronous:
        consumer.commit(offsets=offsets, asynchronous=True)
    else:
        consumer.commit(offsets=offsets, asynchronous=False)


def tp(topic: str, partition: int, offset: int = OFFSET_INVALID) -> TopicPartition:
    return TopicPartition(topic, partition, offset)


# -- reading by position: replay, dead letters, inspection ---------------------------------------


def partition_ids(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The partition numbers of ``topic``; TopicError when the cluster does not have it."""
    try:
        metadata: Any = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise unavailable(exc) from exc
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise TopicError(f"topic {topic} does not exist (run `streamjobs topics ensure`)")
    return sorted(found.partitions)


def watermarks(
    consumer: Consumer, topic: str, partition: int, timeout: float = 10.0
) -> tuple[int, int]:
    """(low, high): the first offset still kept and the offset the next record will get."""
    try:
        low, high = consumer.get_watermark_offsets(tp(topic, partition), timeout=timeout)
    except KafkaException as exc:
        raise unavailable(exc) from exc
    return int(low), int(high)


def offsets_for_times(
    consumer: Consumer, topic: str, times_ms: Mapping[int, int], timeout: float = 10.0
) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after the given Unix ms.

    A partition with no such record maps to ``OFFSET_END`` (-1): callers clamp it to the high
    watermark.
    """
    wanted = [TopicPartition(topic, p, t) for p, t in times_ms.items()]
    if not wanted:
        return {}
    try:
        found = consumer.offsets_for_times(wanted, timeout=timeout)
    except KafkaException as exc:
        raise unavailable(exc) from exc
    for item in found:
        if item.error is not None:
            raise KafkaUnavailable(f"offsets_for_times {topic}[{item.partition}]: {item.error}")
    return {int(item.partition): int(item.offset) for item in found}


def committed_offsets(
    settings: Settings, group: str, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """``group``'s committed offset (the next to read) per partition; -1 where none is.

    Asks the group coordinator without joining the group: the consumer never subscribes, so a
    running worker group is not rebalanced.
    """
    wanted = [TopicPartition(t, p) for t, p in partitions]
    if not wanted:
        return {}
    consumer = new_consumer(settings, group)
    try:
        found = consumer.committed(wanted, timeout=timeout)
    except KafkaException as exc:
        raise unavailable(exc) from exc
    finally:
        consumer.close()
    return {
        (str(item.topic), int(item.partition)): int(item.offset) if item.offset >= 0 else -1
        for item in found
    }


def positions(consumer: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The fetch position (next offset to be returned) of each assigned partition."""
    try:
        found = consumer.position([TopicPartition(topic, p) for p in partitions])
    except KafkaException as exc:
        raise unavailable(exc) from exc
    return {int(item.partition): int(item.offset) for item in found}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def topic_partitions(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    """Partition count of every topic the cluster reports."""
    try:
        metadata: Any = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unavailable(exc) from exc
    return {name: len(meta.partitions) for name, meta in metadata.topics.items() if not meta.error}


def create_topics(admin: AdminClient, specs: Iterable[TopicSpec], timeout: float = 30.0) -> None:
    """Create the missing topics; an existing topic is left alone (verify checks it)."""
    new = [
        NewTopic(s.name, s.partitions, s.replication_factor, config=dict(s.config)) for s in specs
    ]
    if not new:
        return
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"cannot create topic {name}: {exc.args[0].str()}") from exc


def topic_configs(
    admin: AdminClient, names: Iterable[str], timeout: float = 10.0
) -> dict[str, dict[str, str]]:
    """Effective configuration of each named topic."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    result: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result()
        except KafkaException as exc:
            raise TopicError(f"cannot describe {resource.name}: {exc.args[0].str()}") from exc
        result[resource.name] = {k: str(v.value) for k, v in entries.items()}
    return result


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 30.0) -> None:
    for future in admin.delete_topics(names, operation_timeout=timeout).values():
        future.result()


def unavailable(exc: KafkaException) -> KafkaUnavailable:
    error: KafkaError = exc.args[0]
    return KafkaUnavailable(f"Kafka request failed: {error.name()}: {error.str()}")


def delivery_error(error: KafkaError, *, task_id: str | None = None) -> SubmitError:
    return SubmitError(
        f"record not confirmed by Kafka: {error.name()}: {error.str()}", task_id=task_id
    )


def murmur2_partition(key: bytes, partitions: int) -> int:
    """Java's default partitioner (murmur2, positive, modulo), as librdkafka's ``murmur2``."""
    return (_murmur2(key) & 0x7FFFFFFF) % partitions


def _murmur2(data: bytes) -> int:
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length % 4
    base = length - tail
    if tail >= 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def produce_confirmed(
    producer: Producer,
    topic: str,
    records: Sequence[tuple[bytes, bytes | None]],
    timeout: float = 30.0,
) -> None:
    """Produce ``(key, value)`` records (None is a tombstone) and wait for every acknowledgement.

    Raises KafkaUnavailable naming the first failure, or when acknowledgements do not arrive in
    ``timeout`` seconds: the caller must not act as if the records were durable.
    """
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve acknowledgements, then try again
                producer.poll(0.05)
            except KafkaException as exc:
                raise unavailable(exc) from exc
    remaining = producer.flush(timeout)
    if errors:
        raise KafkaUnavailable(f"write to {topic} failed: {errors[0].name()}: {errors[0].str()}")
    if remaining:
        raise KafkaUnavailable(f"{remaining} records to {topic} not acknowledged in {timeout}s")


def watermarks_when_ready(
    consumer: Consumer, partition: TopicPartition, timeout: float
) -> tuple[int, int]:
    """(low, high) offsets, retrying the transient errors of a just-created topic (no leader
    elected yet) until ``timeout``; raises KafkaUnavailable after that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            if (
                not error.retriable() and error.code() not in _NOT_READY
            ) or time.monotonic() > deadline:
                raise unavailable(exc) from exc
            time.sleep(0.1)  # leader election has no event to wait on


_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


# -- reading partitions up to their current end ------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets ``start`` (inclusive) to ``end`` (exclusive) of one partition."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def read_range(
    settings: Settings,
    topic: str,
    ranges: Sequence[OffsetRange],
    *,
    idle_timeout: float = 30.0,
) -> Generator[Record, None, None]:
    """The records of ``topic`` within ``ranges``, partition by partition in offset order.

    Stops when every partition's fetch position reaches its range end (compaction and
    transaction markers leave offset gaps, so the last offset seen proves nothing). Raises
    KafkaUnavailable when nothing arrives for ``idle_timeout`` seconds. The reader is closed
    when the iterator is exhausted or closed: use ``contextlib.closing`` when stopping early.
    """
    todo = {r.partition: r for r in ranges if r.size > 0}
    if not todo:
        return
    consumer = new_reader(settings)
    try:
        consumer.assign([tp(topic, p, r.start) for p, r in todo.items()])
        deadline = time.monotonic() + idle_timeout
        while todo:
            records = consume(consumer, 500, 0.2)
            for record in records:
                wanted = todo.get(record.partition)
                if wanted is not None and wanted.start <= record.offset < wanted.end:
                    yield record
            for partition, position in positions(consumer, topic, list(todo)).items():
                if position >= todo[partition].end:
                    del todo[partition]
            if records:
                deadline = time.monotonic() + idle_timeout
            elif todo and time.monotonic() > deadline:
                raise KafkaUnavailable(f"no records from {topic} for {idle_timeout}s: {todo}")
    finally:
        consumer.close()


def ranges_to_end(
    settings: Settings, topic: str, starts: Mapping[int, int | None], timeout: float = 10.0
) -> list[OffsetRange]:
    """For each partition, the range from ``starts[p]`` (None or negative: its first offset,
    clamped to what it still holds) to its current end: what a reader must see to be caught up."""
    consumer = new_reader(settings)
    try:
        ranges = []
        for partition, start in starts.items():
            low, high = watermarks_when_ready(consumer, tp(topic, partition), timeout)
            begin = low if start is None or start < 0 else max(start, low)
            ranges.append(OffsetRange(partition, begin, high))
        return ranges
    finally:
        consumer.close()
