"""The worker subsystem: everything between a consumed task record and its commit.

``Worker`` (:mod:`streamjobs.worker.loop`) is the public entry; the other modules are its parts:
routing each consumed record (:mod:`~streamjobs.worker.routing`), the tasks taken and not
finished (:mod:`~streamjobs.worker.intake`), running handlers
(:mod:`~streamjobs.worker.executor`, :mod:`~streamjobs.worker.handler_call`), the partitions it
owns (:mod:`~streamjobs.worker.partitions`, :mod:`~streamjobs.worker.offsets`,
:mod:`~streamjobs.worker.handover`), writing outcomes (:mod:`~streamjobs.worker.outcomes`), key
order (:mod:`~streamjobs.worker.keyorder`) and crash-loop quarantine
(:mod:`~streamjobs.worker.quarantine`).
"""

from streamjobs.worker.loop import Worker
from streamjobs.worker.stats import WorkerStats

__all__ = ["Worker", "WorkerStats"]
