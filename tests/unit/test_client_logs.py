"""librdkafka's log and error reports through Python logging, without a broker: the level
mapping, the repeat summariser, the sink's hold-back while a caller reports the failure, and the
connection causes that make a client's one-line error."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError

from streamjobs import Settings
from streamjobs.client.failures import connection_cause, failure_text
from streamjobs.client.logs import LogSink, Repeats, callbacks, python_level, syslog_threshold
from streamjobs.client.reach import Reach

REFUSED = (
    "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
    "(after 0ms in state CONNECT)"
)
RESOLVE = (
    "nonexistent.invalid:9092/bootstrap: Failed to resolve 'nonexistent.invalid:9092': "
    "Name or service not known (after 2ms in state CONNECT, 3 identical error(s) suppressed)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _sink(clock: Clock, every: float = 30.0, timeout: float = 5.0) -> tuple[LogSink, Reach]:
    reach = Reach("127.0.0.1:1", timeout, clock=clock)
    return LogSink(logging.getLogger("test.kafka"), reach, every=every, clock=clock), reach


def _fail(sink: LogSink, text: str = REFUSED) -> None:
    # what confluent-kafka calls: the syslog level already mapped (3 -> ERROR)
    sink.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", f"[thrd:x]: {text}")


@pytest.mark.parametrize(
    ("level", "syslog"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.CRITICAL + 1, 0),
    ],
)
def test_librdkafka_is_asked_only_for_the_lines_the_python_logger_lets_through(
    level: int, syslog: int
) -> None:
    assert syslog_threshold(level) == syslog


def test_a_connection_failure_is_a_warning_and_other_lines_keep_their_level() -> None:
    assert python_level("FAIL", logging.ERROR) == logging.WARNING
    assert python_level("FAIL", logging.DEBUG) == logging.DEBUG
    assert python_level("TXNERR", logging.ERROR) == logging.ERROR
    assert python_level("CONFWARN", logging.WARNING, "x is deprecated") == logging.WARNING


def test_a_passthrough_key_of_another_client_kind_is_only_debug() -> None:
    text = (
        "Configuration property session.timeout.ms is a consumer property and will be "
        "ignored by this producer instance"
    )
    assert python_level("CONFWARN", logging.WARNING, text) == logging.DEBUG


def test_each_client_logs_to_its_kind_at_the_level_its_logger_allows() -> None:
    reach = Reach("h:9092", 5.0)
    logger = logging.getLogger("streamjobs.kafka.admin")
    old = logger.level
    try:
        logger.setLevel(logging.DEBUG)
        hooks = callbacks("admin", reach)
    finally:
        logger.setLevel(old)
    assert hooks["logger"].logger is logger
    assert hooks["log_level"] == 7
    assert hooks["error_cb"] == hooks["logger"].on_error


def test_a_repeat_is_held_back_and_counted_until_the_interval_has_passed() -> None:
    repeats = Repeats(every=10.0)
    assert repeats.admit("a", 0.0) == 0
    assert repeats.admit("a", 1.0) is None
    assert repeats.admit("a", 9.9) is None
    assert repeats.admit("b", 9.9) == 0  # another key is counted on its own
    assert repeats.admit("a", 10.0) == 2
    assert repeats.admit("a", 10.5) is None
    assert repeats.admit("a", 25.0) == 1


def test_connection_failures_within_the_connect_timeout_are_held_back_for_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink, _ = _sink(clock)
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        _fail(sink)
        clock.now += 4.9
        _fail(sink)
    assert caplog.records == []


def test_later_the_first_failure_per_broker_warns_and_repeats_are_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink, _ = _sink(clock, every=30.0)
    clock.now += 6.0
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        for _ in range(50):
            _fail(sink)
            clock.now += 0.1
        _fail(sink, RESOLVE)  # another broker: its own first warning
        clock.now += 30.0
        _fail(sink)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, f"FAIL: {REFUSED}"),
        (logging.WARNING, f"FAIL: {RESOLVE}"),
        (logging.WARNING, f"FAIL: {REFUSED} (49 more like it since it was last logged)"),
    ]


def test_a_reported_unreachable_error_holds_back_the_failures_it_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink, reach = _sink(clock)
    clock.now += 60.0
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        error = reach.unreachable(lambda: _fail(sink))
        _fail(sink)
    assert caplog.records == []
    assert str(error) == "cannot reach Kafka at 127.0.0.1:1: no answer within 5s"


def test_debug_lines_pass_through_unsummarised_without_the_thread_prefix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink, _ = _sink(clock)
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        for _ in range(3):
            sink.log(logging.DEBUG, "%s [%s] %s", "BROKER", "rdkafka#consumer-1", "[thrd:app]: x")
    assert [r.getMessage() for r in caplog.records] == ["BROKER: x"] * 3


def test_error_reports_of_connection_failures_become_the_cause_and_are_not_logged_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    sink, reach = _sink(clock)
    clock.now += 60.0
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        sink.on_error(KafkaError(KafkaError._TRANSPORT, REFUSED))
        sink.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert caplog.records == []
    assert reach.message() == "cannot reach Kafka at 127.0.0.1:1: connection refused"


def test_other_error_reports_are_warnings_and_fatal_ones_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink, _ = _sink(Clock())
    with caplog.at_level(logging.DEBUG, "test.kafka"):
        sink.on_error(KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))
        sink.on_error(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]
    assert caplog.records[0].getMessage() == "_MSG_TIMED_OUT: timed out"


@pytest.mark.parametrize(
    ("code", "text", "cause"),
    [
        (KafkaError._TRANSPORT, REFUSED, "connection refused"),
        (
            KafkaError._RESOLVE,
            RESOLVE,
            "unknown host (name resolution failed: Name or service not known)",
        ),
        (
            KafkaError._SSL,
            "h:9093/bootstrap: SSL handshake failed: certificate verify failed "
            "(after 5ms in state SSL_HANDSHAKE)",
            "TLS handshake failed: SSL handshake failed: certificate verify failed",
        ),
        (
            KafkaError._TRANSPORT,
            "ssl://h:9093/bootstrap: Disconnected: SSL connection closed by peer "
            "(after 3ms in state SSL_HANDSHAKE)",
            "TLS handshake failed: Disconnected: SSL connection closed by peer",
        ),
        (
            KafkaError._TRANSPORT,
            "ssl://h:9093/bootstrap: SSL handshake failed: Disconnected: connecting to a "
            "PLAINTEXT broker listener? (after 2ms in state SSL_HANDSHAKE)",
            "TLS handshake failed: SSL handshake failed: Disconnected: connecting to a "
            "PLAINTEXT broker listener?",
        ),
        (
            KafkaError._AUTHENTICATION,
            "sasl_ssl://h:9093/bootstrap: SASL authentication error: Authentication failed "
            "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
            "authentication failed: SASL authentication error: Authentication failed during "
            "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512",
        ),
        (
            KafkaError._TRANSPORT,
            "h:9092/bootstrap: Connection setup timed out in state CONNECT (after 30029ms in "
            "state CONNECT)",
            "connection timed out",
        ),
        (KafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down", "all brokers down"),
        (KafkaError._MSG_TIMED_OUT, "Message timed out", None),
    ],
)
def test_librdkafka_connection_errors_name_their_cause(
    code: int, text: str, cause: str | None
) -> None:
    assert connection_cause(KafkaError(code, text)) == cause


def test_a_later_all_brokers_down_keeps_the_specific_cause() -> None:
    reach = Reach("h:9092", 5.0)
    reach.failed("all brokers down")
    assert reach.cause == "all brokers down"
    reach.failed("connection refused")
    reach.failed("all brokers down")
    assert reach.cause == "connection refused"


def test_failure_text_drops_the_broker_and_the_state_suffix() -> None:
    assert failure_text(REFUSED) == "Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    assert failure_text("1/1 brokers are down") == "1/1 brokers are down"


def test_the_connect_timeout_is_a_setting_written_like_the_other_durations() -> None:
    assert Settings().connect_timeout.total_seconds() == 5
    settings = Settings(connect_timeout="1500ms")
    assert settings.connect_timeout.total_seconds() == 1.5
    assert settings.model_dump(mode="json")["connect_timeout"] == "1500ms"
