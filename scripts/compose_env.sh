#!/usr/bin/env bash
# Writes .env for `docker compose up`, with generated secrets. Never overwrites an existing .env.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -e .env ]; then
  echo ".env exists; not changing it. It needs SECRET_KEY, POSTGRES_PASSWORD and LITELLM_MASTER_KEY." >&2
  exit 1
fi
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
umask 077
cat >.env <<ENV
# Settings for docker compose (README, Docker); also read by a local run. Keep this file private.
SECRET_KEY=$(secret)
POSTGRES_PASSWORD=$(secret)
LITELLM_MASTER_KEY=sk-$(secret)
# Real models instead of LiteLLM's mocks:
# OPENAI_API_KEY=sk-...
# ANTHROPIC_API_KEY=sk-ant-...
# /metrics for a scraper on the compose network (README, Metrics):
# METRICS_TOKEN=$(secret)
# METRICS_ALLOWED_NETWORKS=0.0.0.0/0,::/0
ENV
echo "Wrote .env. Next: docker compose up" >&2
