"""streamjobs.settings: the frozen Settings, its environment mapping and duration parsing."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from pydantic import SecretStr, ValidationError

from streamjobs.errors import ConfigError
from streamjobs.settings import Settings, format_duration, parse_duration


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAMJOBS_* variable of the machine running the tests leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("STREAMJOBS_"):
            monkeypatch.delenv(name)


def test_defaults_need_no_environment() -> None:
    settings = Settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert (settings.topic_prefix, settings.queue) == ("streamjobs", "default")
    assert settings.retry_tiers == [timedelta(seconds=s) for s in (5, 30, 300, 1800)]
    assert settings.task_timeout is None


def test_environment_variables_with_the_streamjobs_prefix_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMJOBS_BOOTSTRAP_SERVERS", "10.1.2.3:9093")
    monkeypatch.setenv("STREAMJOBS_TOPIC_PREFIX", "acme")
    monkeypatch.setenv("STREAMJOBS_QUEUE", "emails")
    monkeypatch.setenv("STREAMJOBS_PARTITIONS", "12")
    monkeypatch.setenv("STREAMJOBS_EXACTLY_ONCE", "true")
    monkeypatch.setenv("STREAMJOBS_TASK_TIMEOUT", "90s")
    monkeypatch.setenv("STREAMJOBS_COMMIT_INTERVAL", "250ms")
    monkeypatch.setenv("STREAMJOBS_KAFKA", '{"linger.ms": 5, "client.id": "me"}')
    settings = Settings()
    assert settings.bootstrap_servers == "10.1.2.3:9093"
    assert (settings.topic_prefix, settings.queue, settings.partitions) == ("acme", "emails", 12)
    assert settings.exactly_once is True
    assert settings.task_timeout == timedelta(seconds=90)
    assert settings.commit_interval == timedelta(milliseconds=250)
    assert settings.kafka == {"linger.ms": 5, "client.id": "me"}


def test_tier_list_from_the_environment_is_parsed_and_sorted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMJOBS_RETRY_TIERS", "30m, 250ms,5s")
    monkeypatch.setenv("STREAMJOBS_DELAY_TIERS", "1h;10s")
    settings = Settings()
    assert settings.retry_tiers == [
        timedelta(milliseconds=250),
        timedelta(seconds=5),
        timedelta(minutes=30),
    ]
    assert settings.delay_tiers == [timedelta(seconds=10), timedelta(hours=1)]


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMJOBS_QUEUE", "from-env")
    assert Settings(queue="from-code").queue == "from-code"


def test_bad_duration_in_a_tier_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a duration: '5 parsecs'"):
        Settings(retry_tiers="5s,5 parsecs")


@pytest.mark.parametrize("text", ["inf", "nan", "1e400", "99999999999d", "-5s", ""])
def test_unusable_duration_text_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_bad_single_duration_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Settings(max_future="soon")


@pytest.mark.parametrize(
    "tiers", ["0s,5s", "-5,5s", "5s,5s", "5s,5000ms", "0.4ms,5s", "1s,1.0001s"]
)
def test_zero_negative_duplicate_or_colliding_tiers_are_rejected(tiers: str) -> None:
    with pytest.raises(ConfigError, match="positive and distinct"):
        Settings(retry_tiers=tiers)


def test_empty_tier_list_is_rejected() -> None:
    with pytest.raises(ValidationError, match="retry_tiers must not be empty"):
        Settings(retry_tiers="")
    with pytest.raises(ValidationError, match="delay_tiers must not be empty"):
        Settings(delay_tiers=[])


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.queue = "other"  # type: ignore[misc]


def test_unknown_setting_is_rejected() -> None:
    with pytest.raises(ValidationError, match="queu"):
        Settings(queu="typo")  # type: ignore[call-arg]


def test_group_defaults_to_prefix_queue_workers_and_group_id_overrides_it() -> None:
    assert Settings(topic_prefix="acme", queue="emails").group == "acme.emails.workers"
    assert Settings(group_id="custom").group == "custom"


def test_sasl_password_is_a_secret_that_repr_and_dump_never_show() -> None:
    settings = Settings(sasl_username="svc", sasl_password="hunter2")
    assert isinstance(settings.sasl_password, SecretStr)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "hunter2" not in settings.model_dump_json()


def test_passthrough_values_are_never_shown_by_repr_or_json_dump() -> None:
    settings = Settings(kafka={"ssl.key.password": "s3cret", "linger.ms": 7})
    assert "s3cret" not in repr(settings)
    dumped = settings.model_dump_json()
    assert "s3cret" not in dumped
    assert '"ssl.key.password":"**********"' in dumped, "the key is shown, its value masked"
    assert settings.kafka["ssl.key.password"] == "s3cret", "the clients still get the value"


@pytest.mark.parametrize(
    "key",
    [
        "enable.idempotence",
        "acks",
        "request.required.acks",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "isolation.level",
        "transactional.id",
        "group.id",
        "enable.partition.eof",
        "partitioner",
        "auto.offset.reset",
        "bootstrap.servers",
    ],
)
def test_passthrough_naming_a_correctness_key_is_a_config_error_naming_it(key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' is not allowed: .+"):
        Settings(kafka={key: "x"})


def test_passthrough_guard_applies_to_the_environment_variable_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMJOBS_KAFKA", '{"enable.auto.commit": true}')
    with pytest.raises(ConfigError, match=r"'enable\.auto\.commit' is not allowed"):
        Settings()


@pytest.mark.parametrize("key", ["Enable.Idempotence", " acks", "ISOLATION.LEVEL"])
def test_passthrough_guard_is_not_fooled_by_case_or_spaces(key: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        Settings(kafka={key: "x"})


@pytest.mark.parametrize("key", ["max.in.flight.requests.per.connection", "max.in.flight"])
def test_more_than_five_in_flight_requests_is_refused_with_idempotence(key: str) -> None:
    assert Settings(kafka={key: 5}).kafka == {key: 5}
    with pytest.raises(ConfigError, match="at most 5 in flight"):
        Settings(kafka={key: 6})


@pytest.mark.parametrize("field", ["topic_prefix", "queue"])
@pytest.mark.parametrize("value", ["has space", "a/b", "", "trailing.", ".leading", "x" * 151])
def test_topic_name_parts_outside_kafka_characters_are_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match="not usable in a topic name"):
        Settings(**{field: value})


def test_dotted_prefix_with_dashes_and_underscores_is_accepted() -> None:
    assert Settings(topic_prefix="acme.prod-eu_1").topic_prefix == "acme.prod-eu_1"


def test_dlq_max_bytes_above_max_message_bytes_is_rejected() -> None:
    with pytest.raises(ValidationError, match="dlq_max_bytes"):
        Settings(max_message_bytes=10_000, dlq_max_bytes=20_000)


@pytest.mark.parametrize("text", ["", "none"])
def test_empty_or_none_task_timeout_means_no_timeout(text: str) -> None:
    assert Settings(task_timeout=text).task_timeout is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("5s", timedelta(seconds=5)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1.5s", timedelta(milliseconds=1500)),
        (" 10 s ", timedelta(seconds=10)),
        ("7", timedelta(seconds=7)),
        (3, timedelta(seconds=3)),
        (0.5, timedelta(milliseconds=500)),
    ],
)
def test_parse_duration_understands_units_and_plain_seconds(
    text: str | float, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_passes_a_timedelta_through() -> None:
    assert parse_duration(timedelta(minutes=3)) == timedelta(minutes=3)


@pytest.mark.parametrize("text", ["250ms", "5s", "30m", "2h", "1d"])
def test_format_duration_round_trips_parse_duration(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("delay", "text"),
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=120), "2h"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(hours=48), "2d"),
    ],
)
def test_format_duration_picks_the_largest_exact_unit(delay: timedelta, text: str) -> None:
    assert format_duration(delay) == text


def test_a_moment_is_an_iso_time_in_the_zone_given_for_naive_ones_or_a_duration_ago() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from streamjobs.settings import parse_moment

    plus_two = timezone(timedelta(hours=2))
    assert parse_moment("2026-01-02T03:04:05", naive=UTC) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert parse_moment("2026-01-02T03:04:05", naive=plus_two).utcoffset() == timedelta(hours=2)
    assert parse_moment("2026-01-02T03:04:05+02:00", naive=UTC).utcoffset() == timedelta(hours=2)
    assert parse_moment("2026-01-02T03:04:05", naive=None).tzinfo is not None  # local time
    ago = datetime.now(UTC) - parse_moment("90m", naive=UTC)
    assert timedelta(minutes=89) < ago < timedelta(minutes=91)
    with pytest.raises(ConfigError, match="not an ISO time or a duration: 'yesterday'"):
        parse_moment("yesterday", naive=UTC)
