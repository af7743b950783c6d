"""Local first run: an admin user and a demo API key when none exist, and how to use them."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from policies.keys import api_key_create
from policies.models import ApiKey

SNIPPET = """
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="{key}")
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}])
print(reply.choices[0].message.content)
"""


class Command(BaseCommand):
    help = "Create an admin user and a demo API key if none exist (local development)."

    def handle(self, *args, **options):
        self._ensure_admin()
        self._ensure_demo_key()
        self.stdout.write(f"Upstream (LiteLLM): {settings.LITELLM_BASE_URL}")

    def _ensure_admin(self) -> None:
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            self.stdout.write("Admin: http://127.0.0.1:8000/admin/ (existing superuser)")
            return
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(f"Admin: http://127.0.0.1:8000/admin/  user: admin  password: {password}  (shown once)")

    def _ensure_demo_key(self) -> None:
        existing = ApiKey.objects.filter(is_active=True).first()
        if existing:
            self.stdout.write(
                f"API key: {existing.prefix}… exists (keys are shown only once); "
                "make another with: .venv/bin/python manage.py create_api_key NAME"
            )
            return
        _, raw_key = api_key_create(name="demo")
        self.stdout.write(f"Demo API key (shown once): {raw_key}")
        self.stdout.write("Try it with the OpenAI SDK:" + SNIPPET.format(key=raw_key))
