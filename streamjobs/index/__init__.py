"""The index: the status, dead-letter and redrive-ledger topics followed into embedded SQLite.

:mod:`~streamjobs.index.rows` maps a record to row changes (pure), :mod:`~streamjobs.index.store`
owns the file and applies changes with their offsets in one transaction,
:mod:`~streamjobs.index.follower` reads Kafka from the applied offsets, and
:mod:`~streamjobs.index.queries` answers the dashboard's and the CLI's questions. Kafka stays
the source of truth: a deleted index file is rebuilt from the topics.
"""
