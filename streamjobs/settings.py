"""Settings: the one frozen configuration object, built at the edge and passed down.

Owns every knob (environment prefix ``STREAMJOBS_``) and its validation, including the refusal
of a librdkafka passthrough (``kafka``) that names a key our correctness depends on. Does not map
knobs to librdkafka keys (:mod:`streamjobs.client.config` does), read the environment anywhere
else, hold a global instance, or talk to Kafka.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamjobs.client import guarded
from streamjobs.errors import ConfigError
from streamjobs.rates import Rate, parse_rate

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

Ordering = Literal["non_blocking", "key_ordered"]
QueueOrder = Literal["strict", "weighted"]
_QUEUE_SPEC = re.compile(r"^\s*([^=\s]+)\s*(?:=\s*(\d+)\s*)?$")


def parse_duration(text: str | float | int | timedelta) -> timedelta:
    """Parse ``"250ms"``, ``"5s"``, ``"30m"``, ``"2h"``, ``"1d"`` or a number of seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int | float):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    try:
        if match is None:
            return timedelta(seconds=float(text))
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except (ValueError, OverflowError):  # "abc", "nan", "inf", "99999999999d"
        raise ConfigError(f"not a duration: {text!r} (use e.g. 250ms, 5s, 30m, 2h)") from None


def parse_moment(text: str, *, naive: tzinfo | None) -> datetime:
    """An ISO 8601 time, or a duration ago (``"90m"``: :func:`parse_duration`), as an aware
    datetime. A time without a zone is in ``naive`` (None: this machine's local time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ConfigError:
            raise ConfigError(f"not an ISO time or a duration: {text!r}") from None
    if moment.tzinfo is not None:
        return moment
    return moment.astimezone() if naive is None else moment.replace(tzinfo=naive)


def format_duration(delay: timedelta) -> str:
    """The shortest exact spelling of ``delay`` used in topic names: ``5s``, ``30m``, ``250ms``."""
    ms = round(delay.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _duration_list(value: Any) -> list[timedelta]:
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"expected a list of durations, got {value!r}")
    tiers = sorted(parse_duration(v) for v in value)
    # each tier is a topic named by format_duration: 1.0001s and 1s (or 0.4ms) would collide
    names = {format_duration(t) for t in tiers}
    if any(t < timedelta(milliseconds=1) for t in tiers) or len(names) != len(tiers):
        raise ConfigError(f"tier delays must be positive and distinct to the ms: {value!r}")
    return tiers


def _queue_list(value: Any) -> list[str]:
    """``"critical=6,default=3,low=1"`` or a list of such items, as ``name`` / ``name=weight``."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(f"expected a list of queues, got {value!r}")
    specs = []
    for item in value:
        match = _QUEUE_SPEC.match(str(item))
        if match is None:
            raise ConfigError(f"not a queue: {item!r} (use NAME or NAME=WEIGHT, e.g. low=1)")
        name, weight = match.group(1), match.group(2)
        specs.append(name if weight is None else f"{name}={int(weight)}")
    names = [spec.partition("=")[0] for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a queue is named twice: {value!r}")
    return specs


class Settings(BaseSettings):
    """Everything a producer or worker needs. Immutable; build once at startup."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMJOBS_", frozen=True, extra="forbid", validate_default=True
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    # a client that has never reached the cluster gives up after this (one line: the address
    # and the cause); afterwards requests wait their own timeouts
    connect_timeout: timedelta = Field(default=timedelta(seconds=5))
    topic_prefix: str = "streamjobs"
    queue: str = "default"
    # several queues served by one worker, highest priority first (``critical=6,default=3,low``);
    # when given, ``queue`` is the first of them (see streamjobs.worker.priorities)
    queues: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # strict: a queue is served only while every higher one has nothing ready; weighted: in
    # proportion to the weights when all have backlog. None: weighted if a weight is given
    queue_order: QueueOrder | None = None
    group_id: str | None = None
    group_instance_id: str | None = None
    group_protocol: Literal["consumer", "classic"] = "consumer"
    partitions: int = Field(default=6, ge=1, le=10_000)
    # None: derived from the broker count when topics are created (3 with at least 3 brokers,
    # else the broker count); -1: the broker's default.replication.factor
    replication_factor: int | None = Field(default=None, ge=-1)
    # None: the replication factor minus one, at least 1 (2 for 3 replicas, 1 on one broker)
    min_insync_replicas: int | None = Field(default=None, ge=1)

    max_attempts: int = Field(default=4, ge=1, le=1000)
    retry_tiers: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [timedelta(seconds=s) for s in (5, 30, 300, 1800)]
    )
    delay_tiers: Annotated[list[timedelta], NoDecode] = Field(
        default_factory=lambda: [timedelta(seconds=s) for s in (1, 10, 60, 600, 3600)]
    )
    ordering: Ordering = "non_blocking"
    max_future: timedelta = Field(default=timedelta(days=30))

    concurrency: int = Field(default=1, ge=1, le=10_000)
    max_in_flight: int = Field(default=1000, ge=1)
    # key_ordered only: tasks held back behind a retry of their key. At this many the worker
    # pauses its main-topic partitions (tiers keep flowing) until half of them are released;
    # parked tasks stay below max_parked + max_in_flight (see streamjobs.worker.intake)
    max_parked: int = Field(default=1000, ge=1)
    # task starts per period over the whole group, all task types: "50/s", "100/m", "500/h"
    queue_rate_limit: str | None = None
    task_timeout: timedelta | None = None
    # at least once: how long a finished task may wait for its (asynchronous, cheap) commit;
    # whatever finished in this window runs again if the worker is killed. Exactly once, where
    # each commit is a transaction, an unset interval means 200 ms (see commit_spacing)
    commit_interval: timedelta = timedelta(milliseconds=20)
    shutdown_grace: timedelta = timedelta(seconds=30)
    crash_limit: int = Field(default=3, ge=1)
    # how often `streamjobs consume` reports on <prefix>.workers (streamjobs.metrics.heartbeat)
    heartbeat_interval: timedelta = Field(
        default=timedelta(seconds=5), ge=timedelta(milliseconds=100)
    )
    exactly_once: bool = False

    max_message_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    dlq_max_bytes: int = Field(default=900_000, ge=1024)
    status_retention: timedelta = Field(default=timedelta(days=7))

    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS (security_protocol SSL or SASL_SSL): the CA that signed the brokers' certificates, and
    # a client certificate and key for mutual TLS; PEM files
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    # check that a broker's certificate names the host connected to (librdkafka's default)
    ssl_check_hostname: bool = True
    # the librdkafka passthrough for the long tail: guarded (see streamjobs.client.guarded), and
    # its values never shown (they may be secrets: ssl.key.password)
    kafka: dict[str, str | int | float | bool] = Field(default_factory=dict, repr=False)

    service_name: str = "streamjobs"
    otlp_endpoint: str | None = None
    # the standard OpenTelemetry variables also switch tracing on at the edge
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        exclude=True,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
    )
    jaeger_query_url: str = "http://127.0.0.1:16686"

    # the index (streamjobs.index) and the dashboard (streamjobs.dashboard)
    index_path: Path | None = None
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8765, ge=0, le=65535)
    dashboard_password: SecretStr | None = None

    @field_validator("queues", mode="before")
    @classmethod
    def _queues(cls, value: Any) -> list[str]:
        return _queue_list(value)

    @model_validator(mode="before")
    @classmethod
    def _first_queue(cls, data: Any) -> Any:
        """With several queues, ``queue`` (topics of ops commands, the default group) is the
        first: the highest priority."""
        if isinstance(data, dict) and data.get("queues"):
            specs = _queue_list(data["queues"])
            if specs:
                data = {**data, "queue": specs[0].partition("=")[0]}
        return data

    @field_validator("retry_tiers", "delay_tiers", mode="before")
    @classmethod
    def _tiers(cls, value: Any) -> list[timedelta]:
        return _duration_list(value)

    @field_validator(
        "max_future",
        "commit_interval",
        "shutdown_grace",
        "status_retention",
        "heartbeat_interval",
        "connect_timeout",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("task_timeout", mode="before")
    @classmethod
    def _optional_duration(cls, value: Any) -> timedelta | None:
        return None if value in (None, "", "none") else parse_duration(value)

    @field_validator("queue_rate_limit", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> str | None:
        if value in (None, "", "none"):
            return None
        return str(parse_rate(value))  # a ConfigError now, not in a worker later

    @field_validator("kafka")
    @classmethod
    def _passthrough(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        guarded.guard(value)  # a ConfigError naming the key, not a pydantic error
        return value

    @field_serializer("kafka", when_used="json")
    def _masked(self, value: dict[str, str | int | float | bool]) -> dict[str, str]:
        return guarded.masked(value)

    @field_serializer("retry_tiers", "delay_tiers", when_used="json")
    def _tiers_as_written(self, tiers: list[timedelta]) -> list[str]:
        # `streamjobs settings` shows 1s as 1s (the topic-name spelling), not ISO 8601's PT1S
        return [format_duration(t) for t in tiers]

    @field_serializer(
        "max_future",
        "commit_interval",
        "shutdown_grace",
        "status_retention",
        "task_timeout",
        "heartbeat_interval",
        "connect_timeout",
        when_used="json",
    )
    def _duration_as_written(self, delay: timedelta | None) -> str | None:
        return None if delay is None else format_duration(delay)

    @field_validator("topic_prefix", "queue")
    @classmethod
    def _topic_part(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", value) or len(value) > 150:
            raise ValueError(f"{value!r} is not usable in a topic name ([A-Za-z0-9._-])")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.retry_tiers:
            raise ValueError("retry_tiers must not be empty")
        if not self.delay_tiers:
            raise ValueError("delay_tiers must not be empty")
        if self.ordering == "key_ordered" and self.group_protocol != "consumer":
            raise ValueError(
                "ordering=key_ordered needs group_protocol=consumer (co-partitioned tiers)"
            )
        rf, min_isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and rf > 0 and min_isr is not None and min_isr > rf:
            raise ValueError(
                f"min_insync_replicas={min_isr} exceeds replication_factor={rf}: every write "
                "would be refused"
            )
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be positive, -1 or unset (auto)")
        if self.dlq_max_bytes > self.max_message_bytes:
            raise ValueError("dlq_max_bytes must not exceed max_message_bytes")
        self._check_queues()
        return self

    def _check_queues(self) -> None:
        for spec in self.queues:
            self._topic_part(spec.partition("=")[0])
        weighted = any("=" in spec for spec in self.queues)
        if weighted and self.queue_order == "strict":
            raise ValueError("queue weights (NAME=WEIGHT) need queue_order=weighted, not strict")
        if len(self.served_queues) > 1 and self.ordering == "key_ordered":
            raise ValueError("ordering=key_ordered serves one queue per worker, not several")
        if self.queues and not any(w for _, w in self.served_queues):
            raise ValueError("at least one queue needs a weight above 0")

    @property
    def commit_spacing(self) -> timedelta:
        """The time between a worker's commits: ``commit_interval``, or 200 ms under
        ``exactly_once`` when it was not set (a transaction per commit costs round trips)."""
        if self.exactly_once and "commit_interval" not in self.model_fields_set:
            return timedelta(milliseconds=200)
        return self.commit_interval

    @property
    def queue_rate(self) -> Rate | None:
        """``queue_rate_limit`` parsed, or None when the queue has no limit."""
        return None if self.queue_rate_limit is None else parse_rate(self.queue_rate_limit)

    @property
    def tracing_enabled(self) -> bool:
        """Whether ``streamjobs consume`` should install an SDK and export spans."""
        return bool(self.otlp_endpoint or self.otel_exporter_otlp_endpoint)

    @property
    def served_queues(self) -> tuple[tuple[str, int], ...]:
        """The queues a worker serves, highest priority first, each with its weight (1 when not
        given); just ``queue`` unless ``queues`` is set."""
        if not self.queues:
            return ((self.queue, 1),)
        pairs = (spec.partition("=") for spec in self.queues)
        return tuple((name, int(weight) if sep else 1) for name, sep, weight in pairs)

    @property
    def effective_queue_order(self) -> QueueOrder:
        """``queue_order``, or ``weighted`` when a weight was given and ``strict`` otherwise."""
        if self.queue_order is not None:
            return self.queue_order
        return "weighted" if any("=" in spec for spec in self.queues) else "strict"

    def for_queue(self, name: str) -> Settings:
        """These settings for one of the served queues alone (its topics, its records), in the
        same consumer group."""
        return self.model_copy(update={"queue": name, "queues": [], "group_id": self.group})

    @property
    def group(self) -> str:
        """The worker consumer group: ``group_id`` or ``<prefix>.<queue>.workers``."""
        return self.group_id or f"{self.topic_prefix}.{self.queue}.workers"
