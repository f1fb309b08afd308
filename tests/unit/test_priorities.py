"""Queue priorities: which queues a worker holds back (pure policy, no broker)."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from streamjobs.errors import ConfigError
from streamjobs.settings import Settings
from streamjobs.topics import served_topics
from streamjobs.worker.executor import KeyedExecutor
from streamjobs.worker.partitions import Assigned, Partition
from streamjobs.worker.pauses import Pause
from streamjobs.worker.priorities import Priorities, QueueGate
from tests.unit.fake_kafka import FakeConsumer, FakeKafka


def test_strict_holds_back_every_queue_below_the_first_with_work_ready() -> None:
    policy = Priorities([1, 1, 1], "strict")
    assert policy.decide([5, 7, 9]) == {1, 2}
    assert policy.decide([0, 7, 9]) == {2}
    assert policy.decide([0, 0, 9]) == set()
    assert policy.decide([3, 0, 0]) == {1, 2}


def test_strict_taking_tasks_never_holds_a_queue_back() -> None:
    policy = Priorities([1, 1], "strict")
    policy.decide([0, 5])
    assert not any(policy.took(1) for _ in range(100))


def _serve(policy: Priorities, ready: list[int], tasks: int, batch: int = 10) -> Counter[int]:
    """Take tasks as a worker would: each turn, up to ``batch`` from the queues not held back
    (in a random mix), deciding again every turn."""
    rng = random.Random(7)
    taken: Counter[int] = Counter()
    while sum(taken.values()) < tasks:
        held = policy.decide(ready)
        for _ in range(batch):
            open_ = [r for r in range(len(ready)) if r not in policy.held and ready[r] > 0]
            if not open_:
                break
            rank = rng.choice(open_)
            taken[rank] += 1
            policy.took(rank)
        assert held is not None
    return taken


def test_weighted_serves_backlogged_queues_in_proportion_to_their_weights() -> None:
    policy = Priorities([6, 3, 1], "weighted")
    taken = _serve(policy, [10_000, 10_000, 10_000], 3000)
    total = sum(taken.values())
    for rank, weight in enumerate((6, 3, 1)):
        assert taken[rank] / total == pytest.approx(weight / 10, rel=0.1)


def test_weighted_with_one_queue_empty_shares_among_the_others() -> None:
    policy = Priorities([6, 3, 1], "weighted")
    taken = _serve(policy, [10_000, 0, 10_000], 2800)
    assert taken[1] == 0
    assert taken[0] / (taken[0] + taken[2]) == pytest.approx(6 / 7, rel=0.05)


def test_a_queue_idle_for_a_while_does_not_starve_the_others_when_its_work_arrives() -> None:
    policy = Priorities([1, 1], "weighted")
    _serve(policy, [0, 10_000], 2000)  # queue 0 idle: banks no credit
    taken = _serve(policy, [10_000, 10_000], 200)
    assert taken[1] >= 80  # about half, not nothing while queue 0 "catches up" 2000 tasks


def test_weighted_never_holds_back_the_only_queue_with_work() -> None:
    policy = Priorities([6, 1], "weighted")
    for _ in range(100):
        policy.took(1)
    assert policy.decide([0, 50]) == set()


def test_weight_zero_is_served_only_while_no_weighted_queue_has_work() -> None:
    policy = Priorities([1, 0], "weighted")
    assert policy.decide([5, 5]) == {1}
    assert policy.decide([0, 5]) == set()


def test_a_held_queue_resumes_only_once_the_others_caught_up() -> None:
    policy = Priorities([1, 1], "weighted", slack=4)
    policy.decide([100, 100])
    held = [policy.took(0) for _ in range(5)]
    assert held == [False, False, False, False, True]
    assert policy.decide([100, 100]) == {0}
    for _ in range(4):
        policy.took(1)
    assert policy.decide([100, 100]) == {0}  # hysteresis: not before queue 1 is level
    policy.took(1)
    assert policy.decide([100, 100]) == set()


def test_settings_queues_name_weights_and_the_first_queue() -> None:
    settings = Settings(queues="critical=6,default=3,low=1")
    assert settings.queue == "critical"
    assert settings.served_queues == (("critical", 6), ("default", 3), ("low", 1))
    assert settings.effective_queue_order == "weighted"
    assert Settings(queues=["a", "b"]).effective_queue_order == "strict"
    assert Settings(queues=["a", "b=2"], queue_order="weighted").served_queues[0] == ("a", 1)
    assert Settings().served_queues == (("default", 1),)


def test_a_served_queue_alone_keeps_the_workers_group() -> None:
    settings = Settings(queues="critical,low")
    low = settings.for_queue("low")
    assert (low.queue, low.served_queues, low.group) == (
        "low",
        (("low", 1),),
        "streamjobs.critical.workers",
    )


@pytest.mark.parametrize(
    "given",
    [
        {"queues": "a=1,b", "queue_order": "strict"},
        {"queues": "a,a"},
        {"queues": "a=0,b=0"},
        {"queues": "a b"},
        {"queues": "a,b/c"},
        {"queues": "a,b", "ordering": "key_ordered"},
    ],
)
def test_bad_queue_lists_are_refused(given: dict[str, str]) -> None:
    with pytest.raises((ConfigError, ValueError)):
        Settings(**given)  # type: ignore[arg-type]


def test_a_tier_topic_belongs_to_its_queue() -> None:
    topics = served_topics(Settings(queues="critical,low"))
    assert topics.rank("streamjobs.low.retry.5s") == 1
    assert topics.of("streamjobs.low.delay.1s").dlq == "streamjobs.low.dlq"
    assert topics.rank("streamjobs.critical") == 0
    assert len(topics.task_topics) == 2 * len(topics.first.task_topics)


def test_ordered_executor_starts_waiting_tasks_of_a_higher_rank_first() -> None:
    gate, entered = threading.Event(), threading.Event()
    started: list[str] = []
    pool = KeyedExecutor(1, ranks=2, ordered=True)
    pool.submit("block", lambda: (entered.set(), gate.wait()), 0)
    assert entered.wait(5)
    for i in range(3):
        pool.submit(f"low{i}", lambda i=i: started.append(f"low{i}"), 1)
    for i in range(2):
        pool.submit(f"high{i}", lambda i=i: started.append(f"high{i}"), 0)
    assert pool.waiting() == [2, 3]
    gate.set()
    pool.shutdown(timeout=5)
    assert started == ["high0", "high1", "low0", "low1", "low2"]
    assert pool.waiting() == [0, 0]


def test_unordered_executor_with_ranks_keeps_submission_order() -> None:
    gate = threading.Event()
    started: list[int] = []
    pool = KeyedExecutor(1, ranks=2, ordered=False)
    pool.submit("block", gate.wait, 0)
    for i in range(4):
        pool.submit(i, lambda i=i: started.append(i), i % 2)
    gate.set()
    pool.shutdown(timeout=5)
    assert started == [0, 1, 2, 3]


class _Ends(FakeConsumer):
    """A consumer whose partitions' cached ends the test sets."""

    def __init__(self) -> None:
        super().__init__(FakeKafka(), None)
        self.ends: dict[tuple[str, int], int] = {}

    def cached_end(self, topic: str, partition: int) -> int | None:
        return self.ends.get((topic, partition))


def _gate(queues: str) -> tuple[QueueGate, Assigned, _Ends, list[int]]:
    settings = Settings(queues=queues, partitions=1)
    served = served_topics(settings)
    parts = Assigned(settings, served.first.main)
    for topic in served.task_topics:
        parts[(topic, 0)] = Partition((topic, 0))
    waiting = [0] * len(served.queues)
    return QueueGate(settings, served, parts, lambda: waiting), parts, _Ends(), waiting


def _apply(gate: QueueGate, consumer: _Ends) -> None:
    gate._due = gate._measure_due = 0.0  # the next turn decides and measures at once
    gate.apply(consumer)


def test_strict_gate_pauses_low_while_critical_has_a_backlog_and_resumes_it_after() -> None:
    gate, parts, consumer, waiting = _gate("critical,low")
    low, critical = ("streamjobs.low", 0), ("streamjobs.critical", 0)
    waiting[1] = 5  # low tasks taken, not started
    consumer.ends[critical] = 10  # nothing taken from critical yet: it starts at 0
    _apply(gate, consumer)
    _apply(gate, consumer)  # the first measure asked where critical starts
    assert Pause.PRIORITY in parts[low].pauses
    assert (low[0], 0) in consumer.paused
    assert not parts[critical].pauses
    assert all(not p.pauses for k, p in parts.items() if k[0].startswith("streamjobs.critical"))

    parts[critical].next_offset = 10  # critical's backlog taken and started
    _apply(gate, consumer)
    _apply(gate, consumer)  # the turn that took them is remembered for one more
    assert not parts[low].pauses
    assert low not in consumer.paused


def test_a_priority_pause_leaves_other_pause_reasons_in_place() -> None:
    gate, parts, consumer, waiting = _gate("critical,low")
    low = ("streamjobs.low", 0)
    parts[low].pauses.add(Pause.BACKPRESSURE)
    consumer.paused.add(low)
    waiting[0], waiting[1] = 3, 3
    _apply(gate, consumer)
    assert parts[low].pauses == {Pause.BACKPRESSURE, Pause.PRIORITY}
    waiting[0] = 0
    _apply(gate, consumer)
    _apply(gate, consumer)
    assert parts[low].pauses == {Pause.BACKPRESSURE}
    assert low in consumer.paused  # still held by backpressure


def test_weighted_gate_holds_a_queue_the_moment_it_runs_ahead() -> None:
    gate, parts, consumer, waiting = _gate("a=1,b=1")
    a = ("streamjobs.a", 0)
    waiting[0] = waiting[1] = 1
    _apply(gate, consumer)
    for _ in range(gate.policy.slack + 1):
        gate.took(consumer, parts[a])
    assert Pause.PRIORITY in parts[a].pauses


def test_an_unchanged_decision_holds_a_partition_assigned_since_and_lifts_a_took_hold() -> None:
    gate, parts, consumer, waiting = _gate("critical,low")
    low = ("streamjobs.low", 0)
    waiting[0], waiting[1] = 3, 3
    _apply(gate, consumer)
    assert Pause.PRIORITY in parts[low].pauses
    parts[low] = Partition(low)  # revoked and assigned again: a new partition, no pauses
    _apply(gate, consumer)  # the same decision: low held
    assert Pause.PRIORITY in parts[low].pauses

    gate, parts, consumer, waiting = _gate("a=1,b=1")
    a = ("streamjobs.a", 0)
    waiting[0] = waiting[1] = 1
    _apply(gate, consumer)
    assert not parts[a].pauses
    for _ in range(gate.policy.slack + 1):
        gate.took(consumer, parts[a])  # a runs ahead: held at once, outside a decision
    assert Pause.PRIORITY in parts[a].pauses
    gate.policy.vtime[1] = gate.policy.vtime[0]  # b caught up
    _apply(gate, consumer)  # the decision is the one applied before the hold: nothing held
    assert not parts[a].pauses


def test_ranked_executor_runs_every_item_once_under_concurrent_submits() -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()
    pool = KeyedExecutor(4, ranks=3, ordered=True)

    def item(i: int) -> None:
        with lock:
            ran[i] += 1

    def submitter(start: int) -> None:
        for i in range(start, start + 2000):
            pool.submit(i % 97, lambda i=i: item(i), i % 3)

    threads = [threading.Thread(target=submitter, args=(s,)) for s in (0, 2000, 4000)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pool.shutdown(timeout=30)
    assert len(ran) == 6000
    assert set(ran.values()) == {1}
    assert pool.waiting() == [0, 0, 0]
