# Sourced by the quick bench scripts: a scratch database, a key, the fake upstream on 9100 and
# aiproxy on 8100 (uvicorn, or gunicorn when SERVER=gunicorn); both stopped when the script exits.
BIN=.venv/bin
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/aiproxy_bench}
export SECRET_KEY=bench-secret LITELLM_BASE_URL=http://127.0.0.1:9100 LOG_LEVEL=${LOG_LEVEL:-WARNING}
export AUDIT_SPOOL_DIR=${AUDIT_SPOOL_DIR:-$(mktemp -d)}
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='aiproxy_bench'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE aiproxy_bench"
$BIN/python manage.py migrate -v0
export AIPROXY_KEY=$($BIN/python manage.py create_api_key bench 2>/dev/null | tail -n1)

$BIN/python tests/fake_upstream.py --port 9100 --no-record & UPSTREAM=$!
if [ "${SERVER:-uvicorn}" = gunicorn ]; then
  $BIN/gunicorn aiproxy.asgi:application -k uvicorn_worker.UvicornWorker -w "${WORKERS:-1}" -b 127.0.0.1:8100 \
    --log-level warning & PROXY=$!
else
  $BIN/uvicorn aiproxy.asgi:application --port 8100 --log-level warning --no-access-log & PROXY=$!
fi
trap 'kill $UPSTREAM $PROXY 2>/dev/null; wait 2>/dev/null' EXIT
sleep 3
