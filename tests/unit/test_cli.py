"""The command line without a broker: its one error idiom, ``schemas export``, and that no
command but the dev ones loads development tooling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streamjobs import Task, TaskRegistry
from streamjobs.cli import app
from streamjobs.cli.options import ReportingGroup
from streamjobs.errors import ConfigError, TopicError
from streamjobs.tasktypes import TaskType

REPO = Path(__file__).resolve().parents[2]


class Greet(Task):
    name: str
    excited: bool = False


class Ship(Task):
    task_name = "shipping.Ship"
    to: str


registry = TaskRegistry()
registry.handler(Greet)(lambda task: None)
registry.handler(Ship)(lambda task: None)


def _invoke(*args: str, **env: str) -> Any:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("STREAMJOBS_")}
    return CliRunner().invoke(app, list(args), env={**clean, **env}, catch_exceptions=False)


def test_consume_help_loads_no_development_tooling() -> None:
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from streamjobs.cli import app\n"
        "result = CliRunner().invoke(app, ['consume', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in sys.modules if m.startswith('streamjobs.dev')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=False
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_streamjobs_error_from_any_command_is_one_error_line_and_exit_1() -> None:
    probe = typer.Typer(cls=ReportingGroup)

    @probe.command()
    def broken() -> None:
        raise TopicError("topic t.status: cleanup.policy=delete\nexpected compact")

    @probe.command()
    def misused() -> None:
        raise ConfigError("no such queue")

    failed = CliRunner().invoke(probe, ["broken"])
    unusable = CliRunner().invoke(probe, ["misused"])

    assert failed.exit_code == 1
    assert failed.stderr == "error: topic t.status: cleanup.policy=delete; expected compact\n"
    assert failed.stdout == ""
    assert unusable.exit_code == 2
    assert unusable.stderr == "error: no such queue\n"


def test_a_registry_spec_that_does_not_load_exits_2_with_one_error_line() -> None:
    malformed = _invoke("schemas", "export", "no-colon")
    missing = _invoke("schemas", "export", "tests.unit.test_cli:nothing_here")

    assert malformed.exit_code == 2
    assert malformed.stderr == "error: expected MODULE:REGISTRY, got 'no-colon'\n"
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: cannot load tests.unit.test_cli:nothing_here")
    assert missing.stderr.count("\n") == 1


def test_bad_settings_exit_2_naming_the_field_but_not_its_value() -> None:
    result = _invoke("settings", STREAMJOBS_CONCURRENCY="not-a-number")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: bad settings: concurrency: ")
    assert result.stderr.count("\n") == 1
    assert "not-a-number" not in result.stderr


def test_schemas_export_writes_one_deterministic_avsc_per_task_type(tmp_path: Path) -> None:
    first = _invoke("schemas", "export", "tests.unit.test_cli:registry", "--out", str(tmp_path))
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = _invoke("schemas", "export", "tests.unit.test_cli:registry", "--out", str(tmp_path))

    assert first.exit_code == 0, first.output
    assert again.exit_code == 0, again.output
    assert sorted(written) == ["Greet.avsc", "shipping.Ship.avsc"]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written
    greet = json.loads(written["Greet.avsc"])
    assert greet == TaskType(Greet, "Greet").codec.schema
    assert written["Greet.avsc"].decode() == json.dumps(greet, indent=2, sort_keys=True) + "\n"
    assert first.stdout.splitlines() == [
        str(tmp_path / "Greet.avsc"),
        str(tmp_path / "shipping.Ship.avsc"),
    ]


@pytest.mark.parametrize("group", ["dev-broker", "dev-jaeger"])
def test_dev_commands_are_listed_with_a_status_command(group: str) -> None:
    result = _invoke(group, "--help")

    assert result.exit_code == 0, result.output
    assert "status" in result.stdout
