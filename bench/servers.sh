# Sourced by the quick bench scripts: a scratch database and a key with the harness's policy (both from
# bench/run.py), the fake upstream on 9100 and aiproxy on 8100 (uvicorn, or gunicorn when SERVER=gunicorn).
BIN=.venv/bin
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/aiproxy_bench}
export SECRET_KEY=bench-secret LITELLM_BASE_URL=http://127.0.0.1:9100 LOG_LEVEL=${LOG_LEVEL:-WARNING}
export AUDIT_SPOOL_DIR=${AUDIT_SPOOL_DIR:-$(mktemp -d)}
# A key with the harness's policy (system context, defaults, annotations, full audit): its real configuration.
export AIPROXY_KEY=$($BIN/python bench/run.py --key-only --database-url "$DATABASE_URL")

$BIN/python tests/fake_upstream.py --port 9100 --no-record & UPSTREAM=$!
if [ "${SERVER:-uvicorn}" = gunicorn ]; then
  $BIN/gunicorn aiproxy.asgi:application -k uvicorn_worker.UvicornWorker -w "${WORKERS:-1}" -b 127.0.0.1:8100 \
    --log-level warning & PROXY=$!
else
  $BIN/uvicorn aiproxy.asgi:application --port 8100 --log-level warning --no-access-log & PROXY=$!
fi
trap 'kill $UPSTREAM $PROXY 2>/dev/null; wait 2>/dev/null' EXIT
sleep 3
