"""Audit exports: JSON Lines and CSV, filtered, oldest first, streamed in chunks under WSGI and ASGI."""

import csv
import io
import json
import warnings
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.db import connections
from django.http import StreamingHttpResponse
from django.test import AsyncClient
from rest_framework.authtoken.models import Token

from proxy.api.serializers import ALL_FIELDS, METADATA_FIELDS
from tests.factories import audit_record_create, auditor_create, client_for

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
JSONL = "/api/audit/export.jsonl"
CSV = "/api/audit/export.csv"


@pytest.fixture
def api(db):
    return client_for(auditor_create())


@pytest.fixture
def three_records(db) -> None:
    """Created newest first, so an export in insertion order would be wrong."""
    for minutes, status in ((1, 200), (2, 429), (3, 200)):
        audit_record_create(request_id=f"r{minutes}", created_at=NOW - timedelta(minutes=minutes), status_code=status)


def body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_jsonl_streams_whole_records_oldest_first(api, three_records):
    response = api.get(JSONL)

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "application/jsonl"
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    assert response["Content-Disposition"].endswith('.jsonl"')
    records = [json.loads(line) for line in body(response).splitlines()]
    assert [record["request_id"] for record in records] == ["r3", "r2", "r1"]
    assert tuple(records[0]) == ALL_FIELDS
    assert records[0]["request_body"]["messages"][0]["content"] == "Hello"
    assert records[0]["created_at"] == "2025-03-14T11:57:00Z"


def test_csv_has_a_header_and_one_metadata_row_per_record(api, three_records):
    response = api.get(CSV)

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert tuple(rows[0]) == METADATA_FIELDS
    assert [row["request_id"] for row in rows] == ["r3", "r2", "r1"]
    assert rows[1]["status_code"] == "429"
    assert rows[0]["stream"] == "false"
    assert rows[0]["created_at"] == "2025-03-14T11:57:00+00:00"
    assert rows[0]["policy_version"] == ""


@pytest.mark.parametrize("url", [JSONL, CSV])
def test_exports_take_the_list_filters(api, three_records, url):
    response = api.get(url, {"status": "4xx"})

    assert response.status_code == 200
    content = body(response)
    assert "r2" in content
    assert "r1" not in content
    assert "r3" not in content


@pytest.mark.parametrize("url", [JSONL, CSV])
def test_an_invalid_filter_is_a_json_400(api, url):
    response = api.get(url, {"status": "9xx", "created_after": "last tuesday"})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == {"status", "created_after"}


@pytest.mark.parametrize("url", [JSONL, CSV])
def test_the_accept_header_does_not_block_a_download(api, three_records, url):
    response = api.get(url, HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert "r2" in body(response)


def test_an_empty_csv_export_still_has_its_header(api):
    rows = list(csv.reader(io.StringIO(body(api.get(CSV)))))

    assert rows == [list(METADATA_FIELDS)]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(api):
    audit_record_create(user_agent='=HYPERLINK("http://evil")', modifications=[{"op": "set"}], stream=True)

    row = next(csv.DictReader(io.StringIO(body(api.get(CSV)))))

    assert row["user_agent"] == '\'=HYPERLINK("http://evil")'
    assert json.loads(row["modifications"]) == [{"op": "set"}]
    assert row["stream"] == "true"


def test_the_export_is_produced_in_chunks(api, three_records, monkeypatch):
    monkeypatch.setattr("proxy.api.exports.CHUNK_ROWS", 2)

    chunks = list(api.get(JSONL).streaming_content)

    assert [chunk.count(b"\n") for chunk in chunks] == [2, 1]


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_streams_from_an_async_iterator(monkeypatch):
    from asgiref.sync import sync_to_async

    @sync_to_async
    def setup():
        for minutes in (1, 2, 3):
            audit_record_create(request_id=f"r{minutes}", created_at=NOW - timedelta(minutes=minutes))
        return auditor_create()

    monkeypatch.setattr("proxy.api.exports.CHUNK_ROWS", 2)
    client = AsyncClient()
    await client.aforce_login(await setup())

    response = await client.get(JSONL)

    assert response.status_code == 200
    # A sync iterator here would be read whole into a list before the first byte left.
    assert response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) == 2
    lines = b"".join(chunks).decode().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r3", "r2", "r1"]
    # The sync thread's connection is nobody's to close otherwise, and would block dropping the test database.
    await sync_to_async(connections.close_all)()


def test_over_a_real_socket_the_export_streams_without_buffering(live, monkeypatch):
    """aiproxy under uvicorn: the export arrives chunked, and Django never falls back to reading it whole."""
    monkeypatch.setattr("proxy.api.exports.CHUNK_ROWS", 2)
    for minutes in (1, 2, 3):
        audit_record_create(request_id=f"r{minutes}", created_at=NOW - timedelta(minutes=minutes))
    token = Token.objects.create(user=auditor_create())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with httpx.stream("GET", live.url + CSV, headers={"Authorization": f"Token {token.key}"}) as response:
            content = response.read().decode()

    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert [row["request_id"] for row in csv.DictReader(io.StringIO(content))] == ["r3", "r2", "r1"]
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]
