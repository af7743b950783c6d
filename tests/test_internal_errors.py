"""A bug inside aiproxy still answers in OpenAI's shape and still leaves its audit record."""

import httpx
import pytest

from policies import engine
from tests.test_audit_completeness import records_of
from tests.test_bad_input import assert_openai_error

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_unexpected_exception_is_a_json_500_and_is_recorded(live, alice_key, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "apply_request", broken)

    response = httpx.post(
        live.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": []},
        headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": "internal-1"},
    )

    error = assert_openai_error(response, 500, "internal_error")
    assert "a bug" not in error["message"]
    record = records_of("internal-", 1)["internal-1"]
    assert record.status_code == 500
    assert record.outcome == "proxy_error"
