"""Settings of the example Django project: SQLite, one app (``signups``), streamjobs.

``STREAMJOBS`` is the one streamjobs.Settings of the process, from STREAMJOBS_* environment
variables (e.g. STREAMJOBS_BOOTSTRAP_SERVERS); the signups app creates its Producer from it when
Django starts. ``ATOMIC_REQUESTS``: each request is one transaction, and a task submitted with
``transaction.on_commit`` is produced only if that transaction commits.
"""

import os
from pathlib import Path

import streamjobs

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
INSTALLED_APPS = ["django.contrib.contenttypes", "signups.apps.SignupsConfig"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "mysite.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        "ATOMIC_REQUESTS": True,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

STREAMJOBS = streamjobs.Settings()
