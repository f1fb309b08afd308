"""Task ids are unique, without a broker: the submission digest every status record carries,
and what a submit reusing a known id gets (the existing handle, or DuplicateTask)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streamjobs import DuplicateTask, Settings, TaskState
from streamjobs.envelope import Envelope
from streamjobs.status import (
    SUBMISSION_HEADER,
    StatusView,
    decode_status,
    encode_status,
    submission_digest,
    submission_headers,
)
from streamjobs.taskhandle import existing_handle


def _envelope(**changes: Any) -> Envelope:
    envelope = Envelope(
        task_id="order-42",
        task="Charge",
        queue="default",
        key="acct-1",
        payload=b"\x02\x04",
        payload_schema=b"\x01" * 8,
        submitted_at_ms=1_700_000_000_000,
    )
    return replace(envelope, **changes)


def test_the_digest_ignores_attempts_generations_and_due_times() -> None:
    digest = submission_digest(_envelope())
    later = _envelope(attempt=3, generation=2, not_before_ms=5, submitted_at_ms=9, task_id="x")
    assert submission_digest(later) == digest
    assert len(digest) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"task": "Refund"},
        {"key": "acct-2"},
        {"key": None},
        {"payload": b"\x02\x06"},
        {"payload_schema": b"\x02" * 8},
        # the same bytes split differently between fields must not collide
        {"task": "Charg", "key": "eacct-1"},
    ],
)
def test_the_digest_changes_with_task_type_key_schema_or_payload(change: dict[str, Any]) -> None:
    assert submission_digest(_envelope(**change)) != submission_digest(_envelope())


def _view(**changes: Any) -> StatusView:
    envelope = _envelope()
    value = encode_status(envelope, TaskState.SUCCEEDED, topic="streamjobs.default", partition=2)
    view = decode_status(value, submission_headers(envelope))
    return replace(view, **changes)


def test_a_decoded_status_carries_its_submission_header() -> None:
    envelope = _envelope()
    value = encode_status(envelope, TaskState.QUEUED)
    assert decode_status(value).submission is None
    headers = [("traceparent", b"x"), (SUBMISSION_HEADER, submission_digest(envelope))]
    assert decode_status(value, headers).submission == submission_digest(envelope).decode()


def test_a_submit_with_the_same_arguments_gets_the_existing_tasks_handle() -> None:
    view = _view(offset=17, submitted_at_ms=123)
    handle = existing_handle(Settings(), view, submission_headers(_envelope()))
    assert (handle.task_id, handle.topic, handle.partition, handle.offset) == (
        "order-42",
        "streamjobs.default",
        2,
        17,
    )
    assert handle.submitted_at_ms == 123


def test_a_handle_of_a_task_whose_status_does_not_say_where_it_is_has_minus_one() -> None:
    view = _view(topic=None, partition=None, offset=None, submitted_at_ms=None)
    handle = existing_handle(Settings(), view, submission_headers(_envelope()))
    assert (handle.topic, handle.partition, handle.offset) == ("streamjobs.default", -1, -1)
    assert handle.submitted_at_ms == view.updated_at_ms


@pytest.mark.parametrize(
    ("view_changes", "envelope_changes", "why"),
    [
        ({}, {"payload": b"\x02\x08"}, "other arguments"),
        ({}, {"key": "acct-9"}, "other arguments"),
        ({"queue": "emails"}, {}, "queue 'emails'"),
        ({"submission": None}, {}, "no submission digest"),
    ],
)
def test_a_submit_that_is_not_the_known_one_raises_duplicate_task(
    view_changes: dict[str, Any], envelope_changes: dict[str, Any], why: str
) -> None:
    view = _view(**view_changes)
    with pytest.raises(DuplicateTask, match=why) as raised:
        existing_handle(Settings(), view, submission_headers(_envelope(**envelope_changes)))
    assert raised.value.task_id == "order-42"
    assert "nothing was written" in str(raised.value)
