"""Testing support for applications that use streamjobs.

Owns the pytest plugin (:mod:`streamjobs.testing.plugin`: broker, settings, producer, worker and
inline fixtures), :class:`InlineProducer` (tasks run at once through the real wire format, no
broker) and :class:`RunningWorker` (a real worker in a thread with ``run_until_idle``). Never
imported by the library itself: only tests load it.
"""

from streamjobs.testing.inline import InlineAttempt, InlineProducer, InlineRun
from streamjobs.testing.running import RunningWorker

__all__ = ["InlineAttempt", "InlineProducer", "InlineRun", "RunningWorker"]
