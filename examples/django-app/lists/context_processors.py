from django.conf import settings

from lists import branding


def site(request):
    return {"site_title": branding.SITE_TITLE, "release": settings.RELEASE}
