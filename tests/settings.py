"""Settings for the test suite: aiproxy's own, with a test secret and quiet logs."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from aiproxy.settings import *  # noqa: E402,F403

# Fast hashing for the few users tests create.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
