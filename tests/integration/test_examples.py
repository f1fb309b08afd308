"""The framework examples in ``examples/`` run their own tests as a user would (``pytest`` in
the example's directory), against this session's broker and a real worker each."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("example", ["fastapi", "flask", "django"])
def test_framework_example_passes_its_own_tests_against_a_real_broker(
    example: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    for name in [k for k in os.environ if k.startswith("STREAMJOBS_")]:
        monkeypatch.delenv(name)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT / "examples" / example,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "failed" not in result.stdout
