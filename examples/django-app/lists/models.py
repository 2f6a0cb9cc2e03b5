from django.db import models
from django.urls import reverse


class List(models.Model):
    name = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def get_absolute_url(self):
        return reverse("view_list", args=[self.id])

    def __str__(self):
        return self.name


class Item(models.Model):
    list = models.ForeignKey(List, related_name="items", on_delete=models.CASCADE)
    text = models.CharField(max_length=500)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.text
