"""Every /v1 request through the live server leaves exactly one audit record, with the right outcome."""

import asyncio
import json
import socket
import time
import uuid

import httpx
import pytest

from policies.models import Policy
from proxy.audit_writer import audit_writer
from proxy.models import AuditRecord

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
PIECES = [f"piece-{i} " for i in range(20)]
STRANGER_KEY = "aip-NotAKeyOfOursButRecognisable0123456789"
COOKIE = "sessionid=recognisable-cookie-value-4242"
PER_KIND = 5


def send_kinds(alice_key: str, metadata_key: str) -> dict[str, dict]:
    """What each kind of request sends, and the record it must leave."""
    alice = {"Authorization": f"Bearer {alice_key}", "Cookie": COOKIE}
    slow_stream = {"x-fake-interval": "0.3", "x-fake-chunks": json.dumps(PIECES)}
    return {
        "plain": {"headers": alice, "body": CHAT, "outcome": "ok", "status": 200},
        "stream": {"headers": alice, "body": {**CHAT, "stream": True}, "outcome": "ok", "status": 200},
        "rejected": {
            "headers": alice,
            "body": {**CHAT, "model": "gpt-3.5-turbo"},
            "outcome": "rejected",
            "status": 403,
        },
        "bad_key": {
            "headers": {"Authorization": f"Bearer {STRANGER_KEY}"},
            "body": CHAT,
            "outcome": "auth_failed",
            "status": 401,
        },
        "upstream_500": {
            "headers": {**alice, "x-fake-status": "500"},
            "body": CHAT,
            "outcome": "upstream_error",
            "status": 500,
        },
        "upstream_cut": {
            "headers": {**alice, "x-fake-cut-after": "2"},
            "body": {**CHAT, "stream": True},
            "outcome": "upstream_cut",
            "status": 200,
        },
        "disconnect": {
            "headers": {**alice, **slow_stream},
            "body": {**CHAT, "stream": True},
            "outcome": "client_disconnected",
            "status": 200,
            "leave_early": True,
        },
        "metadata": {
            "headers": {"api-key": metadata_key},
            "body": CHAT,
            "outcome": "ok",
            "status": 200,
        },
    }


async def send(client: httpx.AsyncClient, request_id: str, kind: dict) -> None:
    headers = {**kind["headers"], "X-Request-ID": request_id}
    async with client.stream("POST", "/v1/chat/completions", json=kind["body"], headers=headers) as response:
        assert response.status_code == kind["status"]
        if kind.get("leave_early"):
            async for line in response.aiter_lines():
                if "piece-1" in line:
                    return  # closing the unfinished response drops the connection
        await response.aread()


async def send_all(base_url: str, requests: dict[str, dict]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        await asyncio.gather(*(send(client, request_id, kind) for request_id, kind in requests.items()))


def records_of(run: str, expected: int, timeout: float = 15.0) -> dict[str, AuditRecord]:
    """The run's records, once all of them are in (the writer is asynchronous by design)."""
    deadline = time.monotonic() + timeout
    while True:
        records = {r.request_id: r for r in AuditRecord.objects.filter(request_id__startswith=run)}
        if len(records) >= expected and audit_writer.backlog() == 0 or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.fixture
def gpt4o_only(live):
    return Policy.objects.create(name="gpt-4o-only", allowed_models=["gpt-4o*"], is_default=True)


@pytest.fixture
def metadata_key(make_key):
    return make_key("meta-app", policy=Policy.objects.create(name="metadata-only", audit_capture="metadata"))


def test_concurrent_mixed_requests_leave_exactly_one_record_each(live, gpt4o_only, alice_key, metadata_key):
    run = uuid.uuid4().hex[:8]
    kinds = send_kinds(alice_key, metadata_key)
    requests = {f"{run}-{name}-{i}": kind for name, kind in kinds.items() for i in range(PER_KIND)}

    asyncio.run(send_all(live.url, requests))
    records = records_of(run, len(requests))

    assert sorted(records) == sorted(requests)
    assert AuditRecord.objects.filter(request_id__startswith=run).count() == len(requests)
    for request_id, kind in requests.items():
        record = records[request_id]
        assert (record.outcome, record.status_code) == (kind["outcome"], kind["status"]), request_id
    check_kinds({name: [records[f"{run}-{name}-{i}"] for i in range(PER_KIND)] for name in kinds})


def check_kinds(by_kind: dict[str, list[AuditRecord]]) -> None:
    for record in by_kind["plain"]:
        assert (record.key_name, record.policy_name, record.policy_version) == ("alice-app", "gpt-4o-only", 1)
        assert record.response_body["choices"][0]["message"]["content"]
        assert record.total_tokens > 0
    for record in by_kind["stream"]:
        assert record.stream is True
        assert record.response_body["choices"][0]["message"]["content"] == "Hello from fake upstream"
    for record in by_kind["rejected"]:
        assert (record.error_code, record.forwarded_body is None) == ("model_not_allowed", True)
        assert record.request_body["model"] == "gpt-3.5-turbo"
    for record in by_kind["bad_key"]:
        assert (record.api_key_id, record.key_prefix, record.capture) == (None, "", "metadata")
    for record in by_kind["upstream_500"]:
        assert record.upstream_status == 500
    for record in by_kind["disconnect"]:
        # What the client had been sent before it left, and not what it never saw.
        content = record.response_body["choices"][0]["message"]["content"]
        assert content.startswith("piece-0 piece-1")
        assert PIECES[-1] not in content
    for record in by_kind["metadata"]:
        assert (record.capture, record.request_body, record.response_body) == ("metadata", None, None)
        assert record.total_tokens > 0


def test_no_key_or_cookie_is_stored_in_any_column(live, alice_key):
    run = uuid.uuid4().hex[:8]
    # A key in a body is the client's own business; keys and cookies in headers are never ours to keep.
    requests = {
        f"{run}-good": {"headers": {"Authorization": f"Bearer {alice_key}", "Cookie": COOKIE}, "body": CHAT},
        f"{run}-stranger": {"headers": {"Authorization": f"Bearer {STRANGER_KEY}"}, "body": CHAT},
        f"{run}-azure": {"headers": {"api-key": STRANGER_KEY}, "body": CHAT},
        f"{run}-stream": {"headers": {"Authorization": f"Bearer {alice_key}"}, "body": {**CHAT, "stream": True}},
    }
    for kind in requests.values():
        kind["status"] = 401 if STRANGER_KEY in str(kind["headers"]) else 200

    asyncio.run(send_all(live.url, requests))
    records = records_of(run, len(requests))

    assert len(records) == len(requests)
    stored = json.dumps(list(AuditRecord.objects.filter(request_id__startswith=run).values()), default=str)
    for secret in (alice_key, STRANGER_KEY, COOKIE.split("=")[1], "Bearer"):
        assert secret not in stored


def test_a_client_that_leaves_while_the_upstream_thinks_still_leaves_its_record(live, alice_key):
    request_id = f"{uuid.uuid4().hex[:8]}-left"
    body = json.dumps(CHAT).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: aiproxy\r\nAuthorization: Bearer {alice_key}\r\n"
        f"X-Request-ID: {request_id}\r\nx-fake-delay: 1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        time.sleep(0.3)  # forwarded, the upstream still thinking: the client gives up

    records = records_of(request_id, 1)

    assert [(r.outcome, r.status_code) for r in records.values()] == [("client_disconnected", 499)]
    assert records[request_id].forwarded_body is not None
