"""confluent-kafka's errors turned into ours.

Owns reading a ``KafkaError`` (its name, text, and whether it is fatal or retriable) and the
:mod:`streamjobs.errors` each becomes. Every ``except KafkaException`` of streamjobs is in this
package. Does not decide what a caller does about a failure.
"""

from __future__ import annotations

import re
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from streamjobs.errors import KafkaUnavailable


def describe(error: Any) -> str:
    """``NAME: description`` of a KafkaError (or of anything else librdkafka reported)."""
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return str(error)


def error_of(exc: KafkaException) -> Any:
    """The KafkaError a KafkaException carries (confluent-kafka puts it in ``args[0]``)."""
    return exc.args[0] if exc.args else None


def unavailable(exc: KafkaException, what: str = "Kafka request failed") -> KafkaUnavailable:
    return KafkaUnavailable(f"{what}: {describe(error_of(exc))}")


def is_fatal(exc: KafkaException) -> bool:
    error = error_of(exc)
    return isinstance(error, KafkaError) and bool(error.fatal())


def is_retriable(exc: KafkaException) -> bool:
    error = error_of(exc)
    return isinstance(error, KafkaError) and bool(error.retriable())


def code_of(exc: KafkaException) -> int | None:
    error = error_of(exc)
    return int(error.code()) if isinstance(error, KafkaError) else None


def text_of(exc: KafkaException) -> str:
    """The description alone (no error name) of what a KafkaException carries."""
    error = error_of(exc)
    return str(error.str()) if isinstance(error, KafkaError) else str(error)


def metadata_too_large(error: str | None) -> bool:
    """Whether a refused commit's ``error`` (``NAME: description``) blames the size of its
    metadata (the broker's ``offset.metadata.max.bytes``)."""
    name = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE).name()
    return error is not None and error.startswith(f"{name}:")


# librdkafka's connection failures (error_cb), each as the cause a user can act on
_CAUSES = {
    KafkaError._SSL: "TLS handshake failed",
    KafkaError._AUTHENTICATION: "authentication failed",
}
_TRANSPORT_CAUSES = (
    ("refused", "connection refused"),
    ("timed out", "connection timed out"),
    ("reset", "connection reset"),
)
#: the errors of a request that got no answer: the cluster may be unreachable
NO_ANSWER = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN})


def connection_cause(error: Any) -> str | None:
    """What a connection failure of librdkafka's error_cb means (None: not a connection
    failure). ``_ALL_BROKERS_DOWN`` says only that: a more specific cause comes with it."""
    if not isinstance(error, KafkaError):
        return None
    code = error.code()
    detail = failure_text(str(error.str()))
    if code == KafkaError._RESOLVE:  # "Failed to resolve 'h:9092': Name or service not known"
        return f"unknown host (name resolution failed: {detail.rpartition(': ')[2]})"
    if code in _CAUSES:
        return f"{_CAUSES[code]}: {detail}"
    if code == KafkaError._TRANSPORT:
        lowered = detail.lower()
        if "ssl" in lowered:  # the TLS session failed before Kafka answered: librdkafka reports
            # "SSL handshake failed: ..." or "Disconnected: SSL connection closed by peer"
            return f"{_CAUSES[KafkaError._SSL]}: {detail}"
        return next((c for word, c in _TRANSPORT_CAUSES if word in lowered), detail)
    if code == KafkaError._ALL_BROKERS_DOWN:
        return "all brokers down"
    return None


def failure_text(text: str) -> str:
    """librdkafka's failure text without the broker prefix and the state suffix:
    ``h:9092/bootstrap: Connect to ipv4#... failed: Connection refused (after 0ms in state
    CONNECT)`` → ``Connect to ipv4#... failed: Connection refused``."""
    head, sep, rest = text.partition(": ")
    if sep and "/" in head and " " not in head:  # "<host:port>/<id>: ..."
        text = rest
    return _STATE_SUFFIX.sub("", text).strip()


_STATE_SUFFIX = re.compile(
    r"\s*\(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) suppressed)?\)"
)
