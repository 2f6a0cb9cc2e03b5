"""bad-health overlay: /health always fails (500), everything else is v1. Used to prove a deploy
refuses to switch traffic to a release whose health check never passes."""
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache


@never_cache
def health(request):
    return JsonResponse(
        {"status": "error", "release": settings.RELEASE, "database": "not checked", "error": "bad-health variant"},
        status=500,
    )
