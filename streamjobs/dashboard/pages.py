"""The dashboard's pages: each handler asks the index (or Kafka, for what only Kafka knows) and
renders one template.

Owns the routes and what each page shows: the overview (outcome charts, counts by state, lag
and tier backlogs, dead letters by reason), task search and the task page (history, attempts
with error and traceback, result, position; arguments and trace in their own frames so the page
never waits on Kafka or Jaeger), dead letters (filter, detail, redrive one or many through
:func:`streamjobs.ops.redrive.redrive`, after a confirmation step, audited in its ledger
with the logged-in operator's name), schedules (their records as the index follows them, folded
by the scheduler's book: next and last fire; pause, resume, trigger written through
:mod:`streamjobs.scheduler.manage`) and workers (live and lost, from the heartbeats the index
follows, with the tasks each is running and for how long). Does
not own authentication (:mod:`streamjobs.dashboard.auth`) or the server.
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
from streamjobs.errors import ConfigError
from streamjobs.index.queries import DeadLetterFilter, IndexReader, TaskFilter
from streamjobs.models import TaskState
from streamjobs.ops.deadletters import parse_ref, show
from streamjobs.ops.redrive import redrive
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
    queue = board.settings.queue
    hours = min(max(int(request.query_params.get("hours") or 1), 1), 24 * 7)
    bucket_ms = max(10_000, hours * 60_000)  # 60 bars whatever the range
    until = now_ms()
    with board.reader() as index:
        buckets = index.outcomes(queue, until - hours * 3_600_000, until + 1, bucket_ms)
        states = index.state_counts(queue)
        reasons = index.dead_letter_reasons(queue)
    return _render(
        request,
        "overview",
        queue=queue,
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
        letters = index.dead_letters(
            DeadLetterFilter(board.settings.queue, task_id=task_id), limit=20
        )
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
    where = DeadLetterFilter(
        board.settings.queue,
        reason=q.get("reason") or None,
        task=q.get("task") or None,
        since_ms=_since(q.get("since")),
        until_ms=_since(q.get("until")),
    )
    page = max(int(q.get("page") or 0), 0)
    with board.reader() as index:
        found = index.dead_letters(where, limit=PAGE + 1, offset=page * PAGE)
        reasons = index.dead_letter_reasons(board.settings.queue)
    return _render(
        request,
        "dead_letters",
        found=found[:PAGE],
        more=len(found) > PAGE,
        page=page,
        query=dict(q),
        reasons=reasons,
    )


def dead_letter_page(request: Request) -> Response:
    ref = request.path_params["ref"]
    try:
        parse_ref(ref)
        detail = show(_board(request).settings, ref)
    except ConfigError as exc:
        raise HTTPException(404, str(exc)) from None
    return _render(request, "dead_letter", detail=detail)


async def redrive_confirm(request: Request) -> Response:
    """Step one: the selected dead letters, and a button that really re-drives them."""
    form = await request.form()
    auth.check_csrf(request, form)
    refs = sorted({str(r) for r in form.getlist("ref")})
    for ref in refs:
        try:
            parse_ref(ref)
        except ConfigError as exc:
            raise HTTPException(400, str(exc)) from None
    return _render(request, "redrive_confirm", refs=refs)


async def redrive_run(request: Request) -> Response:
    """Step two: re-drive, audited in the ledger as ``<operator> via dashboard``."""
    form = await request.form()
    auth.check_csrf(request, form)
    refs = sorted({str(r) for r in form.getlist("ref")})
    if not refs or form.get("confirm") != "yes":
        raise HTTPException(400, "nothing confirmed")
    actor = f"{auth.user_of(request)} via dashboard"
    settings = _board(request).settings
    summary = await run_in_threadpool(lambda: redrive(settings, refs=refs, actor=actor))
    return _render(request, "redrive_done", summary=summary, actor=actor)


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
    """Every schedule of the queue, from the schedule records the index follows."""
    board = _board(request)
    settings = board.settings
    with board.reader() as index:
        found = index.schedules(settings.queue)
    return _render(
        request,
        "schedules",
        found=found,
        problem=None,
        done=request.query_params.get("done"),
        topic=f"{settings.topic_prefix}.schedules",
    )


async def schedule_action(request: Request) -> Response:
    """Pause, resume or trigger one schedule (each one confirmed record the leader acts on)."""
    auth.check_csrf(request, await request.form())
    settings = _board(request).settings
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
