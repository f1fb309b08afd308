"""Fixtures for fault tests that run Workers in threads: the integration ones, shared.

``make_settings`` (a queue of its own per call), ``membership`` (rebalance callbacks seen) and
``worker`` (a Worker in a thread, stopped and
checked at teardown) are defined in ``tests/integration/conftest.py``; a test module here may
still define its own fixtures of the same names.
"""

from __future__ import annotations

from tests.integration.conftest import make_settings, membership, worker

__all__ = ["make_settings", "membership", "worker"]
