"""Settings of the example shop: an ordinary Django project on PostgreSQL.

Nothing here knows about tests. Under pytest, unmocked points ``DATABASES["default"]`` at a database
cloned from a template that these apps' migrations built; the values below are only what a
developer's ``manage.py runserver`` would use.
"""

from __future__ import annotations

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.postgres",
    "catalog",
]

MIDDLEWARE: list[str] = []
ROOT_URLCONF = "shop.urls"
STATIC_URL = "static/"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
