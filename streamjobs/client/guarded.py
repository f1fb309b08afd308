"""The librdkafka keys nobody may change: a passthrough naming one is a ConfigError.

Owns :data:`GUARDED` (each key our correctness depends on, and why), :func:`guard`, which
Settings calls while it validates its passthrough (``Settings.kafka``, env ``STREAMJOBS_KAFKA``),
and :func:`masked`, the passthrough as it may be shown. Imports nothing but the errors, so
Settings can use it. Does not set any key (:mod:`streamjobs.client.config` does).
"""

from __future__ import annotations

from collections.abc import Mapping

from streamjobs.errors import ConfigError

Value = str | int | float | bool
_IDEMPOTENT_MAX_IN_FLIGHT = 5

_IDEMPOTENCE = "the producer is always idempotent: a retried send may not duplicate or reorder"
_ACKS = "every write is confirmed by all in-sync replicas (acks=all) before a task counts as done"
_COMMIT = "offsets are committed only after a task's outcome is durable (commit after success)"
_STORE = "offsets are stored only by the worker, once a task's outcome is durable"
_PROTOCOL = "set by group_protocol (STREAMJOBS_GROUP_PROTOCOL): the handover needs it"

# keys our correctness depends on, and why: a passthrough naming one is a ConfigError
GUARDED: Mapping[str, str] = {
    "enable.idempotence": _IDEMPOTENCE,
    "enable.gapless.guarantee": _IDEMPOTENCE,
    "acks": _ACKS,
    "request.required.acks": _ACKS,
    "enable.auto.commit": _COMMIT,
    "auto.commit.enable": _COMMIT,
    "enable.auto.offset.store": _STORE,
    "isolation.level": "workers and readers see only committed transactions (read_committed)",
    "transactional.id": "each exactly_once worker gets its own, from its group and instance id",
    "group.id": "the worker's group comes from group_id (STREAMJOBS_GROUP_ID)",
    "group.instance.id": "static membership comes from group_instance_id",
    "group.protocol": _PROTOCOL,
    "group.remote.assignor": _PROTOCOL + " (range keeps main and tier partitions together)",
    "partition.assignment.strategy": _PROTOCOL + " (rebalances must be incremental)",
    "partitioner": "key -> partition must match the Java client's (murmur2_random)",
    "auto.offset.reset": "a new group must start at the earliest record, or queued tasks are lost",
    "enable.partition.eof": "the worker's poll loop does not expect end-of-partition events",
    "allow.auto.create.topics": "topics are created by `streamjobs topics ensure`, co-partitioned",
    "bootstrap.servers": "set by bootstrap_servers (STREAMJOBS_BOOTSTRAP_SERVERS)",
    "security.protocol": "set by security_protocol (STREAMJOBS_SECURITY_PROTOCOL)",
    "sasl.mechanism": "set by sasl_mechanism (STREAMJOBS_SASL_MECHANISM)",
    "sasl.mechanisms": "set by sasl_mechanism (STREAMJOBS_SASL_MECHANISM)",
    "sasl.username": "set by sasl_username (STREAMJOBS_SASL_USERNAME)",
    "sasl.password": "set by sasl_password (STREAMJOBS_SASL_PASSWORD), kept secret",
    "message.max.bytes": "set by max_message_bytes: submits are size-checked against it",
}
# limits rather than fixed values: only a value beyond them is refused
_MAX_IN_FLIGHT = ("max.in.flight.requests.per.connection", "max.in.flight")


def guard(passthrough: Mapping[str, Value]) -> None:
    """Refuse passthrough keys that would switch off what our correctness depends on.

    Raises ConfigError naming the key and why (librdkafka matches keys exactly; so do we, after
    trimming and lower-casing, so a near-miss spelling cannot slip through).
    """
    for raw, value in passthrough.items():
        key = raw.strip().lower()
        why = GUARDED.get(key)
        if why is not None:
            raise ConfigError(f"kafka passthrough key {raw!r} is not allowed: {why}")
        if key in _MAX_IN_FLIGHT and _above(value, _IDEMPOTENT_MAX_IN_FLIGHT):
            raise ConfigError(
                f"kafka passthrough key {raw!r}={value!r} is not allowed: the idempotent "
                f"producer keeps order only with at most {_IDEMPOTENT_MAX_IN_FLIGHT} in flight"
            )


def _above(value: Value, limit: int) -> bool:
    try:
        return int(value) > limit
    except (TypeError, ValueError):
        return True  # not a number: librdkafka would refuse it later, with less context


def masked(passthrough: Mapping[str, Value]) -> dict[str, str]:
    """The passthrough for display: keys only (its values may be secrets: ssl.key.password)."""
    return dict.fromkeys(passthrough, "**********")
