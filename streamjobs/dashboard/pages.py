"""The dashboard's pages: each handler asks the index (or Kafka, for what only Kafka knows) and
renders one template.

Owns the routes (the dead-letter pages' handlers are in :mod:`streamjobs.dashboard.letters`) and
what each page shows, for every queue of the settings (``queue``, or each of ``queues``, as
``consume`` serves them): the overview (a row per queue with its counts, dead letters, lag and
tier backlog; outcome charts, counts by state and dead letters by reason of all of them or of
one, ``?queue=``; lag per queue and partition, tier backlogs), task search (by queue too) and the
task page (history, attempts with error and traceback, result, position, a cancel not reached
yet; arguments and trace in their own frames so the page never waits on Kafka or Jaeger),
schedules of each queue (their records as the index follows them, folded by the scheduler's
book: next and last fire; pause, resume, trigger written through
:mod:`streamjobs.scheduler.manage`) and workers (live and lost, from the heartbeats the index
follows, with the tasks each is running and for how long). Does not own authentication
(:mod:`streamjobs.dashboard.auth`), the shared page plumbing
(:mod:`streamjobs.dashboard.rendering`) or the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from streamjobs.dashboard import auth, charts, letters
from streamjobs.dashboard.live import task_arguments, trace_of
from streamjobs.dashboard.queues import queue_rows, state_columns
from streamjobs.dashboard.rendering import PAGE, TEMPLATES, Dashboard, board_of, render, since
from streamjobs.errors import ConfigError
from streamjobs.index.queries import DeadLetterFilter, TaskFilter
from streamjobs.models import TaskState
from streamjobs.scheduler import manage
from streamjobs.scheduler.state import schedule_of
from streamjobs.status import StatusView, now_ms

__all__ = ["ROUTES", "TEMPLATES", "Dashboard", "attempts_of"]

# -- login ----------------------------------------------------------------------------------------


def login_form(request: Request) -> Response:
    return render(request, "login", error=None)


async def login(request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, form)
    password = str(form.get("password") or "")
    name = str(form.get("name") or "").strip()[:64] or "operator"
    if not auth.password_matches(password, board_of(request).password):
        response = render(request, "login", error="wrong password")
        response.status_code = 401
        return response
    auth.log_in(request, name)
    return RedirectResponse("/", status_code=303)


async def logout(request: Request) -> Response:
    auth.check_csrf(request, await request.form())
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# -- overview -------------------------------------------------------------------------------------


def overview(request: Request) -> Response:
    board = board_of(request)
    shown = board.chosen(request)
    hours = min(max(int(request.query_params.get("hours") or 1), 1), 24 * 7)
    bucket_ms = max(10_000, hours * 60_000)  # 60 bars whatever the range
    until = now_ms()
    with board.reader() as index:
        buckets = index.outcomes(shown, until - hours * 3_600_000, until + 1, bucket_ms)
        states = index.state_counts(shown)
        reasons = index.dead_letter_reasons(shown)
        per_queue, dead = index.states_by_queue(), index.dead_letters_by_queue()
    rows = queue_rows(board.queues, per_queue, dead, board.backlog.latest)
    live = board.backlog.latest
    return render(
        request,
        "overview",
        queue=board.settings.queue,
        queues=board.queues,
        shown=shown,
        chosen=request.query_params.get("queue") or "",
        rows=rows,
        columns=state_columns(rows),
        figures=[q for q in live.queues if q.queue in shown],
        hours=hours,
        throughput=charts.outcome_bars(buckets, bucket_ms),
        ratio=charts.ratio_line(buckets),
        states=states,
        reasons=reasons,
        live=board.backlog.latest,
    )


# -- tasks ----------------------------------------------------------------------------------------


def tasks(request: Request) -> Response:
    board = board_of(request)
    q = request.query_params
    where = TaskFilter(
        queue=q.get("queue") or None,
        state=q.get("state") or None,
        task=q.get("task") or None,
        key=q.get("key") or None,
        text=q.get("text") or None,
        since_ms=since(q.get("since")),
        until_ms=since(q.get("until")),
    )
    page = max(int(q.get("page") or 0), 0)
    with board.reader() as index:
        found = index.search(where, limit=PAGE + 1, offset=page * PAGE)
    return render(
        request,
        "tasks",
        found=found[:PAGE],
        more=len(found) > PAGE,
        page=page,
        where=where,
        query=dict(q),
        states=[s.value for s in TaskState],
        queues=board.queues,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One run of a task, from its status history."""

    generation: int
    attempt: int
    records: list[StatusView]

    @property
    def outcome(self) -> StatusView:
        return self.records[-1]

    @property
    def started_ms(self) -> int | None:
        running = [r for r in self.records if r.state is TaskState.RUNNING]
        return running[0].updated_at_ms if running else None


def attempts_of(history: list[StatusView]) -> list[Attempt]:
    """The history grouped by (generation, attempt), in order."""
    groups: dict[tuple[int, int], list[StatusView]] = {}
    for view in history:
        groups.setdefault((view.generation, view.attempt), []).append(view)
    return [Attempt(g, a, views) for (g, a), views in groups.items()]


def task_page(request: Request) -> Response:
    board = board_of(request)
    task_id = request.path_params["task_id"]
    with board.reader() as index:
        latest = index.task(task_id)
        history = index.history(task_id)
        letters = index.dead_letters(DeadLetterFilter(board.queues, task_id=task_id), limit=20)
        pending = None if latest is None else index.pending_cancel(latest)
    if latest is None:
        raise HTTPException(404, f"no task {task_id} in the index")
    return render(
        request,
        "task",
        schedule=schedule_of(task_id),
        task=latest,
        history=history,
        attempts=attempts_of(history),
        letters=letters,
        pending_cancel=pending,
    )


def task_arguments_frame(request: Request) -> Response:
    board = board_of(request)
    with board.reader() as index:
        history = index.history(request.path_params["task_id"])
    return render(request, "arguments", args=task_arguments(board.settings, history))


def task_trace_frame(request: Request) -> Response:
    board = board_of(request)
    with board.reader() as index:
        task = index.task(request.path_params["task_id"])
    if task is None or not task.trace_id:
        return render(request, "trace", drawn=[], problem="this task has no trace id")
    traces, problem = trace_of(board.settings, task.trace_id)
    drawn = [(str(t.get("traceID", "")), charts.waterfall(t)) for t in traces]
    return render(request, "trace", drawn=drawn, problem=problem, trace_id=task.trace_id)


# -- workers and schedules ------------------------------------------------------------------------


def workers(request: Request) -> Response:
    """Live workers, then lost ones (no heartbeat for three of their intervals), from the
    heartbeats the index follows; lost is judged now, at each page load."""
    board = board_of(request)
    now = now_ms()
    with board.reader() as index:
        found = index.workers(now)
    return render(
        request,
        "workers",
        found=found,
        problem=None,
        now=now,
        topic=f"{board.settings.topic_prefix}.workers",
    )


def schedules(request: Request) -> Response:
    """Every schedule of the queues shown, from the schedule records the index follows."""
    board = board_of(request)
    settings = board.settings
    with board.reader() as index:
        found = [(queue, s) for queue in board.queues for s in index.schedules(queue)]
    return render(
        request,
        "schedules",
        found=found,
        queues=board.queues,
        problem=None,
        done=request.query_params.get("done"),
        topic=f"{settings.topic_prefix}.schedules",
    )


async def schedule_action(request: Request) -> Response:
    """Pause, resume or trigger one schedule (each one confirmed record the leader acts on)."""
    form = await request.form()
    auth.check_csrf(request, form)
    board = board_of(request)
    queue = str(form.get("queue") or board.queues[0])
    if queue not in board.queues:
        raise HTTPException(404, f"queue {queue!r} is not shown here")
    settings = board.settings.for_queue(queue)
    name, action = request.path_params["name"], request.path_params["action"]
    try:
        if action == "trigger":
            task_id = await run_in_threadpool(manage.trigger, settings, name)
            done = f"{name}: fire requested, task id {task_id}"
        elif action in ("pause", "resume"):
            await run_in_threadpool(manage.set_paused, settings, name, action == "pause")
            done = f"{name}: {action}d"
        else:
            raise HTTPException(404, f"no action {action!r}")
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    return RedirectResponse(f"/schedules?{urlencode({'done': done})}", status_code=303)


ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/", overview),
    Route("/tasks", tasks),
    Route("/tasks/{task_id}", task_page),
    Route("/tasks/{task_id}/arguments", task_arguments_frame),
    Route("/tasks/{task_id}/trace", task_trace_frame),
    Route("/dead-letters", letters.dead_letters),
    Route("/dead-letters/redrive", letters.redrive_confirm, methods=["POST"]),
    Route("/dead-letters/redrive/confirm", letters.redrive_run, methods=["POST"]),
    Route("/dead-letters/{ref}", letters.dead_letter_page),
    Route("/workers", workers),
    Route("/schedules", schedules),
    Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
]
