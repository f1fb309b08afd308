"""The local KRaft broker: serves metadata, stops by PID, and ``up``/``down`` reuse one broker."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamjobs.client import cluster_ready
from streamjobs.dev.kafka import LocalBroker, default_cache_dir, down, running_pid, up

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _process_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def test_session_broker_serves_metadata(kafka_bootstrap: str) -> None:
    assert cluster_ready(kafka_bootstrap, timeout=10.0)


@pytest.mark.slow
def test_local_broker_stops_by_pid_and_frees_its_port(tmp_path: Path) -> None:
    broker = LocalBroker(tmp_path / "broker")
    assert broker.bootstrap == f"127.0.0.1:{broker.port}"
    assert broker.pid is None

    broker.start()
    try:
        pid = broker.pid
        assert pid is not None
        assert cluster_ready(broker.bootstrap, timeout=10.0)
    finally:
        broker.stop()

    assert broker.pid is None
    assert _process_gone(pid)
    assert not _accepts_connections(broker.port)
    assert "Kafka Server started" in (tmp_path / "broker" / "broker.log").read_text()


@pytest.fixture
def up_port() -> Iterator[int]:
    """A free port (never 9092) whose ``up`` broker is stopped and whose state is removed.

    The ``up`` tests use the default cache directory so that they share the Kafka classpath
    already resolved there instead of running Maven again.
    """
    port = _free_port()
    yield port
    down(port)
    shutil.rmtree(default_cache_dir() / f"broker-{port}", ignore_errors=True)


@pytest.mark.slow
def test_up_twice_reuses_the_running_broker_and_down_stops_it(up_port: int) -> None:
    bootstrap = up(up_port)
    first_pid = running_pid(up_port)
    assert bootstrap == f"127.0.0.1:{up_port}"
    assert first_pid is not None

    assert up(up_port) == bootstrap
    assert running_pid(up_port) == first_pid
    assert cluster_ready(bootstrap, timeout=10.0)

    assert down(up_port) is True
    assert _process_gone(first_pid)
    assert running_pid(up_port) is None
    assert not _accepts_connections(up_port)
    assert down(up_port) is False


@pytest.mark.slow
def test_up_after_down_keeps_the_data_directory(up_port: int) -> None:
    up(up_port)
    meta = default_cache_dir() / f"broker-{up_port}" / "data" / "meta.properties"
    cluster_id_line = next(
        line for line in meta.read_text().splitlines() if line.startswith("cluster.id=")
    )
    down(up_port)

    up(up_port)

    assert cluster_id_line in meta.read_text().splitlines()
    assert cluster_ready(f"127.0.0.1:{up_port}", timeout=10.0)
