"""Building clients from Settings: the :class:`KafkaClients` factory and its shortcuts.

Owns turning one :class:`~streamjobs.settings.Settings` into configured consumer, reader,
producer, transactional producer and admin instances (keys from :mod:`streamjobs.client.config`).
Code that should run against a fake takes a :class:`~streamjobs.client.protocols.Clients` instead
of building its own. Does not read or write records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamjobs.client import config
from streamjobs.client.admin import KafkaAdmin
from streamjobs.client.consumer import KafkaConsumer
from streamjobs.client.guarded import Value
from streamjobs.client.producer import KafkaProducer, KafkaTransactionalProducer
from streamjobs.client.protocols import OnCommit
from streamjobs.client.reach import Reach

if TYPE_CHECKING:
    from streamjobs.settings import Settings


class KafkaClients:
    """The real clients of one Settings; satisfies :class:`~streamjobs.client.protocols.Clients`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def worker_consumer(self, on_commit: OnCommit) -> KafkaConsumer:
        """A member of the settings' worker group; nothing is committed unless told."""
        return KafkaConsumer(config.worker_config(self.settings), on_commit, self._reach())

    def consumer(self, group: str) -> KafkaConsumer:
        """A consumer of ``group`` that never subscribes (committed offsets of a group)."""
        return KafkaConsumer(config.consumer_config(self.settings, group), reach=self._reach())

    def group_reader(self) -> KafkaConsumer:
        """A consumer of the settings' worker group that never joins it: the group's committed
        offsets and their metadata, read outside the members' rebalance callbacks."""
        return self.consumer(self.settings.group)

    def reader(self) -> KafkaConsumer:
        """A consumer for reading by assignment (status lookups, replay, dlq): never commits."""
        return KafkaConsumer(config.reader_config(self.settings), reach=self._reach())

    def producer(self, **overrides: Value) -> KafkaProducer:
        """An idempotent producer with ``acks=all``; ``overrides`` tune it (``linger.ms``)."""
        return KafkaProducer(config.producer_config(self.settings, **overrides), self._reach())

    def transactional_producer(self, transactional_id: str) -> KafkaTransactionalProducer:
        """A producer whose transactions are initialised (fencing older ones of the same id)."""
        return KafkaTransactionalProducer(
            config.transactional_config(self.settings, transactional_id), self._reach()
        )

    def admin(self) -> KafkaAdmin:
        return KafkaAdmin(config.admin_config(self.settings), self._reach())

    def _reach(self) -> Reach:
        """Each client its own: what one client reached says nothing of another's."""
        timeout = self.settings.connect_timeout.total_seconds()
        return Reach(self.settings.bootstrap_servers, timeout)


def new_producer(settings: Settings, **overrides: Value) -> KafkaProducer:
    return KafkaClients(settings).producer(**overrides)


def new_reader(settings: Settings) -> KafkaConsumer:
    return KafkaClients(settings).reader()


def new_admin(settings: Settings) -> KafkaAdmin:
    return KafkaClients(settings).admin()
