"""``python -m streamjobs.cli``: the same as the ``streamjobs`` command."""

from streamjobs.cli.app import main

main()
