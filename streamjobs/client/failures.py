"""confluent-kafka's errors turned into ours.

Owns reading a ``KafkaError`` (its name, text, and whether it is fatal or retriable) and the
:mod:`streamjobs.errors` each becomes. Every ``except KafkaException`` of streamjobs is in this
package. Does not decide what a caller does about a failure.
"""

from __future__ import annotations

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
