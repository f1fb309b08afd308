"""streamjobs.client.config and .guarded: Settings mapped to librdkafka keys in one place,
and the keys a passthrough may not name.

No broker: the configurations are plain dicts.
"""

from __future__ import annotations

import pytest

from streamjobs.client import config, guarded
from streamjobs.errors import ConfigError
from streamjobs.settings import Settings


def test_security_settings_map_to_librdkafka_keys_on_every_client() -> None:
    settings = Settings(
        bootstrap_servers="b:9092",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="pw",
    )
    expected = {
        "bootstrap.servers": "b:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "pw",
    }
    for built in (
        config.admin_config(settings),
        config.producer_config(settings),
        config.reader_config(settings),
        config.worker_config(settings),
    ):
        assert expected.items() <= built.items()
    plain = config.common_config(Settings(bootstrap_servers="b:9092"))
    assert not {k for k in plain if k.startswith(("sasl.", "security."))}


def test_producer_is_idempotent_with_acks_all_and_the_java_partitioner() -> None:
    built = config.producer_config(Settings(max_message_bytes=2_000_000))
    assert built["enable.idempotence"] is True
    assert built["acks"] == "all"
    assert built["partitioner"] == "murmur2_random"
    assert built["message.max.bytes"] == 2_000_000


def test_consumers_store_and_commit_nothing_on_their_own_and_read_committed() -> None:
    for built in (config.worker_config(Settings()), config.reader_config(Settings())):
        assert built["enable.auto.commit"] is False
        assert built["enable.auto.offset.store"] is False
        assert built["isolation.level"] == "read_committed"
        assert built["auto.offset.reset"] == "earliest"
        assert built["enable.partition.eof"] is False


def test_worker_joins_the_settings_group_with_static_membership_when_an_id_is_set() -> None:
    built = config.worker_config(Settings(group_id="billing", group_instance_id="w-1"))
    assert (built["group.id"], built["group.instance.id"]) == ("billing", "w-1")
    assert "group.instance.id" not in config.worker_config(Settings())
    assert config.reader_config(Settings(group_id="billing"))["group.id"] != "billing"


def test_group_protocol_setting_picks_the_assignor() -> None:
    modern = config.worker_config(Settings(group_protocol="consumer"))
    assert (modern["group.protocol"], modern["group.remote.assignor"]) == ("consumer", "range")
    classic = config.worker_config(Settings(group_protocol="classic"))
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    assert "group.protocol" not in classic


def test_passthrough_long_tail_reaches_every_client_and_code_tuning_wins_over_it() -> None:
    settings = Settings(kafka={"client.id": "me", "linger.ms": 7, "fetch.wait.max.ms": 20})
    assert config.producer_config(settings)["client.id"] == "me"
    assert config.producer_config(settings)["linger.ms"] == 7
    assert config.producer_config(settings, **{"linger.ms": 2})["linger.ms"] == 2
    assert config.worker_config(settings)["fetch.wait.max.ms"] == 20
    assert config.admin_config(settings)["client.id"] == "me"


def test_broker_side_session_keys_are_dropped_under_the_consumer_protocol() -> None:
    settings = Settings(kafka={"session.timeout.ms": 6000})
    assert "session.timeout.ms" not in config.worker_config(settings)
    classic = Settings(group_protocol="classic", kafka={"session.timeout.ms": 6000})
    assert config.worker_config(classic)["session.timeout.ms"] == 6000


def test_transactions_time_out_after_ten_seconds_unless_the_passthrough_says_otherwise() -> None:
    built = config.transactional_config(Settings(), "g.w-1")
    assert (built["transactional.id"], built["transaction.timeout.ms"]) == ("g.w-1", 10_000)
    longer = Settings(kafka={"transaction.timeout.ms": 60_000})
    assert config.transactional_config(longer, "g.w-1")["transaction.timeout.ms"] == 60_000


@pytest.mark.parametrize("key", sorted(guarded.GUARDED))
def test_every_guarded_key_is_refused_with_its_reason(key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        guarded.guard({key: "x"})
    assert f"{key!r} is not allowed: {guarded.GUARDED[key]}" in str(raised.value)


def test_masked_passthrough_keeps_keys_and_hides_every_value() -> None:
    assert guarded.masked({"ssl.key.password": "s3cret", "linger.ms": 5}) == {
        "ssl.key.password": "**********",
        "linger.ms": "**********",
    }


def test_tls_settings_map_to_librdkafka_keys_and_only_when_set() -> None:
    settings = Settings(
        security_protocol="SASL_SSL",
        ssl_ca_location="/etc/ca.pem",
        ssl_certificate_location="/etc/client.pem",
        ssl_key_location="/etc/client.key",
        ssl_key_password="keypw",
        ssl_check_hostname=False,
    )
    built = config.worker_config(settings)
    assert {
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.certificate.location": "/etc/client.pem",
        "ssl.key.location": "/etc/client.key",
        "ssl.key.password": "keypw",
        "ssl.endpoint.identification.algorithm": "none",
    }.items() <= built.items()
    plain = config.common_config(Settings(bootstrap_servers="b:9092"))
    assert not {k for k in plain if k.startswith("ssl.")}


def test_the_transaction_budget_is_the_transaction_timeout_the_producer_is_given() -> None:
    settings = Settings()
    assert config.transaction_timeout_s(settings) == 10.0
    assert config.transactional_config(settings, "t")["transaction.timeout.ms"] == 10_000
    chosen = Settings(kafka={"transaction.timeout.ms": "25000"})
    assert config.transaction_timeout_s(chosen) == 25.0
    assert config.transactional_config(chosen, "t")["transaction.timeout.ms"] == "25000"
