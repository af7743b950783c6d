"""Audit list query time on a million-record table: fills a scratch PostgreSQL database, times the API's query.

    python bench/audit_query.py [--rows 1000000] [--runs 15] [--refill]
        [--database-url postgres://postgres@127.0.0.1:5432/aiproxy_audit_bench]

The scratch database is created and migrated if missing, and filled once (INSERT ... SELECT over
generate_series, about a minute); later runs reuse it. Never run by the test suite.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/aiproxy_audit_bench"
KEYS = 200
DAYS = 30
# A key of middling traffic (keys are skewed: key 0 is the busiest); about 0.8 % of all records.
BENCH_KEY = 20

FILL_SQL = """
INSERT INTO proxy_auditrecord (
    record_id, request_id, created_at, api_key_id, key_prefix, key_name, policy_id, policy_name, policy_version,
    client_ip, user_agent, method, path, endpoint, model_requested, model_upstream, stream, capture,
    request_body, forwarded_body, response_body, bodies_truncated, modifications, status_code, upstream_status,
    outcome, error_type, error_code, error_message, prompt_tokens, completion_tokens, total_tokens,
    duration_ms, upstream_ms, ttfb_ms
)
SELECT
    gen_random_uuid(), md5(i::text), now() - make_interval(secs => i * %(span)s / %(rows)s),
    k + 1, 'aip-key' || lpad(k::text, 5, '0'), 'app-' || k, k %% 5 + 1, 'policy-' || (k %% 5 + 1), 1 + i %% 3,
    ('10.0.' || (k %% 250) || '.' || (i %% 250))::inet, 'OpenAI/Python 1.54.0', 'POST',
    '/v1/' || endpoint, endpoint, model, model || '-2024-07-18', r.stream, 'full',
    jsonb_build_object('model', model, 'stream', r.stream, 'messages', jsonb_build_array(
        jsonb_build_object('role', 'user', 'content', 'Question ' || i || ' about ' || topic || ', please be brief.'))),
    jsonb_build_object('model', model || '-2024-07-18', 'stream', r.stream, 'temperature', 0.3, 'messages',
        jsonb_build_array(
            jsonb_build_object('role', 'system', 'content', 'You are a helpful assistant of ACME Corp.'),
            jsonb_build_object('role', 'user', 'content',
                'Question ' || i || ' about ' || topic || ', please be brief.'))),
    jsonb_build_object('id', 'chatcmpl-' || i, 'object', 'chat.completion', 'choices', jsonb_build_array(
        jsonb_build_object('index', 0, 'finish_reason', 'stop', 'message',
            jsonb_build_object('role', 'assistant', 'content', 'Here is a short answer about ' || topic || '.')))),
    false, '[]'::jsonb, status, CASE WHEN status = 401 THEN NULL ELSE status END,
    CASE WHEN status = 200 THEN 'ok' WHEN status = 401 THEN 'auth_failed' WHEN status = 400 THEN 'invalid_request'
         WHEN status IN (404, 429) THEN 'rejected' ELSE 'upstream_error' END,
    CASE WHEN status = 200 THEN '' ELSE 'error_' || status END, '', '',
    20 + i %% 400, 5 + i %% 300, 25 + i %% 400 + i %% 300,
    200 + 3000 * r.x * r.x, 150 + 3000 * r.x * r.x, 80 + 200 * r.x
FROM generate_series(1, %(rows)s) AS i
CROSS JOIN LATERAL (
    SELECT
        floor(%(keys)s * power(random(), 2))::int AS k,
        random() AS x,
        random() < 0.4 AS stream,
        (ARRAY['gpt-4o-mini', 'gpt-4o-mini', 'gpt-4o-mini', 'gpt-4o', 'gpt-4.1', 'o3-mini'])[1 + i %% 6] AS model,
        (ARRAY['tides', 'invoices', 'kubernetes', 'sourdough', 'tax law', 'penguins', 'jazz'])[1 + i %% 7] AS topic,
        CASE WHEN i %% 20 = 0 THEN 'embeddings' WHEN i %% 20 = 1 THEN 'completions' ELSE 'chat/completions' END
            AS endpoint,
        (ARRAY[200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200,
               200, 200, 200, 200, 200, 429, 400, 401, 404, 502])[1 + floor(random() * 28)::int] AS status
) AS r
"""


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiproxy.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()


def database_create(database_url: str) -> None:
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"created database {name}")


def table_fill(*, rows: int, refill: bool) -> None:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM proxy_auditrecord")
        present = cursor.fetchone()[0]
        if present >= rows and not refill:
            print(f"reusing {present:,} audit records")
            return
        print(f"filling {rows:,} audit records ...", flush=True)
        started = time.perf_counter()
        cursor.execute("TRUNCATE proxy_auditrecord")
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute(FILL_SQL, {"rows": rows, "span": DAYS * 86400.0, "keys": KEYS})
        cursor.execute("VACUUM ANALYZE proxy_auditrecord")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('proxy_auditrecord'))")
        size = cursor.fetchone()[0]
        print(f"filled in {time.perf_counter() - started:.0f} s; table with indexes: {size}")


def median_ms(function, runs: int) -> float:
    function()  # warm the cache and the connection
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def scenarios() -> dict[str, dict[str, str]]:
    from django.utils import timezone

    now = timezone.now()
    key = f"aip-key{BENCH_KEY:05d}"
    week_ago = (now - timedelta(days=7)).isoformat()
    return {
        "key prefix + status 4xx + last 7 days": {"key": key, "status": "4xx", "created_after": week_ago},
        "key prefix start (LIKE) + last 7 days": {"key": f"aip-key{BENCH_KEY // 10:04d}", "created_after": week_ago},
        "no filter (newest 50)": {},
        "model + outcome + last 24 h": {
            "model": "gpt-4.1",
            "outcome": "rejected",
            "created_after": (now - timedelta(days=1)).isoformat(),
        },
        "status 502 + stream": {"status": "502", "stream": "true"},
        "q text search + key + last 7 days": {"q": "sourdough", "key": key, "created_after": week_ago},
    }


def first_page(params: dict[str, str]):
    """The queryset the list view pages: its filterset over the selector, newest first, one page plus one."""
    from proxy.api.filters import AuditRecordFilter
    from proxy.api.selectors import NEWEST_FIRST, audit_record_list
    from proxy.api.views import AuditCursorPagination

    filterset = AuditRecordFilter(data=params, queryset=audit_record_list())
    assert filterset.is_valid(), filterset.errors
    return filterset.qs.order_by(*NEWEST_FIRST)[: AuditCursorPagination.page_size + 1]


def api_client():
    from django.contrib.auth.models import Permission, User
    from rest_framework.test import APIClient

    user, _ = User.objects.get_or_create(username="bench-auditor")
    user.user_permissions.add(Permission.objects.get(codename="view_auditrecord"))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))
    return client


def admin_client():
    from django.contrib.auth.models import User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    return client


def others(runs: int) -> None:
    """The other reads an operator makes of the same table, through their real views."""
    api, admin = api_client(), admin_client()
    key = f"aip-key{BENCH_KEY:05d}"
    pages = {
        "usage, all keys, last 7 days, per day": lambda: api.get("/api/usage/").json(),
        "usage, one key, last 7 days, per hour": lambda: api.get("/api/usage/", {"key": key, "bucket": "hour"}).json(),
        "admin changelist, unfiltered": lambda: admin.get("/admin/proxy/auditrecord/").content,
        "admin changelist, status 4xx": lambda: admin.get("/admin/proxy/auditrecord/", {"status": "4xx"}).content,
    }
    print(f"\n{'page':48} {'ms':>8}")
    for name, fetch in pages.items():
        print(f"{name:48} {median_ms(fetch, runs):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--refill", action="store_true")
    args = parser.parse_args()

    database_create(args.database_url)
    setup_django(args.database_url)
    table_fill(rows=args.rows, refill=args.refill)
    client = api_client()

    print(f"\nmedian of {args.runs} runs after one warm-up, first page of 50:")
    print(f"{'filter':42} {'rows':>5} {'query ms':>9} {'API ms':>8}")
    for name, params in scenarios().items():
        count = len(list(first_page(params)))
        query_ms = median_ms(lambda params=params: list(first_page(params)), args.runs)
        api_ms = median_ms(lambda params=params: client.get("/api/audit/", params).json(), args.runs)
        print(f"{name:42} {count:>5} {query_ms:>9.2f} {api_ms:>8.2f}")

    others(max(3, args.runs // 3))

    for name, params in list(scenarios().items())[:2] + list(scenarios().items())[-1:]:
        print(f"\nEXPLAIN ANALYZE, {name}:\n{first_page(params).explain(analyze=True, buffers=True)}")


if __name__ == "__main__":
    main()
