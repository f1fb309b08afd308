from django.urls import path
from signups import views

urlpatterns = [
    path("signups", views.signup, name="signup"),
    path("tasks/<str:task_id>", views.task, name="task"),
]
