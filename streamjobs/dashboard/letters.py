"""The dashboard's dead-letter pages: the list (by queue, reason, task type, time), one dead
letter, and re-driving one or many after a confirmation step.

Owns those routes' handlers. Dead letters of every queue shown are listed, each by its ref
``QUEUE:PARTITION:OFFSET`` (:mod:`streamjobs.dashboard.queues`); a redrive goes through
:func:`streamjobs.ops.redrive.redrive` with the settings of the letter's own queue, audited in
that queue's ledger as ``<operator> via dashboard``. Does not read Kafka itself.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from streamjobs.dashboard import auth
from streamjobs.dashboard.queues import by_queue, letter_ref, split_ref
from streamjobs.dashboard.rendering import PAGE, board_of, render, since
from streamjobs.errors import ConfigError
from streamjobs.index.queries import DeadLetterFilter
from streamjobs.ops.deadletters import show
from streamjobs.ops.redrive import RedriveItem, RedriveSummary, redrive


def dead_letters(request: Request) -> Response:
    board = board_of(request)
    q = request.query_params
    shown = board.chosen(request)
    where = DeadLetterFilter(
        shown,
        reason=q.get("reason") or None,
        task=q.get("task") or None,
        since_ms=since(q.get("since")),
        until_ms=since(q.get("until")),
    )
    page = max(int(q.get("page") or 0), 0)
    with board.reader() as index:
        found = index.dead_letters(where, limit=PAGE + 1, offset=page * PAGE)
        reasons = index.dead_letter_reasons(shown)
    return render(
        request,
        "dead_letters",
        queues=board.queues,
        found=found[:PAGE],
        more=len(found) > PAGE,
        page=page,
        query=dict(q),
        reasons=reasons,
    )


def dead_letter_page(request: Request) -> Response:
    """One dead letter: ``QUEUE:PARTITION:OFFSET`` (or ``PARTITION:OFFSET`` of the first queue)."""
    board = board_of(request)
    try:
        queue, ref = split_ref(request.path_params["ref"], board.queues)
        detail = show(board.settings.for_queue(queue), ref)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    return render(request, "dead_letter", detail=detail, queue=queue)


def _selected_refs(form: Any, queues: tuple[str, ...]) -> list[str]:
    """The form's refs, each as ``QUEUE:PARTITION:OFFSET``; 400 when one is not a ref."""
    refs = set()
    for text in form.getlist("ref"):
        try:
            queue, ref = split_ref(str(text), queues)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
        refs.add(letter_ref(queue, ref))
    return sorted(refs)


async def redrive_confirm(request: Request) -> Response:
    """Step one: the selected dead letters, and a button that really re-drives them."""
    form = await request.form()
    auth.check_csrf(request, form)
    return render(request, "redrive_confirm", refs=_selected_refs(form, board_of(request).queues))


async def redrive_run(request: Request) -> Response:
    """Step two: re-drive, audited in the ledger as ``<operator> via dashboard``."""
    form = await request.form()
    auth.check_csrf(request, form)
    board = board_of(request)
    refs = _selected_refs(form, board.queues)
    if not refs or form.get("confirm") != "yes":
        raise HTTPException(400, "nothing confirmed")
    actor = f"{auth.user_of(request)} via dashboard"
    summary = RedriveSummary()
    done: list[tuple[str, RedriveItem]] = []  # (queue, item) in order
    for queue, chosen in by_queue(refs, board.queues).items():
        settings = board.settings.for_queue(queue)
        ran = await run_in_threadpool(redrive, settings, refs=chosen, actor=actor)
        summary.items.extend(ran.items)
        done.extend((queue, item) for item in ran.items)
    return render(request, "redrive_done", summary=summary, done=done, actor=actor)
