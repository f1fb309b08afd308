"""Operator actions on a queue's topics: replay, dead letters, inspect, purge, trace view.

Each module is called by the CLI (:mod:`streamjobs.cli.ops`) with ``Settings``; none of them
runs tasks.
"""
