"""Cancels without a broker: the request record, the decision, the worker's book, the handler's
view of its task."""

from __future__ import annotations

import threading

import pytest

from streamjobs import Cancelled, CurrentTask, Settings, StreamJobsError, current_task
from streamjobs.cancels import (
    CancelOutcome,
    CancelRequest,
    CancelResult,
    decide,
    decode_cancel,
    encode_cancel,
)
from streamjobs.envelope import Envelope
from streamjobs.errors import DecodeError
from streamjobs.models import TaskState
from streamjobs.status import StatusView
from streamjobs.taskcontext import running
from streamjobs.worker.cancels import CancelBook, not_started_note

SETTINGS = Settings(topic_prefix="sj", queue="emails")
NOW = 1_700_000_000_000


def _request(task_id: str = "t-1", *, generation: int = 0, queue: str = "emails") -> CancelRequest:
    return CancelRequest(task_id, "SendEmail", queue, generation, NOW, "host:1")


def _envelope(task_id: str = "t-1", *, generation: int = 0) -> Envelope:
    return Envelope(
        task_id=task_id,
        task="SendEmail",
        queue="emails",
        payload=b"",
        payload_schema=b"12345678",
        submitted_at_ms=NOW,
        generation=generation,
    )


def _view(state: TaskState) -> StatusView:
    return StatusView(
        "t-1", "SendEmail", "emails", state, 0, 1, 0, NOW, None, None, None, None, None,
        None, None, None, None, None, None, None,
    )  # fmt: skip


def test_a_cancel_request_round_trips_through_its_avro_schema() -> None:
    request = _request(generation=3)
    assert decode_cancel(encode_cancel(request)) == request


def test_bytes_that_are_not_a_cancel_request_are_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_cancel(b"\xc3\x01not a cancel")


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        (TaskState.QUEUED, CancelOutcome.REQUESTED),
        (TaskState.SCHEDULED, CancelOutcome.REQUESTED),
        (TaskState.RUNNING, CancelOutcome.REQUESTED),
        (TaskState.RETRY_SCHEDULED, CancelOutcome.REQUESTED),
        (TaskState.SUCCEEDED, CancelOutcome.FINISHED),
        (TaskState.DEAD_LETTERED, CancelOutcome.FINISHED),
        (TaskState.CANCELLED, CancelOutcome.ALREADY_CANCELLED),
    ],
)
def test_only_a_task_that_has_not_finished_gets_a_cancel_request(
    state: TaskState, outcome: CancelOutcome
) -> None:
    assert decide(_view(state)) is outcome


def test_an_unknown_task_gets_no_cancel_request() -> None:
    assert decide(None) is CancelOutcome.UNKNOWN


def test_a_cancel_result_says_what_happened_in_one_line() -> None:
    assert CancelResult("a", CancelOutcome.REQUESTED, TaskState.QUEUED).describe() == (
        "a: cancel requested (was queued)"
    )
    finished = CancelResult("b", CancelOutcome.FINISHED, TaskState.SUCCEEDED)
    assert finished.describe() == "b: already finished (was succeeded), nothing changed"
    assert not finished.requested
    assert CancelResult("c", CancelOutcome.UNKNOWN).as_dict() == {
        "task_id": "c",
        "outcome": "unknown",
        "state": None,
    }


def test_a_cancel_applies_to_its_generation_and_earlier_but_not_to_a_later_replay() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request(generation=1))

    assert book.cancelled(_envelope(generation=0)) is not None
    assert book.cancelled(_envelope(generation=1)) is not None
    assert book.cancelled(_envelope(generation=2)) is None
    assert book.cancelled(_envelope("other")) is None


def test_an_older_cancel_read_later_does_not_lower_the_generation() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request(generation=2))
    book.add(_request(generation=0))
    assert book.cancelled(_envelope(generation=2)) is not None


def test_cancels_of_another_queue_are_not_kept() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request(queue="images"))
    assert len(book) == 0


def test_a_tombstone_withdraws_a_cancel() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request())
    book.remove("t-1")
    assert book.cancelled(_envelope()) is None


def test_cancels_older_than_the_topic_keeps_them_are_forgotten() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request("old"))
    book.add(CancelRequest("new", "SendEmail", "emails", 0, NOW + 10_000))
    kept = SETTINGS.max_future + SETTINGS.status_retention

    forgotten = book.forget_expired(NOW + int(kept.total_seconds() * 1000) + 1)

    assert forgotten == 1
    assert book.cancelled(_envelope("old")) is None
    assert book.cancelled(_envelope("new")) is not None


def test_a_handler_call_of_a_task_cancelled_already_never_starts() -> None:
    book = CancelBook(SETTINGS)
    book.add(_request())
    ran = []

    with pytest.raises(Cancelled), book.attempt(_envelope()):
        ran.append(True)

    assert ran == []


def test_a_cancel_arriving_during_a_handler_call_reaches_its_current_task() -> None:
    book = CancelBook(SETTINGS)
    heard = threading.Event()

    with book.attempt(_envelope()) as task:
        assert current_task() is task
        task.on_cancel(heard.set)
        assert not task.cancelled
        book.add(_request())
        assert task.cancelled
        assert heard.is_set()

    book.add(_request())  # after the call: nothing running to reach, nothing raised


def test_a_cancel_of_an_older_generation_does_not_reach_a_replayed_run() -> None:
    book = CancelBook(SETTINGS)
    with book.attempt(_envelope(generation=2)) as task:
        book.add(_request(generation=1))
        assert not task.cancelled


def test_current_task_outside_a_handler_is_an_error() -> None:
    with pytest.raises(StreamJobsError, match="outside a task handler"):
        current_task()


def test_raise_if_cancelled_raises_only_once_cancelled_and_hooks_run_once() -> None:
    task = CurrentTask("t-1", "SendEmail", None, 1)
    calls: list[str] = []
    task.on_cancel(lambda: calls.append("early"))
    with running(task):
        current_task().raise_if_cancelled()  # not cancelled: nothing
        assert not current_task().wait_cancelled(0.01)
    task.cancel()
    task.cancel()
    task.on_cancel(lambda: calls.append("late"))  # already cancelled: at once

    with pytest.raises(Cancelled):
        task.raise_if_cancelled()
    assert calls == ["early", "late"]
    assert task.wait_cancelled(0)


def test_a_failing_cancel_hook_does_not_keep_the_flag_from_being_set() -> None:
    task = CurrentTask("t-1", "SendEmail", None, 1)

    def broken() -> None:
        raise RuntimeError("event loop closed")

    task.on_cancel(broken)
    task.cancel()
    assert task.cancelled


def test_a_not_started_note_says_when_and_by_whom() -> None:
    note = not_started_note(_request())
    assert (
        note == "cancelled before it started (cancel requested 2023-11-14T22:13:20+00:00 by host:1)"
    )


def test_cancelled_ranks_with_the_other_final_states_of_its_attempt() -> None:
    from streamjobs.models import status_version

    running_v = status_version(0, 1, TaskState.RUNNING)
    assert status_version(0, 1, TaskState.CANCELLED) > running_v
    assert status_version(0, 1, TaskState.CANCELLED) == status_version(0, 1, TaskState.SUCCEEDED)
    assert status_version(0, 2, TaskState.CANCELLED) > status_version(
        0, 1, TaskState.RETRY_SCHEDULED
    )
