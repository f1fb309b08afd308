"""``python -m streamjobs``: the same as the ``streamjobs`` command."""

from streamjobs.cli.app import app

app()
