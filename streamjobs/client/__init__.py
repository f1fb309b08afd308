"""The Kafka client: the one home of confluent-kafka, wrapped in our methods, types and errors.

Everything else in streamjobs talks to Kafka through this package and sees :class:`Record`,
:class:`TopicPartition` and :mod:`streamjobs.errors`, never a confluent-kafka object or
``KafkaException``. One concept per module:

- :mod:`~streamjobs.client.config`: Settings to librdkafka keys;
- :mod:`~streamjobs.client.guarded`: the keys a passthrough may not name;
- :mod:`~streamjobs.client.records`: the frozen types that cross the boundary;
- :mod:`~streamjobs.client.protocols`: the protocols the worker needs (a fake satisfies them);
- :mod:`~streamjobs.client.consumer`, :mod:`~streamjobs.client.producer`,
  :mod:`~streamjobs.client.admin`: the wrappers of confluent-kafka's three clients;
- :mod:`~streamjobs.client.failures`: ``KafkaException`` turned into our errors;
- :mod:`~streamjobs.client.reach`: whether a client reached the cluster, and the one-line
  error (address and cause) of one that cannot, within the connect timeout;
- :mod:`~streamjobs.client.logs`: librdkafka's log and error reports through Python logging
  (``streamjobs.kafka.consumer`` / ``.producer`` / ``.admin``), repeats summarised;
- :mod:`~streamjobs.client.clients`: building clients from Settings;
- :mod:`~streamjobs.client.reading`: catch-up reads of partitions to their current end;
- :mod:`~streamjobs.client.partitioner`: the Java-compatible key → partition hash.

Does not know about tasks, statuses or retries: it moves bytes.
"""

from __future__ import annotations

from streamjobs.client.admin import KafkaAdmin, cluster_ready
from streamjobs.client.clients import KafkaClients, new_admin, new_producer, new_reader
from streamjobs.client.config import transaction_timeout_s
from streamjobs.client.consumer import KafkaConsumer
from streamjobs.client.failures import metadata_too_large
from streamjobs.client.partitioner import murmur2_partition
from streamjobs.client.producer import (
    KafkaProducer,
    KafkaTransactionalProducer,
    produce_confirmed,
)
from streamjobs.client.protocols import Clients, Consumer, Producer, TransactionalProducer
from streamjobs.client.reading import committed_offsets, ranges_to_end, read_batches, read_range
from streamjobs.client.records import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    BareRecord,
    Delivery,
    GroupMetadata,
    OffsetRange,
    Position,
    Record,
    TopicPartition,
    TopicSpec,
)

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "BareRecord",
    "Clients",
    "Consumer",
    "Delivery",
    "GroupMetadata",
    "KafkaAdmin",
    "KafkaClients",
    "KafkaConsumer",
    "KafkaProducer",
    "KafkaTransactionalProducer",
    "OffsetRange",
    "Position",
    "Producer",
    "Record",
    "TopicPartition",
    "TopicSpec",
    "TransactionalProducer",
    "cluster_ready",
    "committed_offsets",
    "metadata_too_large",
    "murmur2_partition",
    "new_admin",
    "new_producer",
    "new_reader",
    "produce_confirmed",
    "ranges_to_end",
    "read_batches",
    "read_range",
    "transaction_timeout_s",
]
