"""The local Jaeger's configuration and module boundaries, without building or starting it.

Starting, readiness and stopping by PID are tested against the real binary in
``tests/integration/test_jaeger.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streamjobs.dev import jaeger
from streamjobs.dev import jaeger_build as jaegerdist
from streamjobs.dev import processes as localproc

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "jaeger" / "config.yaml"


def _endpoints(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "endpoint" and isinstance(v, str)]
        return found + [e for v in node.values() for e in _endpoints(v)]
    if isinstance(node, list):
        return [e for v in node for e in _endpoints(v)]
    return []


def test_packaged_config_matches_deploy_file() -> None:
    assert CONFIG.read_text(encoding="utf-8") == jaeger.CONFIG_YAML


def test_every_listener_binds_loopback_on_a_port_the_module_can_set() -> None:
    config = yaml.safe_load(jaeger.CONFIG_YAML)
    endpoints = _endpoints(config)
    pattern = re.compile(r"^127\.0\.0\.1:\$\{env:(STREAMJOBS_JAEGER_\w+_PORT):-(\d+)\}$")
    matches = [pattern.match(e) for e in endpoints]

    assert all(matches), endpoints
    defaults = {m.group(1): m.group(2) for m in matches if m}
    assert defaults == jaeger.JaegerPorts().env()


def test_config_keeps_traces_in_memory_and_jaeger_quiet() -> None:
    config = yaml.safe_load(jaeger.CONFIG_YAML)
    assert config["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    assert "memory" in config["extensions"]["jaeger_storage"]["backends"]["memory_store"]
    # self-tracing would export to 127.0.0.1:4317 and stall every shutdown for 10 s
    assert config["extensions"]["jaeger_query"]["enable_tracing"] is False
    assert config["service"]["telemetry"]["metrics"]["level"] == "none"
    assert config["service"]["telemetry"]["traces"]["level"] == "none"


def test_free_ports_are_four_distinct_ports() -> None:
    ports = jaeger.JaegerPorts.free()
    values = [int(v) for v in ports.env().values()]
    assert len(set(values)) == 4
    assert ports.query_url == f"http://127.0.0.1:{ports.query_http}"
    assert ports.otlp_http_endpoint == f"http://127.0.0.1:{ports.otlp_http}"


def test_binary_is_cached_per_module_version_outside_the_repo(tmp_path: Path) -> None:
    path = jaeger.binary_path(tmp_path)
    assert path == tmp_path.resolve() / "jaeger" / jaeger.JAEGER_MODULE_VERSION / "jaeger"
    assert REPO not in jaeger.binary_path().parents


@pytest.mark.parametrize("module", [jaeger, jaegerdist, localproc], ids=lambda m: m.__name__)
def test_the_modules_import_neither_kafka_nor_opentelemetry(module: ModuleType) -> None:
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    imported = {
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    }
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    ours = {name for name in imported if name.startswith("streamjobs")}
    assert ours <= {"streamjobs.errors", "streamjobs.dev.jaeger_build", "streamjobs.dev.processes"}
    others = {name.split(".")[0] for name in imported - ours} - {"__future__"}
    assert others <= set(sys.stdlib_module_names), others - set(sys.stdlib_module_names)
