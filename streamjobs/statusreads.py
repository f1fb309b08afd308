"""Reading statuses back from Kafka: point lookups of one task id and whole-topic snapshots.

Owns :func:`latest` and :func:`wait`, which read only the partition a task id hashes to on the
status topic (and, for ``latest``, the submitted topic) and raise rather than answer from a
partition they could not read to its end, and :func:`snapshot`, one pass over both compacted
topics. What a record means and which of two records wins is :mod:`streamjobs.status`'s
(:func:`~streamjobs.status.newer`, :func:`~streamjobs.status.merged`). Does not keep a
long-lived materialised view (the index does, :mod:`streamjobs.index`).
"""

from __future__ import annotations

import time

from streamjobs import client
from streamjobs.errors import KafkaUnavailable, TaskTimeout, TopicError
from streamjobs.settings import Settings
from streamjobs.status import StatusView, merged, newer, status_partition
from streamjobs.topics import queue_topics


def _partition_count(consumer: client.KafkaConsumer, topic: str, timeout: float) -> int:
    """The status (or submitted) topic's real partition count (shared by queues of a prefix)."""
    try:
        return len(consumer.partition_ids(topic, timeout))
    except TopicError as exc:
        message = f"topic {topic} is missing (run `streamjobs topics ensure`)"
        raise TopicError(message) from exc


def latest(settings: Settings, task_id: str, *, timeout: float = 10.0) -> StatusView | None:
    """The newest status of ``task_id`` (:func:`merged` from both topics), or None when the id
    is unknown (or was purged).

    None is said only after the task id's partitions were read to their end: a partition that
    cannot be read to the end within ``timeout`` raises KafkaUnavailable instead.
    """
    deadline = time.monotonic() + timeout
    names = queue_topics(settings)
    topics = (names.status, names.submitted)
    return _Follower(settings, task_id, None, timeout, topics).read_to_end(deadline)


def wait(
    settings: Settings, task_id: str, timeout: float, *, since_ms: int | None = None
) -> StatusView:
    """Block until ``task_id`` reaches a final state; raise TaskTimeout when it does not.
    Only the status topic has final states: the submitted topic is not read."""
    topics = (queue_topics(settings).status,)
    follower = _Follower(settings, task_id, since_ms, 10.0, topics)
    try:
        return follower.until_final(timeout)
    finally:
        follower.close()


class _Follower:
    """Reads one task id's partition of the status topic (and of the submitted topic), keeping
    the highest version seen on each; :func:`merged` gives the answer."""

    def __init__(
        self,
        settings: Settings,
        task_id: str,
        since_ms: int | None,
        timeout: float,
        topics: tuple[str, ...],
    ) -> None:
        """``timeout``: for each metadata request made here; ``topics``: the status topic,
        then optionally the submitted topic."""
        self.task_id = task_id
        self.key = task_id.encode()
        self.best: dict[str, StatusView | None] = dict.fromkeys(topics)
        self.consumer = client.new_reader(settings)
        try:
            self.partitions = [self._partition(t, since_ms, timeout) for t in topics]
        except BaseException:
            self.consumer.close()  # an unclosed reader would warn (ResourceWarning)
            raise
        self.consumer.assign(self.partitions)

    def _partition(self, topic: str, since_ms: int | None, timeout: float) -> client.TopicPartition:
        number = status_partition(_partition_count(self.consumer, topic, timeout), self.task_id)
        start = client.OFFSET_BEGINNING
        if since_ms is not None:
            # the end first, then the search: a record written in between is found by the
            # search, one written after starts at or past this end. (The end as resolved at
            # fetch time could skip a worker's first status, now that no ``queued`` precedes it
            # on this topic.)
            _, end = self.consumer.watermarks_when_ready(topic, number, timeout)
            probe = {number: max(0, since_ms - 5000)}
            found = self.consumer.offsets_for_times(topic, probe, timeout=timeout)[number]
            start = found if found >= 0 else end
        return client.TopicPartition(topic, number, start)

    @property
    def view(self) -> StatusView | None:
        status, *submitted = self.best.values()  # in ``topics`` order
        return merged(status, submitted[0] if submitted else None)

    def close(self) -> None:
        self.consumer.close()

    def _absorb(self, records: list[client.Record]) -> None:
        for record in records:
            if record.key == self.key:
                self.best[record.topic] = newer(self.best.get(record.topic), record)

    def read_to_end(self, deadline: float) -> StatusView | None:
        """The merged view once the partitions were read to their end; KafkaUnavailable if
        they were not by ``deadline`` (a monotonic time): never "unknown" for a partition half
        read."""
        try:
            ends = []
            for partition in self.partitions:
                remaining = max(0.001, deadline - time.monotonic())
                low, high = self.consumer.watermarks_when_ready(
                    partition.topic, partition.partition, remaining
                )
                ends.append(high if high > low else None)
            # compaction leaves gaps, so compare fetch positions, not the last offsets seen
            while not self._reached(ends):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    where = ", ".join(f"{p.topic}[{p.partition}]" for p in self.partitions)
                    raise KafkaUnavailable(
                        f"status of task {self.task_id}: {where} not read to its end before "
                        "the deadline"
                    )
                self._absorb(self.consumer.consume(500, min(0.2, remaining)))
            return self.view
        finally:
            self.close()

    def _reached(self, ends: list[int | None]) -> bool:
        waiting = [(p, end) for p, end in zip(self.partitions, ends, strict=True) if end]
        if not waiting:
            return True
        positions = self.consumer.positions([p for p, _ in waiting])
        return all(at.offset >= end for at, (_, end) in zip(positions, waiting, strict=True))

    def until_final(self, timeout: float) -> StatusView:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._absorb(self.consumer.consume(500, min(0.2, timeout)))
            view = self.view
            if view is not None and view.state.final:
                return view
        view = self.view
        state = view.state.value if view else "unknown"
        raise TaskTimeout(f"task {self.task_id} not finished after {timeout}s (state: {state})")


def snapshot(settings: Settings, *, timeout: float = 30.0) -> dict[str, StatusView]:
    """Every task's latest status (:func:`merged` from the status and submitted topics): reads
    all their partitions to their current end.

    Tombstoned (expired) ids are absent. Cost is one pass over the compacted topics.
    """
    names = queue_topics(settings)
    clients = client.KafkaClients(settings)
    views = _read_all(clients, names.status, timeout)
    for task_id, view in _read_all(clients, names.submitted, timeout).items():
        views.setdefault(task_id, view)  # a status-topic record always wins
    return views


def _read_all(clients: client.KafkaClients, topic: str, timeout: float) -> dict[str, StatusView]:
    consumer = clients.reader()
    try:
        partitions = _partition_count(consumer, topic, timeout)
    finally:
        consumer.close()
    views: dict[str, StatusView] = {}
    ranges = client.ranges_to_end(clients, topic, dict.fromkeys(range(partitions)), timeout)
    for record in client.read_range(clients, topic, ranges, idle_timeout=timeout):
        _merge(views, record)
    return views


def _merge(views: dict[str, StatusView], record: client.Record) -> None:
    if record.key is None:
        return
    task_id = record.key.decode(errors="replace")
    view = newer(views.get(task_id), record)
    if view is None:
        views.pop(task_id, None)
    else:
        views[task_id] = view
