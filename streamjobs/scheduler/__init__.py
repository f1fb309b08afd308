"""Recurring tasks: cron and interval schedules that fire once per due time, whichever worker dies.

Every ``streamjobs consume`` runs a :class:`Scheduler` beside its Worker; the one that owns the
single partition of ``<prefix>.schedules`` (and has fenced the previous owner's transactional
producer) fires. Modules: ``timing`` (due times, DST), ``catchup`` (policy after downtime),
``state`` (records and fire task ids), ``book`` (the topic folded), ``leader`` (leadership state
machine), ``transaction`` (the fire's Kafka transaction), ``fires`` (a fire's records),
``rounds`` (all fires owed now, as one transaction), ``runner`` (the thread), ``manage`` (what
the CLI reads and writes). The core never imports this package.
"""

from streamjobs.scheduler.runner import Scheduler

__all__ = ["Scheduler"]
