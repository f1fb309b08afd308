"""Fixtures for every test: a real Kafka broker, deadline waits, and per-test topic prefixes.

``kafka_bootstrap`` finds a broker in this order and fails (never skips) when none works:

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set: a broker someone else runs;
2. testcontainers' Kafka, only if a Docker engine answers a ping (the ``docker`` CLI alone
   proves nothing: machines here have the CLI and no engine);
3. :class:`streamjobs.broker.LocalBroker`: Apache Kafka from Maven Central as a child process in
   a temporary directory, stopped by PID when the session ends.
"""

from __future__ import annotations

import gc
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_for as _wait_for

# one OpenTelemetry provider for the session, routing spans per test (tests/tracing_support.py)
pytest_plugins = ("tests.tracing_support",)

# The Confluent image testcontainers drives; its KRaft mode needs a cp-kafka tag >= 7.0.
_CONTAINER_IMAGE = "confluentinc/cp-kafka:7.6.0"


def _docker_engine_answers() -> bool:
    try:
        import docker
    except ImportError:
        return False
    # docker-py leaves the socket of a failed connection unclosed; collect it here, quietly,
    # instead of letting it surface later as a ResourceWarning (an error in this suite).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()


def _kafka_container() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.15
        from testcontainers.kafka import KafkaContainer
    # Match the local broker: no auto-created topics, quick log compaction.
    return (
        KafkaContainer(_CONTAINER_IMAGE)
        .with_kraft()
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .with_env("KAFKA_LOG_CLEANER_BACKOFF_MS", "1000")
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker shared by the whole session."""
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if given:
        yield given
        return
    problems: list[str] = []
    if _docker_engine_answers():
        try:
            container = _kafka_container().start()
        except Exception as exc:
            problems.append(f"testcontainers Kafka ({_CONTAINER_IMAGE}) failed: {exc!r}")
        else:
            try:
                yield container.get_bootstrap_server()
            finally:
                container.stop()
            return
    yield from _local_broker(tmp_path_factory.mktemp("kafka"), problems)


def _local_broker(workdir: Path, problems: list[str]) -> Iterator[str]:
    # Imported here so that a unit-test run never depends on the broker module importing.
    from streamjobs.dev.kafka import LocalBroker

    broker = LocalBroker(workdir)
    try:
        broker.start()
    except Exception as exc:
        problems.append(f"local Kafka broker in {workdir} failed: {exc}")
        pytest.fail(
            "no Kafka broker for the tests; set KAFKA_BOOTSTRAP_SERVERS, start a Docker engine,"
            " or fix the local broker (needs java 17+ and mvn):\n" + "\n".join(problems),
            pytrace=False,
        )
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A 3-node replicated KRaft cluster (:class:`streamjobs.dev.cluster.LocalCluster`) for the
    module that asks for it: topics default to replication factor 3 and min.insync.replicas 2.

    Started only for the tests that request it (three JVMs are heavy) and stopped by PID when
    the module ends. Tests may kill, freeze and restart its nodes.
    """
    from streamjobs.dev.cluster import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), nodes=3)
    cluster.start(timeout=240.0)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """:func:`tests.support.wait_for`: poll a predicate until truthy or a deadline passes."""
    return _wait_for


@pytest.fixture
def unique_prefix() -> Iterator[str]:
    """A fresh topic prefix (``t`` + 8 hex digits) so each test has its own topics and group.

    On a broker given by ``KAFKA_BOOTSTRAP_SERVERS`` (someone else's, often reused run after
    run) the test's topics are deleted afterwards: a whole run leaves some 15,000 partitions,
    and a small dev broker runs out of heap holding them. The session's own broker is
    discarded whole instead.
    """
    prefix = f"t{uuid.uuid4().hex[:8]}"
    yield prefix
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if given:
        _delete_topics(given, prefix)


def _delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix``; a failure is a warning, since
    the test itself is over."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for future in admin.delete_topics(names, operation_timeout=30).values() if names else ():
            future.result(timeout=30)
    except KafkaException as exc:
        warnings.warn(f"topics {prefix}* not deleted: {exc}", stacklevel=1)
