from django.db import models


class Signup(models.Model):
    address = models.EmailField(unique=True)
    welcome_task_id = models.CharField(max_length=32)
