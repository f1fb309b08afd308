"""A FastAPI service that hands work to streamjobs and answers at once.

``POST /signups`` submits a task and answers ``202 Accepted`` with its id and a ``Location``;
``GET /tasks/{id}`` answers its status and result (``?wait=N`` long-polls up to N seconds for
the outcome). One AsyncProducer per process, started and closed by the app's lifespan.

Run it: ``uvicorn app:app`` here, and ``streamjobs consume tasks:registry`` for a worker
(both read STREAMJOBS_* environment variables, e.g. STREAMJOBS_BOOTSTRAP_SERVERS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel
from tasks import SendWelcomeEmail

from streamjobs import AsyncProducer, Settings, StatusView, TaskTimeout


class Signup(BaseModel):
    user_id: int
    address: str


class Accepted(BaseModel):
    task_id: str


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncProducer(settings) as producer:
            app.state.producer = producer
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/signups", status_code=202)
    async def signup(body: Signup, request: Request, response: Response) -> Accepted:
        producer: AsyncProducer = request.app.state.producer
        task = SendWelcomeEmail(user_id=body.user_id, address=body.address)
        handle = await producer.submit(task, key=f"user-{body.user_id}")
        response.headers["Location"] = str(request.url_for("task", task_id=handle.task_id))
        return Accepted(task_id=handle.task_id)

    @app.get("/tasks/{task_id}", name="task")
    async def task(
        task_id: str, request: Request, wait: float = Query(default=0, ge=0, le=30)
    ) -> dict[str, Any]:
        producer: AsyncProducer = request.app.state.producer
        view: StatusView | None = None
        if wait > 0:
            try:
                view = await producer.wait_status(task_id, timeout=wait)
            except TaskTimeout:
                view = None  # not final yet: answer what it is now
        if view is None:
            view = await producer.status(task_id)
        if view is None:
            raise HTTPException(404, f"no task {task_id}")
        return {
            "task_id": view.task_id,
            "state": view.state.value,
            "result": view.result,
            "error": view.error,
            "reason": view.reason,
        }

    return app


app = create_app()
