#!/bin/sh
# The aiproxy container's start: migrations first (idempotent), then the command (gunicorn).
set -eu
python manage.py migrate --noinput
exec "$@"
