"""The pytest plugin: fixtures for testing code that submits and handles streamjobs tasks.

Loaded automatically once streamjobs is installed (the ``pytest11`` entry point); disable with
``-p no:streamjobs``. Every fixture name starts with ``streamjobs_`` so it never shadows a
project's own fixtures:

* ``streamjobs_bootstrap`` (session): a broker's bootstrap servers, from the
  ``KAFKA_BOOTSTRAP_SERVERS`` environment variable, else a local single-node Kafka started for
  the session (:mod:`streamjobs.dev.kafka`, needs Java 17+ and Maven; imported only then);
* ``streamjobs_settings``: Settings for a fresh queue of this test (its own topic prefix and
  group, topics created; deleted afterwards on a broker given by the environment);
* ``streamjobs_producer``: a :class:`streamjobs.Producer` on those settings, closed afterwards;
* ``streamjobs_worker``: ``streamjobs_worker(registry)`` starts a real Worker in a thread and
  returns a :class:`~streamjobs.testing.running.RunningWorker` (``run_until_idle()``); stopped
  afterwards, and the test fails if the worker raised;
* ``streamjobs_inline``: ``streamjobs_inline(registry)`` is an
  :class:`~streamjobs.testing.inline.InlineProducer`: no broker, every task through the real
  Avro encoding and run at once.

Does not read the environment anywhere else, nor touch a broker unless a broker fixture is used.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from streamjobs import client, topics
from streamjobs.errors import StreamJobsError
from streamjobs.producer import Producer
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings
from streamjobs.testing.inline import InlineProducer
from streamjobs.testing.running import RunningWorker

_ENV = "KAFKA_BOOTSTRAP_SERVERS"


@pytest.fixture(scope="session")
def streamjobs_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real broker for the session (see the module docstring)."""
    given = os.environ.get(_ENV, "").strip()
    if given:
        yield given
        return
    from streamjobs.dev.kafka import LocalBroker  # development tooling: only when needed

    broker = LocalBroker(Path(tmp_path_factory.mktemp("streamjobs-kafka")))
    try:
        broker.start()
    except Exception as exc:
        pytest.fail(f"no Kafka broker: set {_ENV}, or install Java 17+ and Maven ({exc})")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def streamjobs_settings(streamjobs_bootstrap: str) -> Iterator[Settings]:
    """Settings of a queue only this test uses, its topics created."""
    settings = Settings(
        bootstrap_servers=streamjobs_bootstrap,
        topic_prefix=f"sj{uuid.uuid4().hex[:8]}",
        commit_interval=timedelta(milliseconds=50),
    )
    topics.ensure(settings)
    yield settings
    if os.environ.get(_ENV, "").strip():  # someone else's broker: leave no topics behind
        _delete_topics(settings)


@pytest.fixture
def streamjobs_producer(streamjobs_settings: Settings) -> Iterator[Producer]:
    with Producer(streamjobs_settings) as producer:
        yield producer


@pytest.fixture
def streamjobs_worker(
    streamjobs_settings: Settings,
) -> Iterator[Callable[..., RunningWorker]]:
    """``streamjobs_worker(registry, settings=None, middleware=None)``: a started worker."""
    started: list[RunningWorker] = []

    def start(
        registry: TaskRegistry, settings: Settings | None = None, **kwargs: Any
    ) -> RunningWorker:
        running = RunningWorker(settings or streamjobs_settings, registry, **kwargs)
        started.append(running)
        return running.start()

    yield start
    errors: list[BaseException] = []
    for running in started:
        try:
            running.stop()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def streamjobs_inline() -> Callable[..., InlineProducer]:
    """``streamjobs_inline(registry, settings=None)``: run tasks inline, no broker."""
    return InlineProducer


def _delete_topics(settings: Settings) -> None:
    admin = client.new_admin(settings)
    try:
        names = [t for t in admin.topic_partitions() if t.startswith(f"{settings.topic_prefix}.")]
        if names:
            admin.delete_topics(names)
    except StreamJobsError:
        pass  # the test is over; a leftover topic is not its failure
