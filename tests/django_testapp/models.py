"""Models of the Django tests."""

from __future__ import annotations

from django.db import models


class Account(models.Model):
    """A balance that concurrent transactions update."""

    name = models.CharField(max_length=50, unique=True)
    balance = models.IntegerField(default=0)

    class Meta:
        app_label = "django_testapp"

    def __str__(self) -> str:
        return f"{self.name}: {self.balance}"
