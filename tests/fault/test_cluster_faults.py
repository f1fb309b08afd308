"""Brokers of a 3-node cluster killed, frozen and restarted while two workers run a queue.

The cluster (``kafka_cluster``: three KRaft nodes, topics at replication factor 3 with
``min.insync.replicas`` 2) is real Java processes; so are the two ``streamjobs consume``
workers. A submitter thread submits a few thousand tasks one ``submit()`` at a time over a dozen
keys while a fault hits the broker that matters for the scenario:

(a) SIGKILL of the leader of a task partition, restarted later;
(b) SIGKILL of the leader of a status partition;
(c) SIGSTOP of a broker for 20 s, then SIGCONT;
(d) ``--exactly-once``: SIGKILL of the transaction coordinator's broker while a transaction is
    open; the first worker's id is chosen so that this broker coordinates the group too, the
    case in which librdkafka's send_offsets_to_transaction can hang past its timeout
    (confluentinc/librdkafka#5456, #5511): the worker gives such a call up and replaces its
    producer (client.producer.bounded), and the test prints how often that happened.

For each: no task is lost (every ``submit()`` that returned a handle ends ``succeeded``; one that
raised may or may not have run), each key's tasks first ran in submit order, and (d)
``read_committed`` readers see each task's outcome exactly once. Each test prints lost,
duplicated runs and the recovery time (the longest pause in task runs after the fault, and the
longest ``submit()``).

The exactly-once worker follows Jepsen's advice for a transactional producer whose commit
outcome is unknown (Jepsen, Kafka 3.x analysis): never assume it committed or aborted; retry the
commit to learn its outcome, abort, or replace the producer (fencing the old transaction), and
rewind the consumer to the committed offsets (streamjobs.worker.outcomes, worker.handover).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, ElectionType, KafkaException, TopicPartition
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka.admin import AdminClient

from streamjobs import Producer, Settings, TaskState
from streamjobs.dev.cluster import LocalCluster
from streamjobs.errors import StreamJobsError
from streamjobs.status import decode_status
from streamjobs.topics import queue_topics
from tests.fault.cluster_handlers import Step
from tests.integration.conftest import WorkerProcesses, build_settings, group_assignment, statuses
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

REGISTRY = "tests.fault.cluster_handlers:registry"
TASKS = 1500
KEYS = 12
FAULT_AFTER = 300  # submitted tasks before the fault hits
FREEZE_S = 20.0
RESTART_TIMEOUT_S = 180.0


# -- the cluster ---------------------------------------------------------------------------------


@pytest.fixture
def cluster(kafka_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The module's cluster, healed after each test: frozen nodes resumed, dead ones restarted."""
    yield kafka_cluster
    for node in kafka_cluster.nodes:
        if node.running:
            os.kill(node.pid or 0, signal.SIGCONT)
    dead = [node for node in kafka_cluster.nodes if not node.running]
    for node in dead:
        node.kill()  # reap it
        node.start(RESTART_TIMEOUT_S)
    wait_for(lambda: _under_replicated(kafka_cluster.bootstrap) == 0, 60.0, interval=0.5)


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def leader_of(bootstrap: str, topic: str, partition: int = 0) -> int:
    """The node id leading ``topic``'s ``partition`` now (node ids are 1..3)."""
    leader = _leaders(bootstrap, topic)[partition]
    assert leader > 0, f"{topic}[{partition}] has no leader"
    return leader


def _leaders(bootstrap: str, topic: str) -> list[int]:
    """The node leading each partition of ``topic`` now, by partition (-1: none), from one
    metadata request."""
    partitions = _admin(bootstrap).list_topics(topic, timeout=10.0).topics[topic].partitions
    return [partitions[p].leader for p in range(len(partitions))]


def _coordinator_partition(key: str, partitions: int) -> int:
    """The coordinator topic's partition of ``key`` (a transactional id in
    ``__transaction_state``, a group in ``__consumer_offsets``): ``abs(javaHashCode(key)) %
    partitions``, as Kafka's coordinators have it."""
    h = 0
    for unit in key.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % partitions


def _coordinator_of(bootstrap: str, internal_topic: str, key: str) -> int:
    """The node coordinating ``key`` now: the leader of its partition of ``internal_topic``."""
    leaders = _leaders(bootstrap, internal_topic)
    return leaders[_coordinator_partition(key, len(leaders))]


def _coordinators_balanced(bootstrap: str) -> None:
    """Both coordinator topics exist, each partition led by its preferred node (earlier
    scenarios' kills moved leaders): their partitions' leaders cover every node again."""
    admin = _admin(bootstrap)
    producer = KafkaProducer(
        {"bootstrap.servers": bootstrap, "transactional.id": "test-probe", "log_level": 0}
    )
    producer.init_transactions(60.0)  # creates __transaction_state
    wait_for(
        lambda: _consumer_offsets_created(admin),
        60.0,
        interval=1.0,
        message="__consumer_offsets to be created",
    )
    topics = admin.list_topics(timeout=10.0).topics
    internal = ("__consumer_offsets", "__transaction_state")
    partitions = [TopicPartition(name, p) for name in internal for p in topics[name].partitions]
    admin.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=30.0)  # errors: done
    wait_for(
        lambda: {leader for name in internal for leader in _leaders(bootstrap, name)} == {1, 2, 3},
        30.0,
        interval=0.5,
        message="the coordinators' partitions to be led by every node",
    )


def _consumer_offsets_created(admin: AdminClient) -> bool:
    """Asks for a group's coordinator, which creates ``__consumer_offsets`` (the answer may time
    out while its partitions load), and whether the topic is there now."""
    with contextlib.suppress(TimeoutError, KafkaException):
        admin.describe_consumer_groups(["test-probe"])["test-probe"].result(timeout=5.0)
    return "__consumer_offsets" in admin.list_topics(timeout=10.0).topics


def _ids_sharing_the_group_coordinator(settings: Settings) -> list[str]:
    """Static ids of two workers, the first one's transactions coordinated by the node that
    also coordinates the group: killing it takes both coordinators at once, the case in which
    librdkafka's send_offsets_to_transaction hangs (confluentinc/librdkafka#5456, #5511)."""
    _coordinators_balanced(settings.bootstrap_servers)
    group_node = _coordinator_of(settings.bootstrap_servers, "__consumer_offsets", settings.group)
    leaders = _leaders(settings.bootstrap_servers, "__transaction_state")
    for n in range(1000):
        candidate = f"{settings.topic_prefix}-w0-{n}"
        transactional_id = f"{settings.group}.{candidate}"  # worker/loop.py: "<group>.<id>"
        if leaders[_coordinator_partition(transactional_id, len(leaders))] == group_node:
            return [candidate, f"{settings.topic_prefix}-w1"]
    raise AssertionError(f"no transactional id is coordinated by node {group_node}")


def _under_replicated(bootstrap: str) -> int:
    metadata = _admin(bootstrap).list_topics(timeout=10.0)
    return sum(
        1
        for topic in metadata.topics.values()
        for part in topic.partitions.values()
        if len(part.isrs) < len(part.replicas)
    )


# -- one run -------------------------------------------------------------------------------------


@dataclass
class Run:
    """What a submitter saw and what the workers did during one faulted run."""

    settings: Settings
    runs_file: Path
    handles: dict[str, int] = field(default_factory=dict)  # task id -> seq
    raised: int = 0
    longest_submit_s: float = 0.0
    fault_at: float = 0.0
    submitted: threading.Event = field(default_factory=threading.Event)

    def submit_all(self) -> None:
        with Producer(self.settings) as producer:
            for seq in range(TASKS):
                task = Step(key=f"k{seq % KEYS}", seq=seq, runs=str(self.runs_file))
                began = time.monotonic()
                try:
                    handle = producer.submit(task, key=task.key)
                except StreamJobsError:
                    self.raised += 1
                else:
                    self.handles[handle.task_id] = seq
                self.longest_submit_s = max(self.longest_submit_s, time.monotonic() - began)
        self.submitted.set()

    def executions(self) -> list[tuple[float, str, int]]:
        lines = self.runs_file.read_text(encoding="ascii").splitlines()
        return [(float(at), key, int(seq)) for at, key, seq in (ln.split() for ln in lines)]

    def not_succeeded(self) -> list[str]:
        views = statuses(self.settings)
        return [
            t
            for t in self.handles
            if (v := views.get(t)) is None or v.state is not TaskState.SUCCEEDED
        ]


def _first_runs_out_of_order(executions: list[tuple[float, str, int]]) -> dict[str, list[int]]:
    """Keys whose tasks did not first run in submit order (re-runs of a task are skipped)."""
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[int] = set()
    for _, key, seq in executions:
        if seq not in seen:
            seen.add(seq)
            firsts[key].append(seq)
    return {key: seqs for key, seqs in firsts.items() if seqs != sorted(seqs)}


def _longest_pause_after(executions: list[tuple[float, str, int]], fault_wall: float) -> float:
    times = [fault_wall, *sorted(at for at, _, _ in executions if at >= fault_wall)]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


@pytest.fixture
def run(cluster: LocalCluster, unique_prefix: str, tmp_path: Path) -> Run:
    settings = build_settings(cluster.bootstrap, unique_prefix, replication_factor=3)
    return Run(settings, tmp_path / "runs.txt")


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(tmp_path)
    yield procs
    procs.stop_all()


def _members(settings: Settings) -> int:
    try:
        return len(group_assignment(settings))
    except TimeoutError:  # the group's coordinator is still loading it
        return 0


def faulted_run(
    run: Run,
    workers: WorkerProcesses,
    fault: Callable[[], None],
    *extra: str,
    instance_ids: Sequence[str] = (),
) -> tuple[float, float]:
    """Two workers, a submitter, ``fault`` once ``FAULT_AFTER`` tasks are submitted; returns
    (fault wall time, seconds until every returned handle's task succeeded). ``instance_ids``
    gives the workers static ids (so their transactional ids are known)."""
    run.runs_file.touch()
    ids = [("--instance-id", i) for i in instance_ids] or [(), ()]
    procs = [workers.start(run.settings, REGISTRY, *extra, *ids[n]) for n in range(2)]
    wait_for(
        lambda: _members(run.settings) == 2,
        90.0,
        interval=0.5,
        message="both workers to join the group",
    )
    submitter = threading.Thread(target=run.submit_all, name="submitter", daemon=True)
    submitter.start()
    wait_for(lambda: len(run.handles) >= FAULT_AFTER, 60.0, message="tasks to be submitted")
    fault_wall, began = time.time(), time.monotonic()
    fault()
    submitter.join(240.0)
    assert run.submitted.is_set(), "the submitter did not finish"
    try:
        wait_for(
            lambda: not run.not_succeeded(),
            120.0,
            interval=1.0,
            message="every task whose submit() returned a handle to succeed",
        )
    except AssertionError as stalled:  # wait_for's timeout: show where the workers are
        raise AssertionError(f"{stalled}\n{_stacks(workers, procs)}") from None
    for proc in procs:
        assert proc.poll() is None, workers.log_of(proc)
    return fault_wall, time.monotonic() - began


def _stacks(workers: WorkerProcesses, procs: Sequence[subprocess.Popen[bytes]]) -> str:
    """Each live worker's thread stacks (SIGUSR1, see `streamjobs consume`) and log tail."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
    wait_for(
        lambda: all(
            "most recent call first" in workers.log_of(p) for p in procs if p.poll() is None
        ),
        10.0,
        message="the workers to print their stacks",
    )
    return "\n".join(f"--- worker {n}\n{workers.log_of(p)[-20000:]}" for n, p in enumerate(procs))


def check_and_report(name: str, run: Run, fault_wall: float, drained_s: float) -> Counter[int]:
    executions = run.executions()
    runs = Counter(seq for _, _, seq in executions)
    seqs = set(run.handles.values())
    lost = [seq for seq in seqs if seq not in runs]
    duplicates = sum(count - 1 for count in runs.values())
    print(
        f"\n[{name}] submitted {len(run.handles)} (raised {run.raised}), lost {len(lost)},"
        f" duplicate runs {duplicates}, longest pause in runs after the fault"
        f" {_longest_pause_after(executions, fault_wall):.1f}s, longest submit()"
        f" {run.longest_submit_s:.1f}s, all done {drained_s:.1f}s after the fault"
    )
    assert not lost
    assert not _first_runs_out_of_order(executions)
    return runs


# -- the scenarios -------------------------------------------------------------------------------


def test_killing_the_task_partition_leader_loses_nothing_and_keeps_key_order(
    cluster: LocalCluster, run: Run, workers: WorkerProcesses
) -> None:
    victim = cluster.node(leader_of(cluster.bootstrap, queue_topics(run.settings).main))

    def restart_later() -> None:
        # later: once the submitter is done, the node comes back and catches up
        run.submitted.wait(240.0)
        victim.start(RESTART_TIMEOUT_S)

    restarted = threading.Thread(target=restart_later, daemon=True)

    def kill_then_restart_later() -> None:
        victim.kill()
        restarted.start()

    fault_wall, drained_s = faulted_run(run, workers, kill_then_restart_later)
    check_and_report("kill task leader", run, fault_wall, drained_s)
    restarted.join(RESTART_TIMEOUT_S)
    assert victim.running


def test_killing_the_status_partition_leader_loses_nothing_and_keeps_key_order(
    cluster: LocalCluster, run: Run, workers: WorkerProcesses
) -> None:
    victim = cluster.node(leader_of(cluster.bootstrap, queue_topics(run.settings).status))

    fault_wall, drained_s = faulted_run(run, workers, victim.kill)

    check_and_report("kill status leader", run, fault_wall, drained_s)


def test_a_broker_frozen_for_20s_loses_nothing_and_keeps_key_order(
    cluster: LocalCluster, run: Run, workers: WorkerProcesses
) -> None:
    victim = cluster.node(leader_of(cluster.bootstrap, queue_topics(run.settings).main, 1))
    pid = victim.pid
    assert pid is not None
    thawed = threading.Timer(FREEZE_S, os.kill, (pid, signal.SIGCONT))

    def freeze() -> None:
        os.kill(pid, signal.SIGSTOP)
        thawed.start()  # the fault's length, not a synchronisation

    fault_wall, drained_s = faulted_run(run, workers, freeze)
    thawed.join()
    check_and_report("freeze a broker 20s", run, fault_wall, drained_s)


def _committed_outcomes(settings: Settings) -> Counter[str]:
    """How many ``succeeded`` records of each task a ``read_committed`` reader sees."""
    topic = queue_topics(settings).status
    reader = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"test-eos-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)[1]
            for p in range(settings.partitions)
        }
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, e in ends.items() if e])
        outcomes: Counter[str] = Counter()
        deadline = time.monotonic() + 60.0
        pending = {p for p, e in ends.items() if e}
        while pending and time.monotonic() < deadline:
            for message in reader.consume(500, timeout=0.5):
                value = message.value()
                if message.error() is None and value is not None:
                    view = decode_status(value)
                    if view.state is TaskState.SUCCEEDED:
                        outcomes[view.task_id] += 1
            positions = reader.position([TopicPartition(topic, p) for p in pending])
            pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        assert not pending, "could not read the status topic to its stable end"
        return outcomes
    finally:
        reader.close()


def _open_transaction(settings: Settings) -> bool:
    """Status records past the last stable offset: some worker's transaction is open."""
    topic = queue_topics(settings).status
    ends: dict[str, list[int]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        reader = Consumer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "group.id": "test-eos-probe",
                "isolation.level": isolation,
                "log_level": 0,
            }
        )
        try:
            ends[isolation] = [
                reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)[1]
                for p in range(settings.partitions)
            ]
        finally:
            reader.close()
    return ends["read_uncommitted"] != ends["read_committed"]


def test_exactly_once_survives_killing_the_transaction_coordinator_mid_transaction(
    cluster: LocalCluster, run: Run, workers: WorkerProcesses
) -> None:
    instance_ids = _ids_sharing_the_group_coordinator(run.settings)
    # the first worker's transactional id (worker/loop.py: "<group>.<static id>")
    transactional_id = f"{run.settings.group}.{instance_ids[0]}"
    bootstrap = cluster.bootstrap
    killed_group_coordinator: list[bool] = []
    caught_open: list[bool] = []

    def kill_coordinator_mid_transaction() -> None:
        # workers commit a transaction every 50 ms; kill while one is visibly open
        deadline = time.monotonic() + 10.0
        while not _open_transaction(run.settings) and time.monotonic() < deadline:
            pass
        caught_open.append(time.monotonic() < deadline)
        node = _coordinator_of(bootstrap, "__transaction_state", transactional_id)
        group_node = _coordinator_of(bootstrap, "__consumer_offsets", run.settings.group)
        killed_group_coordinator.append(node == group_node)
        cluster.node(node).kill()

    fault_wall, drained_s = faulted_run(
        run, workers, kill_coordinator_mid_transaction, "--exactly-once", instance_ids=instance_ids
    )
    check_and_report("exactly-once, kill txn coordinator", run, fault_wall, drained_s)
    outcomes = _committed_outcomes(run.settings)
    twice = {t: n for t, n in outcomes.items() if n != 1}
    hung = workers.all_logs().count("librdkafka#5456")
    print(
        f"  transaction open at the kill: {caught_open[0]}; the group's coordinator killed too:"
        f" {killed_group_coordinator[0]}; outcomes seen twice: {len(twice)};"
        f" transactional calls given up as hung: {hung}"
    )
    assert not twice
    assert set(run.handles) <= set(outcomes)
