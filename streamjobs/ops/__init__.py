"""Operator actions on a queue's topics: replay, dead letters, inspect, purge, trace view.

Each module is called by the CLI (and the dashboard) with ``Settings``; none of them runs tasks.
"""
