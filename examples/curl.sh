#!/usr/bin/env bash
# aiproxy with plain curl: models, chat, a streamed chat, embeddings, and (with a token) the audit API.
# Env: AIPROXY_API_KEY (required), AIPROXY_BASE_URL (default http://127.0.0.1:8000),
#      AIPROXY_API_TOKEN (optional: the audit API's token), AIPROXY_MODEL (default gpt-4o-mini).
set -euo pipefail
BASE_URL="${AIPROXY_BASE_URL:-http://127.0.0.1:8000}"
MODEL="${AIPROXY_MODEL:-gpt-4o-mini}"
AUTH="Authorization: Bearer ${AIPROXY_API_KEY:?set AIPROXY_API_KEY}"

echo "== models"
curl -sS --fail-with-body "$BASE_URL/v1/models" -H "$AUTH"
echo

echo "== chat"
curl -sS --fail-with-body "$BASE_URL/v1/chat/completions" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL"'", "messages": [{"role": "user", "content": "Hello"}]}'
echo

echo "== streamed chat (server-sent events; -N prints each as it arrives)"
curl -sS -N --fail-with-body "$BASE_URL/v1/chat/completions" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"model": "'"$MODEL"'", "stream": true, "messages": [{"role": "user", "content": "Hello"}]}'

echo "== embeddings"
curl -sS --fail-with-body "$BASE_URL/v1/embeddings" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"model": "text-embedding-3-small", "input": "Hello"}'
echo

if [ -n "${AIPROXY_API_TOKEN:-}" ]; then
  echo "== audit API: the two newest records"
  curl -sS --fail-with-body "$BASE_URL/api/audit/?page_size=2" -H "Authorization: Token $AIPROXY_API_TOKEN"
  echo
fi
