"""The ``streamjobs`` command line (typer): parses arguments, builds Settings, delegates.

:mod:`streamjobs.cli.app` holds the app and the worker, topic and status commands,
:mod:`streamjobs.cli.ops` the operator commands, :mod:`streamjobs.cli.schemas` ``schemas
export|check``, :mod:`streamjobs.cli.dashboard` ``dashboard``, :mod:`streamjobs.cli.dev` the
local Kafka and Jaeger, and :mod:`streamjobs.cli.options` what they share (options, Settings,
the one error idiom).
"""

from streamjobs.cli.app import app, main

__all__ = ["app", "main"]
