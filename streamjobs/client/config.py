"""Settings to librdkafka keys: the one place that names them.

Owns the mapping from :class:`~streamjobs.settings.Settings` to each client's configuration
(bootstrap, security, SASL and TLS, message sizes, the group protocol, static membership, the
transactional id) and the values of the keys our correctness depends on (idempotence,
``acks=all``, manual offset store and commit, ``read_committed``, the Java-compatible
partitioner, ...), set after the passthrough. Does not build clients
(:mod:`streamjobs.client.clients`) nor refuse passthrough keys (:mod:`streamjobs.client.guarded`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamjobs.settings import Settings

from streamjobs.client.guarded import Value

Config = dict[str, Value]
_log = logging.getLogger(__name__)
_READER_GROUP = "streamjobs-reader"


def common_config(settings: Settings) -> Config:
    """Keys shared by every client: where the cluster is and how to authenticate, then the
    passthrough's long tail (already guarded by Settings)."""
    config: Config = {"bootstrap.servers": settings.bootstrap_servers}
    if settings.security_protocol:
        config["security.protocol"] = settings.security_protocol
    if settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
    if settings.sasl_username:
        config["sasl.username"] = settings.sasl_username
    if settings.sasl_password is not None:
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    config.update(_tls_config(settings))
    config.update(settings.kafka)
    return config


def _tls_config(settings: Settings) -> Config:
    """The TLS keys that are set (librdkafka's defaults otherwise)."""
    config: Config = {}
    paths = {
        "ssl.ca.location": settings.ssl_ca_location,
        "ssl.certificate.location": settings.ssl_certificate_location,
        "ssl.key.location": settings.ssl_key_location,
    }
    config.update({key: path for key, path in paths.items() if path})
    if settings.ssl_key_password is not None:
        config["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    if not settings.ssl_check_hostname:
        config["ssl.endpoint.identification.algorithm"] = "none"
    return config


def producer_config(settings: Settings, **overrides: Value) -> Config:
    """Producer keys. Idempotence is off by default in librdkafka: we always turn it on."""
    config = common_config(settings)
    # code-chosen tuning (a linger, a message timeout) wins over the passthrough
    config.update(overrides)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "message.max.bytes": settings.max_message_bytes,
            # the Java client's partitioner, so a Java producer and we agree on key -> partition
            "partitioner": "murmur2_random",
        }
    )
    config.setdefault("linger.ms", 0)  # a confirmed submit waits for its ack: no lingering
    config.setdefault("compression.type", "lz4")
    return config


#: a transaction spans one commit: if its worker dies, readers (read_committed) wait for it only
#: this long; the passthrough may set another
_TRANSACTION_TIMEOUT_MS = 10_000


def transactional_config(settings: Settings, transactional_id: str) -> Config:
    """An exactly-once worker's producer: its own transactional id, short transactions."""
    overrides: Config = {"transactional.id": transactional_id}
    if "transaction.timeout.ms" not in settings.kafka:
        overrides["transaction.timeout.ms"] = _TRANSACTION_TIMEOUT_MS
    return producer_config(settings, **overrides)


def transaction_timeout_s(settings: Settings) -> float:
    """How long the coordinator lets a transaction of :func:`transactional_config` stay open
    before aborting it (``transaction.timeout.ms``): waiting longer for its commit is futile."""
    return int(settings.kafka.get("transaction.timeout.ms", _TRANSACTION_TIMEOUT_MS)) / 1000


def consumer_config(settings: Settings, group: str) -> Config:
    """Consumer keys: nothing is stored or committed unless the worker says so."""
    config = common_config(settings)
    config.setdefault("fetch.wait.max.ms", 100)  # a resumed tier partition joins the next fetch
    config.setdefault("fetch.message.max.bytes", max(settings.max_message_bytes, 1_048_576))
    config.update(
        {
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": False,
            **_group_protocol(settings),
        }
    )
    if settings.group_protocol == "consumer":
        for key in _BROKER_SIDE_KEYS & config.keys():
            if key not in _warned:
                _warned.add(key)
                _log.warning("%s is set on the broker with group.protocol=consumer; ignored", key)
            del config[key]
    return config


def worker_config(settings: Settings) -> Config:
    """The worker's group member: the settings' group, static membership when an id is set."""
    config = consumer_config(settings, settings.group)
    if settings.group_instance_id:
        config["group.instance.id"] = settings.group_instance_id
    return config


def reader_config(settings: Settings) -> Config:
    """A consumer reading by assignment (status lookups, replay, dlq): never commits."""
    return consumer_config(settings, _READER_GROUP)


def admin_config(settings: Settings) -> Config:
    return common_config(settings)


# KIP-848 moved these to the broker (group.consumer.session.timeout.ms, ...)
_warned: set[str] = set()  # warn once per process, not once per client
_BROKER_SIDE_KEYS = {"session.timeout.ms", "heartbeat.interval.ms"}


def _group_protocol(settings: Settings) -> Config:
    """The group protocol. ``consumer`` (KIP-848, Kafka 4+): incremental rebalances decided by
    the broker's ``range`` assignor, which balances every topic on its own and gives a worker the
    same partition numbers of the main and tier topics. ``classic``: cooperative-sticky, which
    balances partition counts over all topics, so one worker may get every main-topic partition
    and another only tiers."""
    if settings.group_protocol == "consumer":
        return {"group.protocol": "consumer", "group.remote.assignor": "range"}
    return {"partition.assignment.strategy": "cooperative-sticky"}
