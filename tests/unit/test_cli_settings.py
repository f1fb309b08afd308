"""``streamjobs settings``: the effective settings, secrets masked, bad ones refused early.

No broker: the command only builds and prints Settings.
"""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from streamjobs.cli.app import app


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("STREAMJOBS_"):
            monkeypatch.delenv(name)


def test_settings_command_masks_passthrough_values_and_the_sasl_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMJOBS_KAFKA", '{"ssl.key.password": "hunter2", "linger.ms": 5}')
    monkeypatch.setenv("STREAMJOBS_SASL_PASSWORD", "swordfish")
    monkeypatch.setenv("STREAMJOBS_SSL_KEY_PASSWORD", "opensesame")
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "swordfish" not in result.output
    assert "opensesame" not in result.output
    shown = json.loads(result.output)
    assert shown["kafka"] == {"ssl.key.password": "**********", "linger.ms": "**********"}


def test_settings_command_refuses_a_passthrough_that_switches_off_idempotence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMJOBS_KAFKA", '{"enable.idempotence": false}')
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 2
    assert "'enable.idempotence' is not allowed" in result.output
