"""``POST /signups`` stores a signup and submits its welcome email once the transaction commits;
``GET /tasks/<id>`` answers a task's status and result."""

import json
import uuid
from functools import partial

from django.apps import apps
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from signups.models import Signup
from signups.tasks import SendWelcomeEmail


@require_POST
def signup(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    producer = apps.get_app_config("signups").producer
    task_id = uuid.uuid4().hex  # known now, so the row and the answer can name it
    row = Signup.objects.create(address=body["address"], welcome_task_id=task_id)
    task = SendWelcomeEmail(user_id=row.pk, address=row.address)
    # submitted only if this request's transaction commits: a rolled-back signup sends nothing
    transaction.on_commit(partial(producer.submit, task, key=f"user-{row.pk}", task_id=task_id))
    if not body.get("accept_terms"):
        transaction.set_rollback(True)  # a check after the insert: undo it, submit nothing
        return JsonResponse({"error": "terms not accepted"}, status=400)
    response = JsonResponse({"task_id": task_id}, status=202)
    response["Location"] = request.build_absolute_uri(reverse("task", args=[task_id]))
    return response


@require_GET
def task(request: HttpRequest, task_id: str) -> JsonResponse:
    view = apps.get_app_config("signups").producer.status(task_id)
    if view is None:
        return JsonResponse({"error": f"no task {task_id}"}, status=404)
    return JsonResponse(
        {
            "task_id": view.task_id,
            "state": view.state.value,
            "result": view.result,
            "error": view.error,
            "reason": view.reason,
        }
    )
