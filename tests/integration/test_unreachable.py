"""A bootstrap address where nothing listens, or an unknown host: every command fails in
bounded time with one line naming the address and the cause, and no librdkafka lines;
``Producer.submit`` raises KafkaUnavailable the same way. Needs no broker (the point is that
there is none), but runs real librdkafka clients and subprocesses."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from streamjobs import Producer, Settings, Task, topics
from streamjobs.errors import KafkaUnavailable
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT_S = 1.0
# the connect timeout, plus the interpreter's start (slow on a shared machine); without the
# bound a dead address took 10 s of metadata timeout before any output
BOUND_S = CONNECT_TIMEOUT_S + 8.0
RAW_LIBRDKAFKA = re.compile(r"%\d\|\d+\.\d+\||rdkafka#|\bFAIL\b")
UNKNOWN_HOST = "nonexistent.invalid:9092"


class Ping(Task):
    n: int


@pytest.fixture
def dead_address() -> str:
    """127.0.0.1 and a port nothing listens on (the kernel's pick, released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def _run(address: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env |= {
        "STREAMJOBS_BOOTSTRAP_SERVERS": address,
        "STREAMJOBS_CONNECT_TIMEOUT": f"{CONNECT_TIMEOUT_S:g}s",
        "OTEL_SDK_DISABLED": "true",
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamjobs.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, time.monotonic() - started


def _lines(stderr: str) -> list[str]:
    # consume announces itself before it connects: that banner is ours, not librdkafka's
    return [line for line in stderr.splitlines() if line and not line.startswith("worker ")]


@pytest.mark.parametrize(
    "command",
    [
        ["status", "0123456789abcdef0123456789abcdef"],
        ["consume", "tests.fault.handlers:registry"],
        ["topics", "verify"],
        ["topics", "ensure"],
        ["inspect"],
    ],
    ids=" ".join,
)
def test_a_command_against_a_dead_address_prints_one_line_naming_it_within_the_bound(
    dead_address: str, command: list[str]
) -> None:
    done, elapsed = _run(dead_address, *command)

    assert done.returncode == 1, done.stderr
    assert _lines(done.stderr) == [
        f"error: cannot reach Kafka at {dead_address}: connection refused"
    ]
    assert not RAW_LIBRDKAFKA.search(done.stderr + done.stdout)
    assert elapsed < BOUND_S, f"{elapsed:.1f}s"


def test_an_unknown_host_is_named_as_a_name_resolution_failure() -> None:
    done, elapsed = _run(UNKNOWN_HOST, "status", "0123456789abcdef0123456789abcdef")

    assert done.returncode == 1, done.stderr
    [line] = _lines(done.stderr)
    assert line.startswith(f"error: cannot reach Kafka at {UNKNOWN_HOST}: unknown host"), line
    assert "name resolution failed" in line
    assert not RAW_LIBRDKAFKA.search(done.stderr)
    assert elapsed < BOUND_S, f"{elapsed:.1f}s"


@pytest.mark.parametrize(
    ("address", "cause"),
    [(None, "connection refused"), (UNKNOWN_HOST, "unknown host")],
    ids=["refused", "unknown host"],
)
def test_submit_to_an_unreachable_cluster_raises_kafka_unavailable_within_the_connect_timeout(
    dead_address: str, address: str | None, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    where = address or dead_address
    settings = Settings(bootstrap_servers=where, connect_timeout=f"{CONNECT_TIMEOUT_S:g}s")

    with caplog.at_level(logging.DEBUG, "streamjobs.kafka"), Producer(settings) as producer:
        for _ in range(2):  # and again: the client keeps trying, each submit gives up on its own
            started = time.monotonic()
            with pytest.raises(KafkaUnavailable) as raised:
                producer.submit(Ping(n=1))
            elapsed = time.monotonic() - started
            assert str(raised.value).startswith(f"cannot reach Kafka at {where}: {cause}")
            assert elapsed < CONNECT_TIMEOUT_S + 3.0, f"{elapsed:.1f}s"

    # the error reported the failures: they are not logged besides
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize(
    ("secured", "cause"),
    [
        ({"security_protocol": "SSL"}, "TLS handshake failed"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "nobody",
                "sasl_password": "wrong",
            },
            "authentication failed",
        ),
    ],
    ids=["TLS to a plaintext listener", "SASL to a plaintext listener"],
)
def test_a_broker_that_refuses_the_handshake_is_named_with_the_cause(
    kafka_bootstrap: str, secured: dict[str, str], cause: str
) -> None:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, connect_timeout=f"{CONNECT_TIMEOUT_S:g}s", **secured
    )
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as raised:
        topics.verify(settings)

    assert str(raised.value).startswith(f"cannot reach Kafka at {kafka_bootstrap}: {cause}")
    assert "wrong" not in str(raised.value)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 3.0
