"""A Flask app that hands work to streamjobs and answers at once.

``POST /signups`` submits a task and answers ``202 Accepted`` with its id and a ``Location``;
``GET /tasks/<id>`` answers its status and result. One Producer per process, created with the
app and closed when the process exits (it is thread-safe: every request thread shares it).

Run it: ``flask --app app run`` here, and ``streamjobs consume tasks:registry`` for a worker
(both read STREAMJOBS_* environment variables, e.g. STREAMJOBS_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

import atexit
from typing import Any

from flask import Flask, abort, request, url_for
from tasks import SendWelcomeEmail

from streamjobs import Producer, Settings


def create_app(settings: Settings | None = None) -> Flask:
    app = Flask(__name__)
    producer = Producer(settings or Settings())
    atexit.register(producer.close)  # confirms what is in flight before the process ends
    app.extensions["streamjobs"] = producer

    @app.post("/signups")
    def signup() -> tuple[dict[str, Any], int, dict[str, str]]:
        body = request.get_json()
        task = SendWelcomeEmail(user_id=body["user_id"], address=body["address"])
        handle = producer.submit(task, key=f"user-{body['user_id']}")
        location = url_for("task", task_id=handle.task_id, _external=True)
        return {"task_id": handle.task_id}, 202, {"Location": location}

    @app.get("/tasks/<task_id>")
    def task(task_id: str) -> dict[str, Any]:
        view = producer.status(task_id)
        if view is None:
            abort(404)
        return {
            "task_id": view.task_id,
            "state": view.state.value,
            "result": view.result,
            "error": view.error,
            "reason": view.reason,
        }

    return app
