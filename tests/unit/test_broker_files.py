"""The local broker's packaged copies of deploy/kafka/* stay identical to the files.

:mod:`streamjobs.dev.kafka` uses the files from a checkout and its string constants when installed,
so the two must never drift. No broker and no Maven here: only file contents and rendering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamjobs.dev import kafka as broker
from streamjobs.dev import kafka_jars as kafkadist

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kafka"


@pytest.mark.parametrize(
    ("name", "packaged"),
    [
        ("pom.xml", kafkadist.POM_XML),
        ("server.properties", kafkadist.SERVER_PROPERTIES),
        ("log4j2.properties", kafkadist.LOG4J2_PROPERTIES),
    ],
)
def test_packaged_copy_matches_deploy_file(name: str, packaged: str) -> None:
    assert (DEPLOY / name).read_text(encoding="utf-8") == packaged


def test_pom_resolves_the_broker_version_the_module_runs() -> None:
    assert f"<kafka.version>{kafkadist.KAFKA_VERSION}</kafka.version>" in kafkadist.POM_XML


def test_broker_config_is_single_node_and_never_auto_creates_topics() -> None:
    settings = dict(
        line.split("=", 1)
        for line in kafkadist.SERVER_PROPERTIES.splitlines()
        if line and not line.startswith("#")
    )
    assert settings["process.roles"] == "broker,controller"
    assert settings["auto.create.topics.enable"] == "false"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert settings[key] == "1", key
    assert settings["group.initial.rebalance.delay.ms"] == "0"


def test_instance_config_binds_and_advertises_loopback_only(tmp_path: Path) -> None:
    local = broker.LocalBroker(tmp_path, port=19092, controller_port=19093)

    rendered = local._properties()

    assert local.bootstrap == "127.0.0.1:19092"
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in rendered
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:19092," in rendered
    assert "controller.quorum.voters=1@127.0.0.1:19093" in rendered
    assert f"log.dirs={tmp_path / 'data'}" in rendered
    settings = [line for line in rendered.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "localhost" in line]
