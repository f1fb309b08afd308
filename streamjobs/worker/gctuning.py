"""The garbage collector's settings for a process that is a worker and nothing else.

Owns :func:`tune_collector`, which ``streamjobs consume`` calls once its imports, settings,
registry and clients exist and before the first task: it moves every object alive then (the
modules, the registry, the clients' Python side) to the collector's permanent generation, so
no later full collection walks them again, and raises the youngest generation's threshold from
CPython's 700 to 10,000 container allocations, so the few objects a task makes are mostly freed
by reference counting before a collection looks at them. A worker keeps little per task, so
cycles (if a handler makes any) are still collected, only less often. Does not run in library
use: a ``Worker`` embedded in someone else's process leaves that process's collector alone.
"""

from __future__ import annotations

import gc

#: Container allocations (minus deallocations) between two collections of the youngest
#: generation; the older generations keep CPython's defaults.
YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Freeze what is alive now and collect the youngest generation less often."""
    gc.collect()  # start-up garbage first: frozen objects are never collected
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
