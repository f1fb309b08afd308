# signups/tasks.py: the task types and handlers, shared by the web app and the worker
from streamjobs import Task, TaskRegistry


class SendWelcomeEmail(Task):
    user_id: int
    address: str


registry = TaskRegistry()


@registry.handler(SendWelcomeEmail, max_attempts=5)
def send_welcome_email(task: SendWelcomeEmail) -> dict[str, str]:
    # ... call your mail provider ...
    return {"sent_to": task.address}
