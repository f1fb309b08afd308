"""The Flask example against a real broker and a real worker (the streamjobs pytest plugin's
fixtures), through Flask's in-process test client."""

from __future__ import annotations

from collections.abc import Callable

from app import create_app
from tasks import registry

from streamjobs import Producer, Settings
from streamjobs.testing import RunningWorker


def test_signup_answers_202_with_a_location_that_shows_the_result(
    streamjobs_settings: Settings, streamjobs_worker: Callable[..., RunningWorker]
) -> None:
    worker = streamjobs_worker(registry)
    app = create_app(streamjobs_settings)
    client = app.test_client()

    accepted = client.post("/signups", json={"user_id": 7, "address": "ada@example.com"})
    worker.run_until_idle()
    done = client.get(accepted.headers["Location"])
    app.extensions["streamjobs"].close()

    assert accepted.status_code == 202
    assert accepted.headers["Location"].endswith(f"/tasks/{accepted.json['task_id']}")
    assert done.json == {
        "task_id": accepted.json["task_id"],
        "state": "succeeded",
        "result": {"sent_to": "ada@example.com"},
        "error": None,
        "reason": None,
    }


def test_a_task_no_worker_has_touched_answers_queued_and_an_unknown_id_404(
    streamjobs_settings: Settings,
) -> None:
    app = create_app(streamjobs_settings)
    client = app.test_client()

    accepted = client.post("/signups", json={"user_id": 8, "address": "bob@example.com"})
    queued = client.get(accepted.headers["Location"])
    unknown = client.get("/tasks/no-such-task")
    producer: Producer = app.extensions["streamjobs"]
    producer.close()

    assert queued.json["state"] == "queued"
    assert unknown.status_code == 404
