"""Seeing workers at work: metrics, outcome logs, heartbeats and health probes.

A subsystem on the core's middleware (:mod:`streamjobs.middleware`) and the worker's stats:

- :mod:`~streamjobs.metrics.prometheus`: prometheus-client's home; attempt and submit counters,
  the duration histogram, worker gauges (in flight, parked, lag, last commit);
- :mod:`~streamjobs.metrics.tasklog`: the task on handler records, outcome lines, tracebacks;
- :mod:`~streamjobs.metrics.logs`: the task context on log records, text and JSON lines;
- :mod:`~streamjobs.metrics.heartbeat`: worker reports on ``<prefix>.workers``, ``workers``;
- :mod:`~streamjobs.metrics.running`: the attempts running now;
- :mod:`~streamjobs.metrics.health` and :mod:`~streamjobs.metrics.endpoint`: probes and HTTP;
- :mod:`~streamjobs.metrics.monitor`: all of it wired around one worker (``consume``).

Correctness never depends on anything here: a metric, a log line or a heartbeat that fails is
a warning, and the worker goes on.
"""
