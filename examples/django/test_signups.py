"""The Django example against a real broker and a real worker, through Django's test client:
a committed signup submits its task, a rolled-back one submits nothing."""

from collections.abc import Callable

from streamjobs import Settings, client
from streamjobs.testing import RunningWorker
from streamjobs.topics import queue_topics


def records_on_the_queue(settings: Settings) -> int:
    """How many task records the queue's main topic holds (its partitions' end offsets)."""
    topic = queue_topics(settings).main
    reader = client.new_reader(settings)
    try:
        return sum(reader.watermarks(topic, p)[1] for p in reader.partition_ids(topic))
    finally:
        reader.close()


def test_a_committed_signup_submits_its_welcome_email_and_a_worker_runs_it(
    django_streamjobs: Settings, streamjobs_worker: Callable[..., RunningWorker]
) -> None:
    from django.test import Client
    from signups.models import Signup
    from signups.tasks import registry

    worker = streamjobs_worker(registry, django_streamjobs)
    body = {"address": "ada@example.com", "accept_terms": True}

    accepted = Client().post("/signups", body, content_type="application/json")
    worker.run_until_idle()
    done = Client().get(accepted["Location"])

    assert accepted.status_code == 202
    task_id = accepted.json()["task_id"]
    assert Signup.objects.get(address="ada@example.com").welcome_task_id == task_id
    assert done.json()["state"] == "succeeded"
    assert done.json()["result"] == {"sent_to": "ada@example.com"}


def test_a_rolled_back_signup_stores_nothing_and_submits_nothing(
    django_streamjobs: Settings,
) -> None:
    from django.test import Client
    from signups.models import Signup

    before = records_on_the_queue(django_streamjobs)
    body = {"address": "bob@example.com", "accept_terms": False}

    rejected = Client().post("/signups", body, content_type="application/json")

    assert rejected.status_code == 400
    assert not Signup.objects.filter(address="bob@example.com").exists()
    assert records_on_the_queue(django_streamjobs) == before
