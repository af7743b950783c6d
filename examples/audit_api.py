"""The five newest audit records, from aiproxy's audit API, with a token.

Env: AIPROXY_API_TOKEN (required: `python manage.py drf_create_token <username>`; the user needs the
"Can view audit record" permission), AIPROXY_BASE_URL (default http://127.0.0.1:8000).
Uses httpx, which comes with the openai package.
"""

import os

import httpx

response = httpx.get(
    os.environ.get("AIPROXY_BASE_URL", "http://127.0.0.1:8000") + "/api/audit/",
    params={"page_size": 5},
    headers={"Authorization": f"Token {os.environ['AIPROXY_API_TOKEN']}"},
    timeout=30,
)
response.raise_for_status()
page = response.json()

for record in page["results"]:
    print(
        record["created_at"],
        record["key_prefix"] or "-",
        record["endpoint"],
        record["model_requested"] or "-",
        record["status_code"],
        f"{record['duration_ms']} ms",
    )
# The API pages with a cursor, newest first: follow page["next"] for older records.
print("more:", page["next"] or "none")
