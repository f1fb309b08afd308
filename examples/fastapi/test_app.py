"""The FastAPI example against a real broker and a real worker (the streamjobs pytest plugin's
fixtures), through FastAPI's in-process TestClient (its lifespan starts the AsyncProducer)."""

from __future__ import annotations

from collections.abc import Callable

from app import create_app
from fastapi.testclient import TestClient
from tasks import registry

from streamjobs import Settings
from streamjobs.testing import RunningWorker


def test_signup_answers_202_with_a_location_that_long_polls_to_the_result(
    streamjobs_settings: Settings, streamjobs_worker: Callable[..., RunningWorker]
) -> None:
    streamjobs_worker(registry)
    with TestClient(create_app(streamjobs_settings)) as client:
        accepted = client.post("/signups", json={"user_id": 7, "address": "ada@example.com"})
        task_id = accepted.json()["task_id"]
        done = client.get(accepted.headers["location"], params={"wait": 30})

    assert accepted.status_code == 202
    assert accepted.headers["location"].endswith(f"/tasks/{task_id}")
    assert done.json()["state"] == "succeeded"
    assert done.json()["result"] == {"sent_to": "ada@example.com"}


def test_a_task_no_worker_has_touched_answers_queued(streamjobs_settings: Settings) -> None:
    with TestClient(create_app(streamjobs_settings)) as client:
        accepted = client.post("/signups", json={"user_id": 8, "address": "bob@example.com"})
        now = client.get(accepted.headers["location"])

    assert now.json()["state"] == "queued"


def test_an_unknown_task_id_is_404(streamjobs_settings: Settings) -> None:
    with TestClient(create_app(streamjobs_settings)) as client:
        assert client.get("/tasks/no-such-task").status_code == 404
