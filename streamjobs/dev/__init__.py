"""Development tooling: a local Kafka broker and Jaeger from public registries, and the demo.

Imported only inside the ``dev-broker``, ``dev-jaeger`` (:mod:`streamjobs.cli.dev`) and
``demo`` commands, and by the tests and benchmarks; never by a production code path
(``streamjobs consume`` does not load it, and a unit test checks that).
"""
