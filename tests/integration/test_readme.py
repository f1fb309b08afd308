"""The README's ``tasks.py`` and ``service.py``, extracted from README.md as written, run against a
real broker with ``streamjobs consume tasks:registry`` in the user's project directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamjobs import Settings
from tests.integration.conftest import REPO_ROOT, worker_env

pytestmark = pytest.mark.integration


def readme_example(first_line: str) -> str:
    """The README's fenced Python block that starts with ``first_line``."""
    readme = (REPO_ROOT / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"README.md has no python block starting {first_line!r}")


def test_readme_tasks_and_service_examples_run_as_written(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "tasks.py").write_text(readme_example("# tasks.py"))
    (tmp_path / "service.py").write_text(readme_example("# service.py"))
    env = {
        **worker_env(settings),
        "STREAMJOBS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "STREAMJOBS_TOPIC_PREFIX": settings.topic_prefix,
    }
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    cli = [sys.executable, "-m", "streamjobs.cli"]
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*cli, "consume", "tasks:registry"],
        cwd=tmp_path,
        env=env,
        stdout=worker_log,
        stderr=worker_log,
    )
    try:
        service = subprocess.run(
            [sys.executable, "service.py"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert service.returncode == 0, service.stderr + (tmp_path / "worker.log").read_text()
        welcome, reminder = service.stdout.splitlines()
        assert welcome.startswith("welcome: ")
        assert welcome.endswith("{'sent_to': 'ada@example.com'}")
        later_id = reminder.removeprefix("reminder: ")
        status = subprocess.run(
            [*cli, "status", later_id],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "state: scheduled" in status.stdout
        assert "due: " in status.stdout
        assert "(in 4 min)" in status.stdout or "(in 5 min)" in status.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20.0)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10.0)
        worker_log.close()
