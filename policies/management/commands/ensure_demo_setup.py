"""Local first run: an admin user and a demo API key when none exist, and how to use them."""

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from policies.keys import api_key_create
from policies.models import ApiKey

# The README's quickstart ("Run the full stack locally") is this snippet; tests/test_local_run.py runs it.
SNIPPET = """\
from openai import OpenAI

client = OpenAI(base_url="{base_url}/v1", api_key="{key}")

messages = [{{"role": "user", "content": "Hello"}}]

reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
print(reply.choices[0].message.content)

for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True):
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)

print()

embedding = client.embeddings.create(model="text-embedding-3-small", input="Hello").data[0].embedding
print(len(embedding), "dimensions")

print([model.id for model in client.models.list()])
"""


class Command(BaseCommand):
    help = "Create an admin user and a demo API key if none exist, and print how to use them (local development)."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where aiproxy is served.")

    def handle(self, *args, base_url: str, **options):
        base_url = base_url.rstrip("/")
        # Without a SECRET_KEY, settings load only with DEBUG=true, as `make run` sets it.
        self.manage = ("" if os.environ.get("SECRET_KEY") else "DEBUG=true ") + ".venv/bin/python manage.py"
        self.stdout.write(f"aiproxy: {base_url}  (upstream LiteLLM: {settings.LITELLM_BASE_URL})")
        username = self._ensure_admin(base_url)
        self.stdout.write(
            f"Audit API: {base_url}/api/docs/  (a token for scripts: {self.manage} drf_create_token {username})"
        )
        self.stdout.write(f"Metrics: {base_url}/metrics  (from this machine only; see README, Metrics)")
        self._ensure_demo_key(base_url)

    def _ensure_admin(self, base_url: str) -> str:
        users = get_user_model().objects
        admin = users.filter(is_superuser=True).order_by("pk").first()
        if admin is not None:
            self.stdout.write(
                f"Admin: {base_url}/admin/  user: {admin.get_username()}  "
                f"(forgot the password? {self.manage} changepassword {admin.get_username()})"
            )
            return admin.get_username()
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(f"Admin: {base_url}/admin/  user: admin  password: {password}  (shown once)")
        return "admin"

    def _ensure_demo_key(self, base_url: str) -> None:
        existing = ApiKey.objects.filter(is_active=True).order_by("pk").first()
        if existing:
            self.stdout.write(
                f"API key: {existing.prefix}… exists (keys are shown only once); "
                f"make another with: {self.manage} create_api_key NAME"
            )
            return
        _, raw_key = api_key_create(name="demo")
        self.stdout.write(f"Demo API key (shown once): {raw_key}")
        self.stdout.write("Try it with the OpenAI SDK (for example in .venv/bin/python):\n")
        self.stdout.write(SNIPPET.format(base_url=base_url, key=raw_key))
