from django.conf import settings


class ReleaseHeaderMiddleware:
    """Stamp every response with the release that produced it (X-Release)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.release = settings.RELEASE

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Release"] = self.release
        return response
