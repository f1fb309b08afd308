"""The README's web-service and testing examples, extracted from README.md and run as written:
``api.py`` (AsyncProducer) against a real broker and a ``streamjobs consume`` worker, and
``test_welcome.py`` under a plain ``pytest`` in the user's project directory, where the
streamjobs plugin is loaded by its entry point alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamjobs import Settings
from tests.integration.conftest import worker_env
from tests.integration.test_readme import readme_example

pytestmark = pytest.mark.integration


def _project(settings: Settings, tmp_path: Path, *files: str) -> dict[str, str]:
    (tmp_path / "tasks.py").write_text(readme_example("# tasks.py"))
    for name in files:
        (tmp_path / name).write_text(readme_example(f"# {name}"))
    env = {
        **worker_env(settings),
        "STREAMJOBS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMJOBS_TOPIC_PREFIX": settings.topic_prefix,
    }
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def test_readme_asyncio_example_submits_and_awaits_results_as_written(
    settings: Settings, tmp_path: Path
) -> None:
    env = _project(settings, tmp_path, "api.py")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamjobs.cli", "consume", "tasks:registry"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        api = subprocess.run(
            [sys.executable, "api.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        log.close()
    assert api.returncode == 0, api.stderr + (tmp_path / "worker.log").read_text()
    sent = [{"sent_to": f"u{i}@example.com"} for i in range(3)]
    assert api.stdout.strip() == f"sent: {sent}"


def test_readme_test_example_passes_under_plain_pytest_with_the_plugin_from_its_entry_point(
    settings: Settings, tmp_path: Path
) -> None:
    env = _project(settings, tmp_path, "test_welcome.py")
    env["KAFKA_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_welcome.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
