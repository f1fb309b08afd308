"""Handlers for ``streamjobs consume tests.integration.jaeger_tasks:registry`` in the Jaeger test.

``Flaky`` fails its first ``failures`` attempts in this worker process, then succeeds, starting a
span of its own each time (as a handler calling a service would), so one task leaves a producer
span, several process spans and handler spans in Jaeger.
"""

from __future__ import annotations

from collections import Counter

from opentelemetry import trace

from streamjobs import Task, TaskRegistry

registry = TaskRegistry()
_runs: Counter[str] = Counter()


class Flaky(Task):
    token: str
    failures: int


@registry.handler(Flaky)
def flaky(task: Flaky) -> str:
    _runs[task.token] += 1
    with trace.get_tracer("tests.jaeger_tasks").start_as_current_span("call backend"):
        if _runs[task.token] <= task.failures:
            raise ConnectionError(f"backend down (run {_runs[task.token]})")
    return f"ok after {_runs[task.token]} runs"
