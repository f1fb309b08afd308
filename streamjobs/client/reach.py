"""Reaching the cluster: what one client knows about its connection, and the one line it fails
with when it has none.

Owns :class:`Reach`: a client's bootstrap address and connect timeout, the last connection
failure librdkafka reported for it (through its ``error_cb``, see :mod:`streamjobs.client.logs`),
the quiet window in which those failures are the caller's to report rather than the log's, and
the KafkaUnavailable that names the address and the cause. Also :func:`contacted`: whether a
client ever had an answer from the cluster. Does not log, and does not decide when to give up
(the client wrappers bound their first requests with :meth:`Reach.bound`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaException

from streamjobs.client.failures import NO_ANSWER, code_of, unavailable
from streamjobs.errors import KafkaUnavailable

_ALL_DOWN = "all brokers down"
DEFAULT_CONNECT_TIMEOUT_S = 5.0
_REPORT_MARGIN_S = 1.0


class Reach:
    """One client's view of its cluster; ``clock`` is a monotonic clock in seconds."""

    def __init__(
        self,
        bootstrap: str,
        connect_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bootstrap = bootstrap
        self.connect_timeout = connect_timeout
        self.cause: str | None = None
        self._clock = clock
        # until then, connection failures are held back: a caller may still report them
        self._quiet_until = clock() + connect_timeout

    @classmethod
    def of(cls, config: Mapping[str, object]) -> Reach:
        """The reach of a client built from bare ``config``, with the default timeout."""
        return cls(str(config.get("bootstrap.servers", "")), DEFAULT_CONNECT_TIMEOUT_S)

    def failed(self, cause: str) -> None:
        """librdkafka reported a connection failure; "all brokers down" does not replace a
        more specific cause (it follows each of them)."""
        if cause != _ALL_DOWN or self.cause is None:
            self.cause = cause

    def holding(self) -> bool:
        """Whether a connection failure now is the caller's to report: within the connect
        timeout of the client's start, of a request that waits for a first answer (see
        :meth:`hold`), or of its last :meth:`unreachable` error."""
        return self._clock() < self._quiet_until

    def hold(self) -> None:
        """A request now waits for the cluster's first answer: it reports what fails meanwhile
        (a margin covers the report itself)."""
        until = self._clock() + self.connect_timeout + _REPORT_MARGIN_S
        self._quiet_until = max(self._quiet_until, until)

    def bound(self, timeout: float, client: Any) -> float:
        """``timeout`` for a request of ``client``, at most the connect timeout until the
        client has had an answer from the cluster."""
        if contacted(client):
            return timeout
        self.hold()
        return min(timeout, self.connect_timeout)

    def unreachable(self, serve: Callable[[], object]) -> KafkaUnavailable:
        """The error of a client that never reached the cluster. ``serve`` polls the client
        once, so that librdkafka's queued error reports (the cause) reach :meth:`failed`; the
        failures it logs meanwhile are held back, as this error reports them."""
        self.hold()
        serve()
        return KafkaUnavailable(self.message())

    def message(self) -> str:
        cause = self.cause or f"no answer within {self.connect_timeout:g}s"
        return f"cannot reach Kafka at {self.bootstrap}: {cause}"

    def error(
        self, exc: KafkaException, client: Any, what: str = "Kafka request failed"
    ) -> KafkaUnavailable:
        """Our error for a failed request of ``client``: the one-line :meth:`message` when it
        got no answer and the client never reached the cluster, else the request's error."""
        if code_of(exc) in NO_ANSWER and not contacted(client):
            return self.unreachable(lambda: client.poll(0))
        return unavailable(exc, what)


def contacted(client: Any) -> bool:
    """Whether ``client`` ever had an answer from the cluster: librdkafka keeps the cluster id
    of the first metadata response, and asking for it with timeout 0 does not block. Before
    that answer no record can have been sent (a record needs its partition's leader)."""
    try:
        return client.cluster_id(0) is not None
    except KafkaException:
        return False
