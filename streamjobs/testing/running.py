"""A real Worker in a thread, for tests: started, waited until idle, stopped.

Owns :class:`RunningWorker` (``Worker.run`` on a daemon thread; ``start`` returns once the
worker has partitions; ``run_until_idle`` returns once every task queued so far, retries and
delays included, has its outcome committed; ``stop`` joins the thread and re-raises what the
worker raised). "Idle" is read from Kafka, not from the worker's memory: the group's committed
offset has reached the end of every partition of the queue's task topics. Does not start a
broker (:mod:`streamjobs.testing.plugin` finds one) or create topics (``topics.ensure``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from streamjobs import client
from streamjobs.middleware import Middleware
from streamjobs.registry import TaskRegistry
from streamjobs.settings import Settings
from streamjobs.topics import queue_topics
from streamjobs.worker.loop import Worker


class RunningWorker:
    """One :class:`streamjobs.Worker` running on a thread of the test process."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        *,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        self.settings = settings
        self.worker = Worker(settings, registry, middleware=middleware)
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, name="streamjobs-test-worker", daemon=True
        )

    def start(self, timeout: float = 30.0) -> RunningWorker:
        """Start the worker; returns once it has been assigned partitions."""
        self._thread.start()
        if not self.worker.assigned.wait(timeout):
            self.stop()
            raise TimeoutError(f"the worker got no partitions within {timeout:g}s")
        return self

    def run_until_idle(self, timeout: float = 30.0) -> None:
        """Return once every task on the queue's topics so far has its outcome committed.

        Raises TimeoutError naming the partitions still behind, or the worker's own error if
        it stopped.
        """
        deadline = time.monotonic() + timeout
        while True:
            self._raise_if_failed()
            behind = self.behind()
            if not behind and self.worker.in_flight == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not idle after {timeout:g}s; behind: {behind}")
            time.sleep(0.05)  # polling Kafka's committed offsets, not synchronising on a sleep

    def behind(self) -> dict[tuple[str, int], int]:
        """Per task-topic partition with records not yet committed: how many."""
        names = queue_topics(self.settings).task_topics
        reader = client.new_reader(self.settings)
        try:
            partitions = [(topic, p) for topic in names for p in reader.partition_ids(topic)]
            # committed offsets first, ends second: a worker commits a task's offset only after
            # its retry or hop record is acknowledged, so ends read later always include it
            committed = client.committed_offsets(self.settings, self.settings.group, partitions)
            ends = {(topic, p): reader.watermarks(topic, p)[1] for topic, p in partitions}
        finally:
            reader.close()
        return {
            tp: end - max(committed.get(tp, -1), 0)
            for tp, end in ends.items()
            if end > max(committed.get(tp, -1), 0)
        }

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (it finishes and commits what it runs) and re-raise its error."""
        self.worker.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._raise_if_failed()

    def __enter__(self) -> RunningWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # handed to the test thread by stop/run_until_idle
            self.errors.append(exc)

    def _raise_if_failed(self) -> None:
        if self.errors:
            raise self.errors[0]
