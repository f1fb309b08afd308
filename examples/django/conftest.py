"""Test set-up of the example project: Django started on the settings of a fresh streamjobs
queue (on the streamjobs plugin's broker), and a test database (SQLite in memory)."""

import os
import uuid
from collections.abc import Iterator

import django
import pytest

from streamjobs import Settings, topics


@pytest.fixture(scope="session")
def django_streamjobs(streamjobs_bootstrap: str) -> Iterator[Settings]:
    """The project's STREAMJOBS settings, its topics created, with Django set up on them."""
    os.environ["STREAMJOBS_BOOTSTRAP_SERVERS"] = streamjobs_bootstrap
    os.environ["STREAMJOBS_TOPIC_PREFIX"] = f"dj{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    django.setup()
    from django.conf import settings
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    topics.ensure(settings.STREAMJOBS)
    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    yield settings.STREAMJOBS
    teardown_databases(databases, verbosity=0)
    teardown_test_environment()
