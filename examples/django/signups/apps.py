"""The signups app: its Producer is created when Django starts and closed when the process ends."""

import atexit

from django.apps import AppConfig
from django.conf import settings

from streamjobs import Producer


class SignupsConfig(AppConfig):
    name = "signups"
    producer: Producer

    def ready(self) -> None:
        # one thread-safe Producer per process, shared by every request
        self.producer = Producer(settings.STREAMJOBS)
        atexit.register(self.producer.close)
