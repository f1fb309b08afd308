"""The middleware chain without a broker: nesting order, and that no middleware can change an
outcome (its own errors are logged and ignored, the wrapped block's error always comes out)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import timedelta
from types import TracebackType
from typing import Any

import pytest

from streamjobs import Producer, Settings, Task
from streamjobs.client import Delivery
from streamjobs.middleware import (
    AttemptContext,
    AttemptOutcome,
    Heard,
    Middleware,
    MiddlewareChain,
    Outcomes,
    SubmitContext,
    SubmitOutcome,
)
from streamjobs.models import TaskState
from streamjobs.topics import queue_topics


def _attempt_ctx(**overrides: object) -> AttemptContext:
    fields: dict[str, object] = {
        "task_id": "t-1",
        "task": "add",
        "key": "k",
        "attempt": 2,
        "queue": "default",
        "topic": "sj.default.retry.1s",
        "partition": 0,
        "offset": 7,
        "group": "sj.default.workers",
        "worker_id": "w-1",
    }
    return AttemptContext(**{**fields, **overrides})  # type: ignore[arg-type]


def _submit_ctx() -> SubmitContext:
    return SubmitContext(task_id="t-1", task="add", key="k", queue="default", topic="sj.default")


class Recorder(Middleware):
    """Writes what it sees to a shared journal, tagged with its name."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    @contextmanager
    def submit(self, ctx: SubmitContext) -> Iterator[None]:
        self.journal.append(f"{self.name} submit {ctx.task_id}")
        yield
        self.journal.append(f"{self.name} submitted")

    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        self.journal.append(f"{self.name} enter {ctx.attempt}")
        try:
            yield
        except Exception as exc:
            self.journal.append(f"{self.name} exit {type(exc).__name__}")
            raise
        self.journal.append(f"{self.name} exit")

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        self.journal.append(f"{self.name} outcome {outcome.state}")


class Swallower(Middleware):
    """Tries to swallow the wrapped block's exception, as a generator and as a class would."""

    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        with suppress(Exception):  # a generator that does not re-raise: __exit__ returns True
            yield

    def submit(self, ctx: SubmitContext) -> _TrueExit:
        return _TrueExit()


class _TrueExit:
    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return True


class Broken(Middleware):
    """Raises wherever it is called: entering, leaving or observing."""

    def __init__(self, where: str) -> None:
        self.where = where

    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        if self.where == "enter":
            raise RuntimeError("broken on enter")
        try:
            yield
        finally:
            if self.where == "exit":
                raise RuntimeError("broken on exit")

    def submit(self, ctx: SubmitContext) -> AbstractContextManager[None]:
        raise RuntimeError("broken submit")

    def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
        raise RuntimeError("broken outcome")


class Replacer(Middleware):
    """Raises an exception of its own in place of the handler's."""

    @contextmanager
    def attempt(self, ctx: AttemptContext) -> Iterator[None]:
        try:
            yield
        except ValueError as exc:
            raise KeyError("not the handler's") from exc


def test_middleware_nest_in_list_order_the_first_outermost() -> None:
    journal: list[str] = []
    chain = MiddlewareChain([Recorder("a", journal), Recorder("b", journal)])

    with chain.attempt(_attempt_ctx()):
        journal.append("handler")
    chain.outcome(_attempt_ctx(), AttemptOutcome(TaskState.SUCCEEDED, timedelta(0)))
    with chain.submit(_submit_ctx()):
        journal.append("produce")

    assert journal == [
        "a enter 2",
        "b enter 2",
        "handler",
        "b exit",
        "a exit",
        "a outcome succeeded",
        "b outcome succeeded",
        "a submit t-1",
        "b submit t-1",
        "produce",
        "b submitted",
        "a submitted",
    ]


def test_the_handlers_exception_passes_through_every_middleware() -> None:
    journal: list[str] = []
    chain = MiddlewareChain([Recorder("a", journal)])

    with pytest.raises(ValueError, match="bad input"), chain.attempt(_attempt_ctx()):
        raise ValueError("bad input")
    assert journal == ["a enter 2", "a exit ValueError"]


def test_a_middleware_that_swallows_the_handlers_exception_does_not_turn_it_into_success() -> None:
    journal: list[str] = []
    chain = MiddlewareChain([Recorder("outer", journal), Swallower()])

    with pytest.raises(ValueError, match="handler failed"), chain.attempt(_attempt_ctx()):
        raise ValueError("handler failed")
    with pytest.raises(ValueError, match="produce failed"), chain.submit(_submit_ctx()):
        raise ValueError("produce failed")
    # the outer middleware still sees the failure the inner one tried to hide
    assert journal == ["outer enter 2", "outer exit ValueError", "outer submit t-1"]


def test_a_middleware_raising_its_own_error_instead_of_the_handlers_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = MiddlewareChain([Replacer()])

    with pytest.raises(ValueError, match="handler failed"), chain.attempt(_attempt_ctx()):
        raise ValueError("handler failed")
    assert "middleware Replacer failed leaving attempt" in caplog.text


@pytest.mark.parametrize("where", ["enter", "exit"])
def test_a_middleware_that_raises_does_not_change_the_outcome_and_is_logged(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal: list[str] = []
    chain = MiddlewareChain([Recorder("a", journal), Broken(where), Recorder("b", journal)])
    caplog.set_level(logging.WARNING, logger="streamjobs.middleware")

    with chain.attempt(_attempt_ctx()):
        journal.append("handler")
        result = 5

    assert result == 5
    assert journal == ["a enter 2", "b enter 2", "handler", "b exit", "a exit"]
    (record,) = caplog.records
    assert (
        record.getMessage()
        == {
            "enter": "middleware Broken failed entering attempt; skipped",
            "exit": "middleware Broken failed leaving attempt; ignored",
        }[where]
    )
    assert record.exc_info is not None


def test_a_failing_middleware_keeps_the_handlers_own_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    chain = MiddlewareChain([Broken("exit")])

    with pytest.raises(ValueError, match="handler failed"), chain.attempt(_attempt_ctx()):
        raise ValueError("handler failed")
    assert "middleware Broken failed leaving attempt" in caplog.text


def test_an_outcome_observer_that_raises_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    chain = MiddlewareChain([Broken("outcome"), Recorder("b", journal)])

    chain.outcome(_attempt_ctx(), AttemptOutcome(TaskState.DEAD_LETTERED, timedelta(0)))

    assert journal == ["b outcome dead_lettered"]
    assert "middleware Broken failed in outcome; ignored" in caplog.text


def test_outcomes_are_told_in_order_one_batch_per_call_and_a_raising_one_skips_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    batches: list[list[str]] = []

    class FailsOnSecond(Middleware):
        def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
            if ctx.task_id == "t2":
                raise RuntimeError("broken outcome")
            journal.append(f"heard {ctx.task_id}")

    class Batched(Middleware):
        def outcome_batch(self, heard: Sequence[Heard]) -> None:
            batches.append([ctx.task_id for ctx, _ in heard])

    chain = MiddlewareChain([FailsOnSecond(), Batched()])
    done = AttemptOutcome(TaskState.SUCCEEDED, timedelta(0))
    chain.outcome_batch([(_attempt_ctx(task_id=f"t{i}"), done) for i in (1, 2, 3)])

    assert journal == ["heard t1", "heard t3"]
    assert batches == [["t1", "t2", "t3"]]
    assert "FailsOnSecond failed in outcome; ignored" in caplog.text
    assert chain.observes_outcomes
    assert not MiddlewareChain([Middleware()]).observes_outcomes


def test_a_keyboard_interrupt_from_a_middleware_is_not_hidden() -> None:
    class Interrupting(Middleware):
        @contextmanager
        def attempt(self, ctx: AttemptContext) -> Iterator[None]:
            yield
            raise KeyboardInterrupt

    with (
        pytest.raises(KeyboardInterrupt),
        MiddlewareChain([Interrupting()]).attempt(_attempt_ctx()),
    ):
        pass


def test_the_outcome_and_the_contexts_are_frozen() -> None:
    outcome = AttemptOutcome.failure(
        TaskState.RETRY_SCHEDULED,
        timedelta(milliseconds=3),
        ValueError("nope"),
        retry_tier=timedelta(seconds=1),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcome.state = TaskState.SUCCEEDED  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        _attempt_ctx().attempt = 1  # type: ignore[misc]
    assert (outcome.error_type, outcome.error, outcome.retry_tier) == (
        "ValueError",
        "nope",
        timedelta(seconds=1),
    )
    assert not outcome.succeeded


def test_a_failures_error_type_is_the_qualified_class_name() -> None:
    class Oops(Exception):
        pass

    outcome = AttemptOutcome.failure(TaskState.DEAD_LETTERED, timedelta(0), Oops("x"))
    assert outcome.error_type == f"{__name__}.{Oops.__qualname__}"


def test_a_chain_calls_only_the_hooks_a_middleware_overrides() -> None:
    class OnlyOutcomes(Middleware):
        def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
            pass

    empty, observing = MiddlewareChain(), MiddlewareChain([OnlyOutcomes()])
    assert empty.attempt(_attempt_ctx()) is observing.attempt(_attempt_ctx())  # shared no-op
    assert not empty.observes_outcomes
    assert observing.observes_outcomes


def test_hooks_with_nothing_to_wrap_are_all_called_and_cost_no_guard() -> None:
    called: list[str] = []

    class Counting(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def attempt(self, ctx: AttemptContext) -> AbstractContextManager[object]:
            called.append(self.name)
            return super().attempt(ctx)  # counted; nothing to wrap

    chain = MiddlewareChain([Counting("outer"), Counting("inner")])
    first, second = chain.attempt(_attempt_ctx()), chain.attempt(_attempt_ctx())
    assert first is second is MiddlewareChain().attempt(_attempt_ctx())  # the shared no-op
    assert called == ["outer", "inner", "outer", "inner"]


def test_a_failed_attempts_outcome_carries_its_exception_but_compares_without_it() -> None:
    raised = ValueError("x")
    outcome = AttemptOutcome.failure(TaskState.RETRY_SCHEDULED, timedelta(0), raised)
    assert outcome.exception is raised
    again = AttemptOutcome.failure(TaskState.RETRY_SCHEDULED, timedelta(0), ValueError("x"))
    assert outcome == again
    assert AttemptOutcome.success(timedelta(0)).exception is None


def test_an_outcome_batch_reads_as_pairs_in_order_and_apart_as_successes_and_failures() -> None:
    first, second, third = (_attempt_ctx(task_id=f"t{i}") for i in (1, 2, 3))
    retried = AttemptOutcome.failure(TaskState.RETRY_SCHEDULED, timedelta(0), OSError("x"))
    told = AttemptOutcome.success(timedelta(seconds=2))
    batch = Outcomes([first, second, third], [0.25, retried, told])
    assert len(batch) == 3
    assert [ctx.task_id for ctx, _ in batch] == ["t1", "t2", "t3"]
    assert batch[0][1] == AttemptOutcome.success(timedelta(seconds=0.25))  # built when read
    assert batch[1] == (second, retried)
    assert list(batch[1:]) == [(second, retried), (third, told)]
    assert list(batch.successes()) == [(first, 0.25), (third, 2.0)]
    assert list(batch.failures()) == [(second, retried)]
    assert Outcomes.of(batch) is batch
    assert list(Outcomes.of([(second, retried)])) == [(second, retried)]


def test_a_batchs_success_durations_group_by_queue_and_task_in_order() -> None:
    email, report, other_queue = (
        _attempt_ctx(task="Email"),
        _attempt_ctx(task="Report"),
        _attempt_ctx(task="Email", queue="bulk"),
    )
    retried = AttemptOutcome.failure(TaskState.RETRY_SCHEDULED, timedelta(0), OSError("x"))
    batch = Outcomes(
        [email.kept(), report, email, other_queue.kept(), email.kept()],
        [0.25, 1.5, retried, AttemptOutcome.success(timedelta(seconds=2)), 0.5],
    )
    assert batch.successes_by_task() == {
        ("default", "Email"): [0.25, 0.5],
        ("default", "Report"): [1.5],
        ("bulk", "Email"): [2.0],
    }


def test_successes_counted_without_contexts_are_read_only_by_task() -> None:
    email, report = _attempt_ctx(task="Email", task_id="t1"), _attempt_ctx(task="Report")
    retried = AttemptOutcome.failure(TaskState.RETRY_SCHEDULED, timedelta(0), OSError("x"))
    counted = {("default", "Email"): [0.1, 0.2], ("bulk", "Email"): [3.0]}
    batch = Outcomes([email.kept(), report.kept()], [0.5, retried], counted)
    assert batch.successes_by_task() == {
        ("default", "Email"): [0.1, 0.2, 0.5],  # the counted ones first
        ("bulk", "Email"): [3.0],
    }
    assert len(batch) == 2  # the pairs are the outcomes told with their contexts
    assert [(ctx.task_id, seconds) for ctx, seconds in batch.successes()] == [("t1", 0.5)]
    assert [outcome for _, outcome in batch.failures()] == [retried]
    assert counted == {("default", "Email"): [0.1, 0.2], ("bulk", "Email"): [3.0]}  # unchanged
    assert Outcomes([], [], counted).successes_by_task() == counted


def test_a_chain_wants_success_contexts_when_any_outcome_listener_does() -> None:
    class Counting(Middleware):
        def wants_success_contexts(self) -> bool:
            return False

        def outcome_batch(self, heard: Sequence[Heard]) -> None:
            pass

    class Reading(Middleware):
        def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
            pass

    class Broken(Counting):
        def wants_success_contexts(self) -> bool:
            raise RuntimeError("oops")

    class NotListening(Middleware):
        pass  # wants them (the default) but hears no outcome: not asked

    assert not MiddlewareChain([Counting(), NotListening()]).wants_success_contexts()
    assert not MiddlewareChain().wants_success_contexts()
    assert MiddlewareChain([Counting(), Reading()]).wants_success_contexts()
    assert MiddlewareChain([Counting(), Broken()]).wants_success_contexts()  # taken as True


def test_a_chain_tells_every_middleware_one_outcomes_batch() -> None:
    batches: list[Sequence[Heard]] = []

    class Batching(Middleware):
        def outcome_batch(self, heard: Sequence[Heard]) -> None:
            batches.append(heard)

    chain = MiddlewareChain([Batching()])
    chain.outcome(_attempt_ctx(), AttemptOutcome.success(timedelta(0)))
    chain.outcome_batch([(_attempt_ctx(), AttemptOutcome.success(timedelta(0)))])
    assert [type(b) for b in batches] == [Outcomes, Outcomes]


def test_only_middleware_instances_join_a_chain() -> None:
    with pytest.raises(TypeError, match="must subclass Middleware"):
        MiddlewareChain([object()])  # type: ignore[list-item]


# -- the producer runs the chain (a fake Kafka producer; no broker) -----------------------------


class FakeKafkaProducer:
    """Accepts every record and acknowledges it on the next poll (streamjobs.client.Producer)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]] = []
        self._unacked: list[tuple[Callable[[Delivery], None], int]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> bool:
        self.records.append((topic, key, list(headers) if headers else None))
        if on_delivery is not None:
            self._unacked.append((on_delivery, len(self.records)))
        return True

    def poll(self, timeout: float) -> int:
        acked, self._unacked = self._unacked, []
        for on_delivery, offset in acked:
            on_delivery(Delivery(None, 0, offset))
        return len(acked)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


class HeaderAdder(Middleware):
    def __init__(self) -> None:
        self.seen: list[SubmitContext] = []

    @contextmanager
    def submit(self, ctx: SubmitContext) -> Iterator[None]:
        self.seen.append(ctx)
        ctx.headers.append(("x-seen-by", b"adder"))
        yield


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> FakeKafkaProducer:
    fake = FakeKafkaProducer()
    monkeypatch.setattr("streamjobs.client.new_producer", lambda *_a, **_k: fake)
    return fake


class Add(Task):
    a: int


def test_submit_runs_the_chain_around_each_task_record_with_its_context_despite_a_broken_one(
    kafka: FakeKafkaProducer, caplog: pytest.LogCaptureFixture
) -> None:
    adder = HeaderAdder()
    settings = Settings(queue="orders", topic_prefix="sj")
    with Producer(settings, middleware=[Broken("enter"), adder]) as producer:
        now = producer.submit(Add(a=1), key="k-1")
        later = producer.submit(Add(a=2), delay=timedelta(minutes=5))

    first, second = adder.seen
    topics = queue_topics(settings)
    assert (first.task_id, first.task, first.key, first.queue) == (
        now.task_id,
        Add.task_name,
        "k-1",
        "orders",
    )
    assert (first.topic, first.operation, first.delay) == (topics.main, "submit", None)
    assert second.task_id == later.task_id
    assert second.topic in topics.delay.values()
    assert second.delay is not None
    assert timedelta(minutes=4) < second.delay <= timedelta(minutes=5)
    not_tasks = (topics.status, topics.submitted, topics.schemas)
    task_records = [r for r in kafka.records if r[0] not in not_tasks]
    assert [headers for _, _, headers in task_records] == [[("x-seen-by", b"adder")]] * 2
    # the broken middleware was skipped, the submits went through
    assert caplog.text.count("middleware Broken failed entering submit; skipped") == 2


class Idle(HeaderAdder):
    def wants_submit(self) -> bool:
        return False


class Undecided(HeaderAdder):
    def wants_submit(self) -> bool:
        raise RuntimeError("cannot tell")


def test_a_middleware_that_does_not_want_a_batch_is_not_called_for_its_tasks(
    kafka: FakeKafkaProducer,
) -> None:
    idle, adder = Idle(), HeaderAdder()
    with Producer(Settings(topic_prefix="sj"), middleware=[idle, adder]) as producer:
        producer.submit_many([Add(a=1), Add(a=2)])
    with Producer(Settings(topic_prefix="sj"), middleware=[Idle()]) as producer:
        producer.submit(Add(a=3))

    assert idle.seen == []
    assert len(adder.seen) == 2
    assert MiddlewareChain([Idle()]).for_submit() is None
    task_records = [
        r for r in kafka.records if r[0] == queue_topics(Settings(topic_prefix="sj")).main
    ]
    assert [headers for _, _, headers in task_records] == [[("x-seen-by", b"adder")]] * 2 + [None]


def test_a_middleware_that_cannot_tell_whether_it_wants_a_batch_gets_it(
    kafka: FakeKafkaProducer, caplog: pytest.LogCaptureFixture
) -> None:
    undecided = Undecided()
    with Producer(Settings(topic_prefix="sj"), middleware=[undecided]) as producer:
        producer.submit(Add(a=1))

    assert len(undecided.seen) == 1
    assert "middleware Undecided failed in wants_submit; used" in caplog.text


def test_the_schedule_of_a_fired_task_is_read_from_its_streamjobs_schedule_header() -> None:
    from streamjobs.hookfacts import SCHEDULE_HEADER, schedule_of

    assert schedule_of([("traceparent", b"00-x"), (SCHEDULE_HEADER, b"nightly-cleanup")]) == (
        "nightly-cleanup"
    )
    assert schedule_of([("traceparent", b"00-x")]) is None
    assert schedule_of([(SCHEDULE_HEADER, None)]) is None


class Confirmations(Middleware):
    def __init__(self) -> None:
        self.heard: list[tuple[SubmitContext, SubmitOutcome]] = []

    def submitted(self, ctx: SubmitContext, outcome: SubmitOutcome) -> None:
        self.heard.append((ctx, outcome))


def test_a_submitted_hook_hears_each_confirmed_task_record_with_its_writes_duration(
    kafka: FakeKafkaProducer,
) -> None:
    heard = Confirmations()
    with Producer(Settings(topic_prefix="sj"), middleware=[heard]) as producer:
        one = producer.submit(Add(a=1), key="k")
        many = producer.submit_many([Add(a=2), Add(a=3)])

    assert [ctx.task_id for ctx, _ in heard.heard] == [one.task_id, *(h.task_id for h in many)]
    assert all(o.confirmed and o.error is None for _, o in heard.heard)
    assert all(o.duration > timedelta(0) for _, o in heard.heard)
    assert heard.heard[1][1].duration == heard.heard[2][1].duration  # one batch, one write
    assert MiddlewareChain([heard]).observes_submits
    assert not MiddlewareChain([HeaderAdder()]).observes_submits


def test_the_workers_quick_context_and_success_equal_the_constructed_ones_and_stay_frozen() -> None:
    fields: dict[str, Any] = {
        "task_id": "t1",
        "task": "Email",
        "key": "k",
        "attempt": 2,
        "queue": "default",
        "topic": "sj.default",
        "partition": 1,
        "offset": 7,
        "group": "g",
        "worker_id": "w",
        "headers": (("traceparent", b"x"),),
        "schedule": None,
    }
    quick = AttemptContext.of(**fields)
    assert quick == AttemptContext(**fields)
    assert quick.carry_headers == []
    assert quick.carry_headers is not AttemptContext.of(**fields).carry_headers
    success = AttemptOutcome.success(timedelta(seconds=1))
    assert success == AttemptOutcome(TaskState.SUCCEEDED, timedelta(seconds=1))
    assert success.succeeded
    assert success.reason is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.task = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        success.reason = "x"  # type: ignore[misc]


def test_a_kept_context_is_told_as_an_equal_one_sharing_its_carry_headers() -> None:
    ctx = _attempt_ctx()
    quick = AttemptContext.of(**{f.name: getattr(ctx, f.name) for f in dataclasses.fields(ctx)
                                 if f.name != "carry_headers"})  # fmt: skip
    quick.carry_headers.append(("traceparent", b"x"))
    [(told, outcome)] = list(Outcomes([quick.kept()], [0.5]))
    assert told == quick
    assert told.carry_headers is quick.carry_headers
    assert outcome == AttemptOutcome.success(timedelta(seconds=0.5))
    with pytest.raises(AttributeError):
        told.no_such_field  # type: ignore[attr-defined]  # noqa: B018


def test_a_context_defines_no_getattr_so_its_fields_read_on_the_interpreters_fast_path() -> None:
    # a class-level __getattr__ makes every field read several times slower (tracing and
    # metrics read a context's fields on every attempt); carry_headers is made lazily by a
    # descriptor instead
    assert not any("__getattr__" in vars(cls) for cls in AttemptContext.__mro__[:-1])
    assert not hasattr(AttemptContext, "carry_headers")  # a field with a default factory


def test_an_outcome_acknowledged_after_a_tell_is_told_at_the_next_one() -> None:
    from streamjobs.client import Record
    from streamjobs.worker.partitions import Partition
    from streamjobs.worker.settle import Settler
    from streamjobs.worker.stats import WorkerStats

    acks: list[Callable[[], bool]] = []

    class Writer:
        def write(self, records: object, origin: object, done: Callable[[], bool]) -> None:
            acks.append(done)

    told: list[str] = []

    class Told(Middleware):
        def outcome(self, ctx: AttemptContext, outcome: AttemptOutcome) -> None:
            told.append(ctx.task_id)

    chain = MiddlewareChain([Told()])
    settler = Settler(Writer(), None, WorkerStats(), None, lambda _: None)  # type: ignore[arg-type]
    part = Partition(("t", 0))
    success = AttemptOutcome.success(timedelta(0))
    for offset in (0, 1):
        part.tracker.dispatched(offset)
        record = Record("t", 0, offset, 0, None, b"", [])
        settler.settle(part, record, [], (_attempt_ctx(task_id=f"t{offset}"), success))
    acks[0]()
    settler.tell(chain)
    acks[1]()  # acknowledged after the first tell
    settler.tell(chain)
    assert told == ["t0", "t1"]
