"""/health: 200 only when the database answers a real query."""
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from lists.models import List


@never_cache
def health(request):
    try:
        List.objects.count()
    except Exception as exc:  # any DB problem (missing file, no table, locked...) is unhealthy
        return JsonResponse(
            {"status": "error", "release": settings.RELEASE, "database": f"error: {exc.__class__.__name__}: {exc}"},
            status=503,
        )
    return JsonResponse({"status": "ok", "release": settings.RELEASE, "database": "ok"})
