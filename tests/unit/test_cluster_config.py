"""The local replicated cluster's per-node configuration (pure: no broker started)."""

from __future__ import annotations

from streamjobs.dev.cluster import Quorum, cluster_properties


def _props(text: str) -> dict[str, str]:
    """Java's Properties semantics for our files: the last value of a repeated key wins."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


QUORUM = Quorum((9092, 9093, 9094), (19092, 19093, 19094), "abc")


def test_every_node_names_all_three_voters_and_its_own_id() -> None:
    for node_id in (1, 2, 3):
        props = _props(cluster_properties(QUORUM, node_id))
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.voters"] == (
            "1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094"
        )


def test_three_nodes_replicate_topics_three_ways_with_two_in_sync() -> None:
    props = _props(cluster_properties(QUORUM, 1))
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"


def test_the_cluster_lines_override_the_single_node_file() -> None:
    from streamjobs.dev.kafka_jars import SERVER_PROPERTIES

    props = _props(SERVER_PROPERTIES + cluster_properties(QUORUM, 2))
    assert props["node.id"] == "2"
    assert props["offsets.topic.replication.factor"] == "3"
    # the coordinators spread over the nodes: a partition each, not the single node's one
    assert props["offsets.topic.num.partitions"] == "3"
    assert props["transaction.state.log.num.partitions"] == "3"


def test_bootstrap_lists_every_node() -> None:
    assert QUORUM.bootstrap == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    assert QUORUM.size == 3
