from django.urls import include, path

from config import health

urlpatterns = [
    path("health", health.health, name="health"),
    path("", include("lists.urls")),
]
