"""deploy/prometheus/alerts.yml as Prometheus itself reads it: ``promtool check rules`` accepts
it and ``promtool test rules`` fires each alert on its case (alerts_test.yml).

Needs ``promtool`` (Debian's ``prometheus`` package; ``make system-deps`` installs it) but no
running Prometheus.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("promtool")
    if command is None:
        pytest.fail("promtool is not installed; run `make system-deps` (apt-get prometheus)")
    return subprocess.run(
        [command, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_pass_promtool_check() -> None:
    done = _promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_its_case_in_promtool_unit_tests() -> None:
    done = _promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_case() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((RULES / "alerts_test.yml").read_text())
    fired = {
        check["alertname"]
        for test in cases["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert alerts == fired
    assert {"StreamjobsBacklogGrowing", "StreamjobsWorkerDown", "StreamjobsFailureRatioHigh",
            "StreamjobsTaskRunningTooLong"} <= alerts  # fmt: skip


def test_prometheus_config_for_compose_passes_promtool_check() -> None:
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
