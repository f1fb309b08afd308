"""Development tooling: a local Kafka broker and Jaeger from public registries, and the demo.

Imported only by the ``dev-broker``, ``dev-jaeger`` and ``demo`` commands, the Makefile and the
tests, never by a production code path (``streamjobs consume`` does not load it).
"""
