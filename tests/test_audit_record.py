"""The audit record builder: what an exchange becomes, field by field, with no database."""

import hashlib
import time

import orjson
import pytest

from policies.cache import KeyContext
from policies.spec import PASS_THROUGH, PolicySpec
from proxy.audit import audit_line, audit_record_from, secret_needles
from proxy.errors import PolicyRejected, invalid_key, upstream_cut
from proxy.exchange import Exchange, Outcome
from proxy.models import AuditRecord

CHAT_BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
STORED_FIELDS = {field.attname for field in AuditRecord._meta.concrete_fields} - {"id"}


def key_context(*, capture: str = "full", policy_id: int | None = 3) -> KeyContext:
    policy = PolicySpec.from_content(name="team", version=4, content={"audit_capture": capture}, id=policy_id)
    return KeyContext(key_id=7, key_name="alice-app", key_prefix="aip-Alice123", expires_at=None, policy=policy)


ALICE = object()


def finished_exchange(*, key: KeyContext | None | object = ALICE, **fields) -> Exchange:
    """A chat exchange that went through the whole path, finished; keyword arguments override."""
    exchange = Exchange(
        request_id="req-1",
        method="POST",
        path="/v1/chat/completions",
        endpoint="chat",
        client_ip="127.0.0.1",
        user_agent="OpenAI/Python 1.0",
    )
    exchange.key = key_context() if key is ALICE else key
    exchange.request_body = exchange.forwarded_body = CHAT_BODY
    exchange.model_requested = exchange.model_upstream = "gpt-4o"
    exchange.status = exchange.upstream_status = 200
    exchange.response_body = ANSWER
    exchange.response_content_type = "application/json"
    exchange.mark_upstream_start()
    exchange.mark_upstream_headers(200)
    exchange.mark_first_byte()
    for name, value in fields.items():
        setattr(exchange, name, value)
    exchange.finish()
    return exchange


def test_a_full_capture_record_holds_the_whole_exchange():
    exchange = finished_exchange(modifications=["system_context:if_missing"])

    record = audit_record_from(exchange)

    assert record["request_id"] == "req-1"
    assert record["created_at"].timestamp() == pytest.approx(exchange.received_at)
    assert (record["api_key_id"], record["key_prefix"], record["key_name"]) == (7, "aip-Alice123", "alice-app")
    assert (record["policy_id"], record["policy_name"], record["policy_version"]) == (3, "team", 4)
    assert (record["client_ip"], record["user_agent"]) == ("127.0.0.1", "OpenAI/Python 1.0")
    assert (record["method"], record["path"], record["endpoint"]) == ("POST", "/v1/chat/completions", "chat")
    # The upstream's answer names the snapshot that served it.
    assert (record["model_requested"], record["model_upstream"]) == ("gpt-4o", "gpt-4o-2024-08-06")
    assert record["capture"] == "full"
    assert record["request_body"] == record["forwarded_body"] == CHAT_BODY
    assert record["response_body"] == ANSWER
    assert record["bodies_truncated"] is False
    assert record["modifications"] == ["system_context:if_missing"]
    assert (record["status_code"], record["upstream_status"], record["outcome"]) == (200, 200, "ok")
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (5, 2, 7)
    assert record["duration_ms"] >= record["ttfb_ms"] >= 0
    assert record["upstream_ms"] >= 0
    assert (record["error_type"], record["error_code"], record["error_message"]) == ("", "", "")


def test_the_record_fills_every_stored_column_and_nothing_else():
    assert set(audit_record_from(finished_exchange())) == STORED_FIELDS


def test_each_exchange_gets_its_own_record_id_which_its_begin_and_end_share():
    exchange, other = finished_exchange(), finished_exchange()

    # The begin journal writes the record once before the upstream answers, then the finish does.
    assert audit_record_from(exchange)["record_id"] == audit_record_from(exchange)["record_id"]
    assert audit_record_from(exchange)["record_id"] != audit_record_from(other)["record_id"]


def test_metadata_capture_keeps_no_bodies_and_stays_small():
    exchange = finished_exchange(
        key=key_context(capture="metadata"),
        user_agent="u" * 300,
        modifications=["system_context:if_missing", "param_defaults:temperature"],
        error=upstream_cut(),
    )

    record = audit_record_from(exchange)

    assert record["capture"] == "metadata"
    assert record["request_body"] is record["forwarded_body"] is record["response_body"] is None
    # Tokens are metadata: usage is still counted.
    assert record["total_tokens"] == 7
    assert len(audit_line(record)) <= 2048


def test_an_unauthenticated_request_is_recorded_as_metadata_without_a_key():
    exchange = finished_exchange(key=None)

    record = audit_record_from(exchange)

    assert record["capture"] == "metadata"
    assert record["request_body"] is None
    assert (record["api_key_id"], record["key_prefix"], record["policy_id"], record["policy_name"]) == (
        None,
        "",
        None,
        "",
    )


def test_a_key_without_any_policy_has_no_policy_version():
    key = KeyContext(key_id=1, key_name="k", key_prefix="aip-x", expires_at=None, policy=PASS_THROUGH)

    record = audit_record_from(finished_exchange(key=key))

    assert (record["policy_id"], record["policy_name"], record["policy_version"]) == (None, "", None)


def test_a_body_over_the_cap_is_truncated_and_flagged(settings):
    settings.AUDIT_MAX_BODY_BYTES = 1000
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}

    record = audit_record_from(finished_exchange(request_body=big, forwarded_body=big))

    assert record["bodies_truncated"] is True
    stored = record["request_body"]
    assert stored["truncated"] is True
    assert stored["size"] == len(orjson.dumps(big))
    assert stored["head"].startswith('{"model":"gpt-4o"')
    assert len(stored["head"]) <= 1000
    assert record["response_body"] == ANSWER  # under the cap: kept whole


def test_binary_bodies_are_described_never_stored():
    upload = b"--boundary\r\nContent-Disposition: form-data; name=file\r\n\r\n\x00\xff" * 100

    record = audit_record_from(
        finished_exchange(request_body=upload, forwarded_body=None, request_content_type="multipart/form-data")
    )

    assert record["request_body"] == {
        "content_type": "multipart/form-data",
        "size": len(upload),
        "sha256": hashlib.sha256(upload).hexdigest(),
    }
    assert record["bodies_truncated"] is False
    orjson.loads(audit_line(record))


def test_our_own_error_is_recorded():
    rejected = PolicyRejected(status=403, message="This API key may not use the model 'x'.", code="model_not_allowed")
    exchange = finished_exchange(response_body=None)
    exchange.fail(rejected, Outcome.REJECTED)

    record = audit_record_from(exchange)

    assert (record["error_type"], record["error_code"]) == ("invalid_request_error", "model_not_allowed")
    assert record["error_message"] == "This API key may not use the model 'x'."
    assert (record["status_code"], record["outcome"]) == (403, "rejected")


def test_the_upstream_error_body_is_recorded_when_we_raised_none():
    error = {"error": {"message": "Rate limit reached", "type": "rate_limit_error", "code": "rate_limited"}}

    record = audit_record_from(finished_exchange(status=429, upstream_status=429, response_body=error))

    assert (record["error_type"], record["error_code"], record["error_message"]) == (
        "rate_limit_error",
        "rate_limited",
        "Rate limit reached",
    )


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}, (3, 4, 7)),
        ({"prompt_tokens": -1, "completion_tokens": 2**40, "total_tokens": "7"}, (None, None, None)),
        ({"prompt_tokens": True, "total_tokens": 2.5}, (None, None, None)),
        ("not a dict", (None, None, None)),
    ],
)
def test_token_counts_are_taken_only_when_they_fit(usage, expected):
    record = audit_record_from(finished_exchange(response_body={**ANSWER, "usage": usage}))

    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == expected


def test_client_controlled_strings_are_clipped_to_their_columns():
    exchange = finished_exchange(
        path="/v1/" + "p" * 1000,
        method="VERYLONGMETHODNAME",
        model_requested="m" * 1000,
        model_upstream="m" * 1000,
        response_body={"model": "n" * 1000},
        client_ip="unix:/run/aiproxy.sock",
    )

    record = audit_record_from(exchange)

    assert len(record["path"]) == 500
    assert len(record["method"]) == 10
    assert len(record["model_requested"]) == len(record["model_upstream"]) == 200
    assert record["client_ip"] is None


def test_the_line_is_one_json_object_and_reads_back_as_the_record():
    record = audit_record_from(finished_exchange())

    line = audit_line(record)

    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    decoded = orjson.loads(line)
    assert decoded["request_body"] == CHAT_BODY
    assert decoded["record_id"] == record["record_id"]


def test_nul_characters_never_reach_the_line():
    # PostgreSQL's jsonb and text columns refuse them; one such record must not block a batch.
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "a\x00b"}]}

    line = audit_line(audit_record_from(finished_exchange(request_body=body, model_requested="g\x00")))

    assert b"\\u0000" not in line
    decoded = orjson.loads(line)
    assert decoded["request_body"]["messages"][0]["content"] == "a\ufffdb"
    assert decoded["model_requested"] == "g\ufffd"


def test_the_upstream_key_never_reaches_the_line(settings):
    settings.LITELLM_API_KEY = "sk-upstream-master-key-123456"
    error = {"error": {"message": "Invalid key sk-upstream-master-key-123456", "type": "auth_error"}}

    line = audit_line(
        audit_record_from(finished_exchange(status=401, response_body=error)),
        secrets=secret_needles(settings.LITELLM_API_KEY),
    )

    assert b"sk-upstream-master-key-123456" not in line
    assert b"Invalid key [redacted]" in line


def test_a_failed_authentication_records_the_error_not_the_key():
    exchange = finished_exchange(key=None, request_body=None, forwarded_body=None, response_body=None)
    exchange.fail(invalid_key(), Outcome.AUTH_FAILED)

    record = audit_record_from(exchange)

    assert (record["status_code"], record["outcome"], record["error_code"]) == (401, "auth_failed", "invalid_api_key")


def test_timings_come_from_the_exchange():
    exchange = Exchange(
        request_id="r", method="GET", path="/v1/models", endpoint="models", client_ip=None, user_agent=""
    )
    time.sleep(0.002)
    exchange.finish()

    record = audit_record_from(exchange)

    assert record["duration_ms"] >= 2
    assert (record["upstream_ms"], record["ttfb_ms"]) == (None, None)
