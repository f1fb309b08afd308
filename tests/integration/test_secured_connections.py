"""SASL/SCRAM over TLS: every client connects with settings only; bad credentials fail fast.

A broker of its own (:class:`streamjobs.dev.secured.SecuredBroker`) listens with ``SASL_SSL``
(SCRAM-SHA-512) next to its plaintext listener; its certificate is signed by a CA this module
makes with ``openssl``, and its SCRAM user is created when its storage is formatted. The
producer, a ``streamjobs consume`` subprocess and the CLI are given nothing but ``STREAMJOBS_*``
settings (``security_protocol``, ``sasl_*``, ``ssl_ca_location``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from streamjobs import Producer, Settings, TaskState, statusreads, topics
from streamjobs.dev.secured import MECHANISM, SecuredBroker, make_certificates
from streamjobs.errors import KafkaUnavailable
from tests.fault.handlers import Sleepy
from tests.integration.conftest import REPO_ROOT
from tests.support import wait_for

pytestmark = [pytest.mark.integration]

USER = "streamjobs-app"
PASSWORD = secrets.token_urlsafe(16)
REGISTRY = "tests.fault.handlers:registry"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    workdir = tmp_path_factory.mktemp("secured")
    certificates = make_certificates(workdir / "tls", secrets.token_urlsafe(12))
    broker = SecuredBroker(workdir / "broker", certificates, {USER: PASSWORD})
    broker.start(timeout=180.0)
    try:
        yield broker
    finally:
        broker.stop()


def secure_env(broker: SecuredBroker, prefix: str, password: str = PASSWORD) -> dict[str, str]:
    """Settings for a subprocess: only the environment, nothing on the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMJOBS_")}
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "OTEL_SDK_DISABLED": "true",
            "STREAMJOBS_BOOTSTRAP_SERVERS": broker.secure_bootstrap,
            "STREAMJOBS_TOPIC_PREFIX": prefix,
            "STREAMJOBS_PARTITIONS": "3",
            "STREAMJOBS_SECURITY_PROTOCOL": "SASL_SSL",
            "STREAMJOBS_SASL_MECHANISM": MECHANISM,
            "STREAMJOBS_SASL_USERNAME": USER,
            "STREAMJOBS_SASL_PASSWORD": password,
            "STREAMJOBS_SSL_CA_LOCATION": str(broker.certificates.ca_pem),
        }
    )
    return env


def secure_settings(broker: SecuredBroker, prefix: str, password: str = PASSWORD) -> Settings:
    return Settings(
        bootstrap_servers=broker.secure_bootstrap,
        topic_prefix=prefix,
        partitions=3,
        security_protocol="SASL_SSL",
        sasl_mechanism=MECHANISM,
        sasl_username=USER,
        sasl_password=SecretStr(password),
        ssl_ca_location=str(broker.certificates.ca_pem),
    )


def status_of(settings: Settings, task_id: str) -> TaskState | None:
    view = statusreads.latest(settings, task_id)
    return None if view is None else view.state


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "streamjobs.cli", *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_producer_worker_and_cli_connect_over_tls_with_scram_from_settings_only(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = secure_env(secured, prefix)
    ensured = cli(env, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    settings = secure_settings(secured, prefix)
    with Producer(settings) as producer:
        handle = producer.submit(Sleepy(key="k", seq=7), key="k")

    log = (tmp_path / "worker.log").open("w+b")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamjobs.cli", "consume", REGISTRY],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(
            lambda: status_of(settings, handle.task_id) is TaskState.SUCCEEDED,
            60.0,
            interval=0.5,
            message="the task to succeed",
        )
    finally:
        worker.terminate()
        worker.wait(30.0)
        log.close()
    view = statusreads.latest(settings, handle.task_id)
    assert view is not None
    assert view.result == 7
    shown = cli(env, "status", handle.task_id)
    assert shown.returncode == 0, shown.stderr
    assert "succeeded" in shown.stdout
    settings_shown = cli(env, "settings")
    for output in (
        (tmp_path / "worker.log").read_text(),
        ensured.stdout + ensured.stderr,
        shown.stdout + shown.stderr,
        settings_shown.stdout + settings_shown.stderr,
    ):
        assert PASSWORD not in output


def test_a_wrong_password_fails_fast_with_an_error_naming_authentication(
    secured: SecuredBroker,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    wrong = secure_settings(secured, prefix, password="not-the-password")
    began = time.monotonic()
    with pytest.raises(KafkaUnavailable, match="authentication failed") as caught:
        topics.ensure(wrong)
    assert time.monotonic() - began < 8.0
    assert "invalid credentials" in str(caught.value)

    began = time.monotonic()
    worker = cli(secure_env(secured, prefix, "not-the-password"), "consume", REGISTRY)
    assert worker.returncode != 0
    assert time.monotonic() - began < 30.0
    assert "authentication failed" in worker.stderr
    assert "not-the-password" not in worker.stdout + worker.stderr
