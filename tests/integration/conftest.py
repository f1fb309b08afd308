"""Fixtures for tests against a real broker, and helpers that read facts back from Kafka.

Fixtures: ``settings`` (short tiers, topics ensured), ``make_settings`` (more of them, each with
its own prefix and group), ``worker`` (a :class:`streamjobs.Worker` in a thread, stopped and
checked at teardown), ``worker_process`` (``streamjobs consume`` in a subprocess, stopped by PID),
``producer`` and ``raw_producer`` (a plain confluent-kafka producer for hand-made records),
``jaeger`` (a local Jaeger per module) and ``traced_worker`` (``streamjobs consume`` exporting its
spans to it).

Helpers (plain functions, also imported by ``tests/fault``): committed offsets of the worker
group, whole-topic reads, dead letters, statuses, group assignments and hand-built envelopes.
Every helper reads Kafka; none peeks into a worker's memory.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka.admin import AdminClient

from streamjobs import (
    Producer,
    Settings,
    StatusView,
    Task,
    TaskRegistry,
    TaskState,
    Worker,
    status,
    statusreads,
    topics,
)
from streamjobs.client import murmur2_partition
from streamjobs.deadletter import decode_dead_letter
from streamjobs.dev.jaeger import LocalJaeger
from streamjobs.envelope import Envelope, decode_envelope
from streamjobs.middleware import Middleware
from streamjobs.settings import format_duration
from streamjobs.tasktypes import TaskType
from streamjobs.topics import queue_topics

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_OFFSET = -1  # what committed_offsets reports for a partition the group never committed

# Short tiers keep retries and delays fast. The session keys apply to the classic group protocol
# only: under KIP-848 (group.protocol=consumer, the default) the client drops them with a warning
# and the broker's group.consumer.session.timeout.ms decides (10 s on the local broker), so a
# killed worker's partitions move on about 10 s after its death.
TEST_SETTINGS: dict[str, Any] = {
    "partitions": 3,
    "retry_tiers": "300ms,600ms",
    "delay_tiers": "500ms,1s,2s",
    "max_attempts": 3,
    "commit_interval": "50ms",
    "shutdown_grace": "10s",
    "kafka": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
}


def build_settings(bootstrap: str, prefix: str, **overrides: Any) -> Settings:
    """Settings for one test's queue, with every topic of it created by ``topics.ensure``."""
    settings = Settings(
        bootstrap_servers=bootstrap, topic_prefix=prefix, **{**TEST_SETTINGS, **overrides}
    )
    topics.ensure(settings)
    return settings


# -- reading facts from Kafka ---------------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _reader(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )


def read_topic(settings: Settings, topic: str, timeout: float = 20.0) -> list[Rec]:
    """Every record of ``topic`` up to its current end, in partition then offset order."""
    consumer = _reader(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10.0).topics[topic]
        assert metadata.error is None, f"{topic}: {metadata.error}"
        ends = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10.0
            )
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[Rec] = []
        deadline = time.monotonic() + timeout
        while ends:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for message in consumer.consume(500, timeout=0.2):
                if message.error() is not None:
                    continue
                records.append(
                    Rec(
                        topic=topic,
                        partition=message.partition(),
                        offset=message.offset(),
                        timestamp_ms=message.timestamp()[1],
                        key=message.key(),
                        value=message.value(),
                        headers=list(message.headers() or []),
                    )
                )
            for position in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if position.offset >= ends[position.partition]:
                    del ends[position.partition]
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The worker group's committed offset (next to read) per partition of ``topic``.

    Asks the group coordinator without joining the group: the consumer never subscribes.
    A partition without a commit reports ``NO_OFFSET``.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": settings.group,
            "enable.auto.commit": False,
        }
    )
    try:
        wanted = [TopicPartition(topic, p) for p in range(settings.partitions)]
        found = consumer.committed(wanted, timeout=10.0)
    finally:
        consumer.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else NO_OFFSET) for tp in found}


def committed_offset(settings: Settings, topic: str, partition: int) -> int:
    return committed_offsets(settings, topic)[partition]


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every record of the queue's dead-letter topic, decoded."""
    dlq = queue_topics(settings).dlq
    return [decode_dead_letter(r.value) for r in read_topic(settings, dlq) if r.value]


def statuses(settings: Settings) -> dict[str, StatusView]:
    """The latest status of every task id (one pass over the compacted status topic)."""
    return statusreads.snapshot(settings)


def latest(settings: Settings, task_id: str) -> StatusView | None:
    return statusreads.latest(settings, task_id)


def status_history(settings: Settings, task_id: str) -> list[StatusView]:
    """Every status record of ``task_id`` still on the status topic, in the order written."""
    topic = queue_topics(settings).status
    key = task_id.encode()
    return [
        status.decode_status(r.value)
        for r in read_topic(settings, topic)
        if r.key == key and r.value is not None
    ]


def state_of(settings: Settings, task_id: str) -> str | None:
    view = statusreads.latest(settings, task_id)
    return None if view is None else view.state.value


def envelopes(settings: Settings, topic: str) -> list[tuple[Rec, Envelope]]:
    """The task envelopes on ``topic`` with the records that carried them."""
    return [(r, decode_envelope(r.value)) for r in read_topic(settings, topic) if r.value]


def group_assignment(settings: Settings) -> dict[str, set[tuple[str, int]]]:
    """Members of the worker group and the partitions each one owns, per the coordinator."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers, "log_level": 3})
    try:
        description = admin.describe_consumer_groups([settings.group])[settings.group].result(
            timeout=10.0
        )
    except KafkaException:
        return {}
    return {
        member.member_id: {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    }


def key_for_partition(partition: int, partitions: int, stem: str = "key") -> str:
    """A key the streamjobs producer (murmur2) sends to ``partition``."""
    for n in itertools.count():
        key = f"{stem}-{n}"
        if murmur2_partition(key.encode(), partitions) == partition:
            return key
    raise AssertionError("unreachable")


# -- hand-built records ---------------------------------------------------------------------


def make_envelope(settings: Settings, task: Task, /, **overrides: Any) -> Envelope:
    """The envelope ``Producer.submit`` would write for ``task``, with ``overrides`` applied."""
    task_type = TaskType(type(task), type(task).task_name)
    envelope = Envelope(
        task_id=uuid.uuid4().hex,
        task=task_type.name,
        queue=settings.queue,
        payload=task_type.encode(task),
        payload_schema=task_type.fingerprint,
        submitted_at_ms=status.now_ms(),
    )
    return replace(envelope, **overrides)


@dataclass(frozen=True)
class Produced:
    topic: str
    partition: int
    offset: int


class RawProducer:
    """A plain confluent-kafka producer for records streamjobs would never write itself."""

    def __init__(self, settings: Settings) -> None:
        self._producer = KafkaProducer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
            }
        )

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Produced:
        """Produce one record and wait for Kafka to confirm it."""
        result: dict[str, Any] = {}

        def on_delivery(error: Any, message: Any) -> None:
            result["error"] = error
            result["offset"] = message.offset()

        self._producer.produce(
            topic, value, key, partition=partition, headers=headers, on_delivery=on_delivery
        )
        assert self._producer.flush(30.0) == 0, "record not confirmed"
        assert result["error"] is None, result["error"]
        return Produced(topic, partition, result["offset"])

    def close(self) -> None:
        self._producer.flush(30.0)


# -- workers ----------------------------------------------------------------------------------


@dataclass
class ThreadWorker:
    """A Worker running in a thread of the test process."""

    worker: Worker
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self.errors

    def stop(self, timeout: float = 40.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker {self.worker.worker_id} did not stop"


def worker_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``streamjobs consume`` subprocess with the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            "STREAMJOBS_PARTITIONS": str(settings.partitions),
            "STREAMJOBS_RETRY_TIERS": ",".join(format_duration(t) for t in settings.retry_tiers),
            "STREAMJOBS_DELAY_TIERS": ",".join(format_duration(t) for t in settings.delay_tiers),
            "STREAMJOBS_MAX_ATTEMPTS": str(settings.max_attempts),
            "STREAMJOBS_COMMIT_INTERVAL": format_duration(settings.commit_interval),
            "STREAMJOBS_SHUTDOWN_GRACE": format_duration(settings.shutdown_grace),
            "STREAMJOBS_HEARTBEAT_INTERVAL": format_duration(settings.heartbeat_interval),
            "STREAMJOBS_KAFKA": json.dumps({"session.timeout.ms": 6000}),
            # `consume` installs an OTLP exporter; with no collector here its shutdown would
            # retry exports for ~10 s after every SIGTERM
            "OTEL_SDK_DISABLED": "true",
        }
    )
    return env


class WorkerProcesses:
    """``streamjobs consume`` subprocesses, each stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._procs: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(
        self, settings: Settings, registry: str, *extra: str, concurrency: int = 1
    ) -> subprocess.Popen[bytes]:
        log = (self._logs / f"worker-{len(self._procs)}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "streamjobs.cli",
            "consume",
            registry,
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--concurrency",
            str(concurrency),
            *extra,
        ]
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=worker_env(settings), stdout=log, stderr=log
        )
        self._procs.append((proc, log))
        return proc

    def started(self) -> list[subprocess.Popen[bytes]]:
        return [proc for proc, _ in self._procs]

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        for candidate, log in self._procs:
            if candidate is proc:
                log.flush()
                return Path(log.name).read_text(errors="replace")
        return ""

    def all_logs(self) -> str:
        return "".join(self.log_of(proc) for proc, _ in self._procs)

    def stop_all(self) -> None:
        for proc, log in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10.0)
            log.close()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def make_settings(kafka_bootstrap: str, unique_prefix: str) -> Callable[..., Settings]:
    """Settings with overrides; every call gets its own prefix (topics and group)."""
    counter = itertools.count()

    def make(**overrides: Any) -> Settings:
        return build_settings(kafka_bootstrap, f"{unique_prefix}-{next(counter)}", **overrides)

    return make


@pytest.fixture
def settings(kafka_bootstrap: str, unique_prefix: str) -> Settings:
    """The test's queue: 3 partitions, retry tiers 300ms/600ms, delay tiers 500ms/1s/2s."""
    return build_settings(kafka_bootstrap, unique_prefix)


@pytest.fixture
def worker(request: pytest.FixtureRequest) -> Iterator[Callable[..., ThreadWorker]]:
    """Start Workers in threads; each is stopped and joined at teardown, and must not have raised.

    Uses the ``settings`` fixture unless given other settings. Returns once the worker has been
    assigned partitions, so a test's clock starts with a group member in place.
    """
    started: list[ThreadWorker] = []

    def start(
        registry: TaskRegistry,
        worker_settings: Settings | None = None,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> ThreadWorker:
        if worker_settings is None:
            worker_settings = request.getfixturevalue("settings")
        instance = Worker(worker_settings, registry, middleware=middleware)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                instance.run()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name=f"worker-{len(started)}", daemon=True)
        handle = ThreadWorker(instance, thread, errors)
        started.append(handle)
        thread.start()
        assert instance.assigned.wait(30.0), "worker got no partitions within 30 s"
        return handle

    yield start
    for handle in started:
        handle.stop()
    for handle in started:
        assert not handle.errors, f"Worker.run() raised: {handle.errors!r}"


@pytest.fixture
def worker_process(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def producer(settings: Settings) -> Iterator[Producer]:
    with Producer(settings) as submitting:
        yield submitting


@pytest.fixture
def raw_producer(settings: Settings) -> Iterator[RawProducer]:
    raw = RawProducer(settings)
    yield raw
    raw.close()


# -- a local Jaeger, and a worker exporting its spans to it -----------------------------------


JAEGER_REGISTRY = "tests.integration.jaeger_tasks:registry"


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJaeger]:
    """A Jaeger of this module's own, stopped by PID at the end."""
    instance = LocalJaeger(tmp_path_factory.mktemp("jaeger"))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def traced_worker(tmp_path: Path) -> Iterator[Callable[[Settings, LocalJaeger, str], Path]]:
    """Start ``streamjobs consume`` exporting to a Jaeger; stopped by PID at teardown.

    Unlike the ``worker_process`` fixture this leaves the OpenTelemetry SDK enabled, and makes
    its batch processor export every 100 ms instead of every 5 s.
    """
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, jaeger: LocalJaeger, service: str) -> Path:
        env = worker_env(settings)
        env.pop("OTEL_SDK_DISABLED", None)
        env["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        command = [sys.executable, "-m", "streamjobs.cli", "consume", JAEGER_REGISTRY]
        command += ["--bootstrap-servers", settings.bootstrap_servers]
        command += ["--topic-prefix", settings.topic_prefix]
        command += ["--otlp-endpoint", jaeger.otlp_http_endpoint, "--service-name", service]
        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            started.append(
                subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
            )
        return log

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)
        assert proc.returncode == 0, f"consume exited with {proc.returncode}"


# -- observing a group ----------------------------------------------------------------------------


@dataclass
class Membership:
    """Rebalance callbacks each Worker received, with the partitions they carried."""

    events: list[tuple[str, str, frozenset[tuple[str, int]]]] = field(default_factory=list)

    def of(self, worker: Worker, kind: str) -> list[frozenset[tuple[str, int]]]:
        return [parts for wid, k, parts in self.events if wid == worker.worker_id and k == kind]


@pytest.fixture
def membership(monkeypatch: pytest.MonkeyPatch) -> Membership:
    """Record every non-empty assign/revoke/lost callback of the Workers this test starts."""
    log = Membership()
    for kind in ("assign", "revoke", "lost"):
        original = getattr(Worker, f"_on_{kind}")

        def recorded(
            self: Worker,
            partitions: list[Any],
            _kind: str = kind,
            _f: Any = original,
        ) -> None:
            if partitions:
                parts = frozenset((p.topic, p.partition) for p in partitions)
                log.events.append((self.worker_id, _kind, parts))
            _f(self, partitions)

        monkeypatch.setattr(Worker, f"_on_{kind}", recorded)
    return log


def all_succeeded(settings: Settings, task_ids: list[str]) -> dict[str, StatusView] | None:
    views = statuses(settings)
    found = {t: views.get(t) for t in task_ids}
    if all(v is not None and v.state is TaskState.SUCCEEDED for v in found.values()):
        return {t: v for t, v in found.items() if v is not None}
    return None
