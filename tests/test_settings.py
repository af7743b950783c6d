"""Settings come from the environment: safe defaults for a newcomer, no silent insecure production."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = (
    "from django.conf import settings; db = settings.DATABASES['default'];"
    "print(db['ENGINE'], settings.DEBUG, db.get('CONN_MAX_AGE'), 'pool' in db.get('OPTIONS', {}))"
)

pytestmark = pytest.mark.skipif((ROOT / ".env").exists(), reason="a local .env would be read by these settings")


def settings_summary(**env: str) -> subprocess.CompletedProcess:
    """Import aiproxy.settings in a fresh interpreter that has exactly these variables (and PATH)."""
    clean = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "aiproxy.settings", **env}
    command = [sys.executable, "-c", SUMMARY]
    return subprocess.run(command, cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60, check=False)


def test_refuses_to_start_without_a_secret_when_debug_is_off():
    result = settings_summary()

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_runs_on_sqlite_with_nothing_else_set():
    result = settings_summary(DEBUG="true")

    assert result.stdout.split()[:2] == ["django.db.backends.sqlite3", "True"], result.stderr


def test_postgres_uses_the_connection_pool_without_persistent_connections():
    result = settings_summary(SECRET_KEY="x", DATABASE_URL="postgres://postgres@127.0.0.1:5432/aiproxy")

    assert result.stdout.split() == ["django.db.backends.postgresql", "False", "0", "True"], result.stderr
