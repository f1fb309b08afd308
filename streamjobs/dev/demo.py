"""The demo behind ``make demo``: a worker and a burst of tasks on the local broker.

Owns the demo task types and handlers (also usable as ``streamjobs consume
streamjobs.dev.demo:registry``, as docker-compose does) and the run that submits tasks, shows
progress and checks every outcome on the status topic. Not part of the library API.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from streamjobs import statusreads, topics
from streamjobs.errors import Retry
from streamjobs.models import Task, TaskState
from streamjobs.producer import Producer
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings, format_duration
from streamjobs.worker.loop import Worker

registry = TaskRegistry()


class RenderThumbnail(Task):
    """Pretend to render a thumbnail: a little CPU, deterministic result."""

    image_id: str
    width: int = 128
    flaky: bool = False


@registry.handler(RenderThumbnail, max_attempts=3)
def render_thumbnail(task: RenderThumbnail) -> dict[str, object]:
    checksum = zlib.crc32(f"{task.image_id}:{task.width}".encode() * 16)
    if task.flaky and checksum % 2 == 0:
        # a transient failure on the first attempt; the retry tier runs it again
        task_marker = _first_attempts.setdefault(task.image_id, 0)
        _first_attempts[task.image_id] = task_marker + 1
        if task_marker == 0:
            raise Retry(message="thumbnail service busy")
    return {"image_id": task.image_id, "width": task.width, "checksum": checksum}


_first_attempts: dict[str, int] = {}


def run(settings: Settings, *, tasks: int, keys: int) -> bool:
    """Ensure topics, run one worker, submit ``tasks`` over ``keys`` keys, verify outcomes."""
    # a terminal wraps long lines itself; piped (make demo | tee), a line stays one line
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"[bold]streamjobs demo[/] on {settings.bootstrap_servers}")
    created = topics.ensure(settings)
    console.print(f"topics ready ({len(created)} created)")
    worker = Worker(settings, registry)
    thread = threading.Thread(target=worker.run, name="demo-worker")
    thread.start()
    try:
        ids, elapsed, first_pass = _submit_and_watch(console, settings, worker, tasks, keys)
    finally:
        worker.stop()
        thread.join()
    views = statusreads.snapshot(settings)
    states = Counter(views[i].state.value if i in views else "unknown" for i in ids)
    console.print(f"states on the status topic: {dict(states)}")
    console.print(
        f"[bold]{states[TaskState.SUCCEEDED.value]} of {len(ids)} succeeded[/] in {elapsed:.2f}s; "
        f"every task had its first attempt after {first_pass:.2f}s "
        f"= {len(ids) / first_pass:,.0f} tasks/s submitted and run; "
        f"{worker.stats.retried} were retried through the "
        f"{format_duration(settings.retry_tiers[0])} retry tier"
    )
    return states[TaskState.SUCCEEDED.value] == len(ids)


def _submit_and_watch(
    console: Console, settings: Settings, worker: Worker, tasks: int, keys: int
) -> tuple[list[str], float, float]:
    columns = (
        *Progress.get_default_columns()[:1],
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    start = time.monotonic()
    ids: list[str] = []
    with Producer(settings) as producer, Progress(*columns, console=console) as progress:
        submitted = progress.add_task("submitted", total=tasks)
        finished = progress.add_task("finished", total=tasks)
        for chunk in range(0, tasks, 500):
            batch = [
                RenderThumbnail(image_id=f"img-{i}", width=64 + i % 4 * 64, flaky=i % 50 == 0)
                for i in range(chunk, min(tasks, chunk + 500))
            ]
            handles = producer.submit_many(
                batch, keys=[f"user-{i % keys}" for i in range(chunk, chunk + len(batch))]
            )
            ids += [h.task_id for h in handles]
            progress.update(submitted, completed=len(ids))
            progress.update(finished, completed=_done(worker))
        deadline = time.monotonic() + 120
        first_pass = None
        while _done(worker) < tasks and time.monotonic() < deadline:
            if first_pass is None and _done(worker) + worker.stats.retried >= tasks:
                first_pass = time.monotonic() - start
            progress.update(finished, completed=_done(worker))
            time.sleep(0.02)  # a progress display refresh, not synchronisation
        progress.update(finished, completed=_done(worker))
    elapsed = time.monotonic() - start
    return ids, elapsed, first_pass or elapsed


def _done(worker: Worker) -> int:
    return worker.stats.succeeded + worker.stats.dead_lettered
