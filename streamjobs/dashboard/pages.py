"""The dashboard's pages: each handler asks the index (or Kafka, for what only Kafka knows) and
renders one template.

Owns the routes and what each page shows, for every queue of the settings (``queue``, or each of
``queues``, as ``consume`` serves them): the overview (a row per queue with its counts, dead
letters, lag and tier backlog; outcome charts, counts by state and dead letters by reason of all
of them or of one, ``?queue=``; lag per queue and partition, tier backlogs), task search (by
queue too) and the task page (history, attempts with error and traceback, result, position;
arguments and trace in their own frames so the page never waits on Kafka or Jaeger), dead
letters (filter, detail, redrive one or many through :func:`streamjobs.ops.redrive.redrive`,
after a confirmation step, audited in its ledger with the logged-in operator's name), schedules
(their records as the index follows them, folded by the scheduler's book: next and last fire;
pause, resume, trigger written through :mod:`streamjobs.scheduler.manage`) and workers (live and
lost, from the heartbeats the index follows, with the tasks each is running and for how long).
Does not own authentication (:mod:`streamjobs.dashboard.auth`) or the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from streamjobs.dashboard import auth, charts
from streamjobs.dashboard.live import Backlog, task_arguments, trace_of
from streamjobs.dashboard.queues import by_queue, letter_ref, queue_rows, split_ref, state_columns
from streamjobs.errors import ConfigError
from streamjobs.index.queries import DeadLetterFilter, IndexReader, TaskFilter
from streamjobs.models import TaskState
from streamjobs.ops.deadletters import show
from streamjobs.ops.redrive import RedriveItem, RedriveSummary, redrive
from streamjobs.scheduler import manage
from streamjobs.scheduler.state import schedule_of
from streamjobs.settings import Settings, format_duration, parse_duration
from streamjobs.status import StatusView, now_ms

PAGE = 50
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES.env.filters["when"] = when
TEMPLATES.env.filters["duration"] = format_duration


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What every page needs: settings, the index file, the live backlog, the password."""

    settings: Settings
    index_path: Path
    backlog: Backlog
    password: Any  # SecretStr

    def reader(self) -> IndexReader:
        return IndexReader(self.index_path)

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues shown, highest priority first."""
        return tuple(name for name, _ in self.settings.served_queues)

    def chosen(self, request: Request) -> tuple[str, ...]:
        """``?queue=`` (one of :attr:`queues`, else 404), or every queue shown."""
        wanted = request.query_params.get("queue")
        if not wanted:
            return self.queues
        if wanted not in self.queues:
            raise HTTPException(404, f"queue {wanted!r} is not shown here")
        return (wanted,)


def _board(request: Request) -> Dashboard:
    board: Dashboard = request.app.state.board
    return board


def _render(request: Request, name: str, **context: Any) -> Response:
    context.update(user=auth.user_of(request), csrf=auth.csrf_token(request), page_name=name)
    return TEMPLATES.TemplateResponse(request, f"{name}.html", context)


def _since(text: str | None) -> int | None:
    """``1h`` (a duration ago) or an ISO time, as Unix ms; None when empty."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now_ms() - int(parse_duration(text).total_seconds() * 1000)
        except ConfigError:
            raise HTTPException(400, f"not a time or a duration: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


# -- login ----------------------------------------------------------------------------------------


def login_form(request: Request) -> Response:
    return _render(request, "login", error=None)


async def login(request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, form)
    password = str(form.get("password") or "")
    name = str(form.get("name") or "").strip()[:64] or "operator"
    if not auth.password_matches(password, _board(request).password):
        response = _render(request, "login", error="wrong password")
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
    board = _board(request)
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
    return _render(
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
    board = _board(request)
    q = request.query_params
    where = TaskFilter(
        queue=q.get("queue") or None,
        state=q.get("state") or None,
        task=q.get("task") or None,
        key=q.get("key") or None,
        text=q.get("text") or None,
        since_ms=_since(q.get("since")),
        until_ms=_since(q.get("until")),
    )
    page = max(int(q.get("page") or 0), 0)
    with board.reader() as index:
        found = index.search(where, limit=PAGE + 1, offset=page * PAGE)
    return _render(
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
    board = _board(request)
    task_id = request.path_params["task_id"]
    with board.reader() as index:
        latest = index.task(task_id)
        history = index.history(task_id)
        letters = index.dead_letters(DeadLetterFilter(board.queues, task_id=task_id), limit=20)
        pending = None if latest is None else index.pending_cancel(latest)
    if latest is None:
        raise HTTPException(404, f"no task {task_id} in the index")
    return _render(
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
    board = _board(request)
    with board.reader() as index:
        history = index.history(request.path_params["task_id"])
    return _render(request, "arguments", args=task_arguments(board.settings, history))


def task_trace_frame(request: Request) -> Response:
    board = _board(request)
    with board.reader() as index:
        task = index.task(request.path_params["task_id"])
    if task is None or not task.trace_id:
        return _render(request, "trace", svg=None, problem="this task has no trace id")
    trace, problem = trace_of(board.settings, task.trace_id)
    svg = charts.waterfall(trace) if trace is not None else None
    return _render(request, "trace", svg=svg, problem=problem, trace_id=task.trace_id)


# -- dead letters ---------------------------------------------------------------------------------


def dead_letters(request: Request) -> Response:
    board = _board(request)
    q = request.query_params
    shown = board.chosen(request)
    where = DeadLetterFilter(
        shown,
        reason=q.get("reason") or None,
        task=q.get("task") or None,
        since_ms=_since(q.get("since")),
        until_ms=_since(q.get("until")),
    )
    page = max(int(q.get("page") or 0), 0)
    with board.reader() as index:
        found = index.dead_letters(where, limit=PAGE + 1, offset=page * PAGE)
        reasons = index.dead_letter_reasons(shown)
    return _render(
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
    board = _board(request)
    try:
        queue, ref = split_ref(request.path_params["ref"], board.queues)
        detail = show(board.settings.for_queue(queue), ref)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    return _render(request, "dead_letter", detail=detail, queue=queue)


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
    return _render(request, "redrive_confirm", refs=_selected_refs(form, _board(request).queues))


async def redrive_run(request: Request) -> Response:
    """Step two: re-drive, audited in the ledger as ``<operator> via dashboard``."""
    form = await request.form()
    auth.check_csrf(request, form)
    board = _board(request)
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
    return _render(request, "redrive_done", summary=summary, done=done, actor=actor)


# -- workers and schedules ------------------------------------------------------------------------


def workers(request: Request) -> Response:
    """Live workers, then lost ones (no heartbeat for three of their intervals), from the
    heartbeats the index follows; lost is judged now, at each page load."""
    board = _board(request)
    now = now_ms()
    with board.reader() as index:
        found = index.workers(now)
    return _render(
        request,
        "workers",
        found=found,
        problem=None,
        now=now,
        topic=f"{board.settings.topic_prefix}.workers",
    )


def schedules(request: Request) -> Response:
    """Every schedule of the queues shown, from the schedule records the index follows."""
    board = _board(request)
    settings = board.settings
    with board.reader() as index:
        found = [(queue, s) for queue in board.queues for s in index.schedules(queue)]
    return _render(
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
    board = _board(request)
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
    Route("/dead-letters", dead_letters),
    Route("/dead-letters/redrive", redrive_confirm, methods=["POST"]),
    Route("/dead-letters/redrive/confirm", redrive_run, methods=["POST"]),
    Route("/dead-letters/{ref}", dead_letter_page),
    Route("/workers", workers),
    Route("/schedules", schedules),
    Route("/schedules/{name}/{action}", schedule_action, methods=["POST"]),
]
