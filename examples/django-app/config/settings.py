"""Settings for the greenlight example to-do app. Everything deploy-specific comes from env vars
(see docs/contracts.md): DJANGO_SECRET_KEY, DJANGO_SECRET_KEY_FALLBACKS, DJANGO_ALLOWED_HOST,
DJANGO_DEBUG_FALSE, DJANGO_DB_PATH; GREENLIGHT_RELEASE is baked into the image at build time."""
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _csv(name):
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


DEBUG = not os.environ.get("DJANGO_DEBUG_FALSE")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG_FALSE is set")
    SECRET_KEY = "insecure-dev-only-key"
# Old keys still accepted for verifying signatures (sessions, signed cookies) during a rotation.
SECRET_KEY_FALLBACKS = _csv("DJANGO_SECRET_KEY_FALLBACKS")

# Health checks hit the container directly on 127.0.0.1 / localhost, so those are always allowed.
ALLOWED_HOSTS = _csv("DJANGO_ALLOWED_HOST") + ["127.0.0.1", "localhost"]
# Behind the TLS-terminating nginx: trust its X-Forwarded-Proto so request.is_secure() is right,
# and accept HTTPS form posts coming from the public host names.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = [f"https://{h.lstrip('.')}" for h in _csv("DJANGO_ALLOWED_HOST") if h != "*"]

RELEASE = os.environ.get("GREENLIGHT_RELEASE", "dev")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "lists",
]

MIDDLEWARE = [
    "lists.middleware.ReleaseHeaderMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "lists.context_processors.site",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", "/data/db.sqlite3"),
        # Blue and green containers share one SQLite file during a swap: wait for locks
        # instead of failing, and take the write lock at the start of a transaction.
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }
}

# Session data lives in a cookie signed with SECRET_KEY (verified with SECRET_KEY_FALLBACKS too),
# so a key rotation with fallbacks keeps users' sessions.
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
SESSION_COOKIE_HTTPONLY = True

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT", str(BASE_DIR / "static"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {"django.request": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
