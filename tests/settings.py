"""Settings for the test suite: aiproxy's own, with a test secret and quiet logs."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("LOG_LEVEL", "WARNING")
# The fake and hostile upstreams are steered by request headers, which aiproxy forwards only when told.
os.environ.setdefault("UPSTREAM_FORWARD_HEADERS", "x-fake-*,x-hostile*,x-secret-probe")
# A fresh spool per run (records of an earlier, interrupted run must not replay into this one),
# unless a test's own aiproxy process was given one.
if "AUDIT_SPOOL_DIR" not in os.environ:
    os.environ["AUDIT_SPOOL_DIR"] = tempfile.mkdtemp(prefix="aiproxy-test-spool-")

from aiproxy.settings import *  # noqa: E402,F403

# Fast hashing for the few users tests create.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not the shared in-memory database: the server thread and the tests use separate
    # connections, and SQLite's shared-cache mode locks whole tables between them.
    # One file per run, so that parallel runs never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}  # noqa: F405
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20  # noqa: F405
