"""A stored response belongs to the key that created it: any other key finds nothing there."""

import httpx
import openai
import pytest

from proxy import ownership
from tests.test_audit_completeness import records_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_client(live, alice_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=alice_key, max_retries=0, timeout=10)


@pytest.fixture
def mallory_client(live, make_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=make_key("mallory-app"), max_retries=0, timeout=10)


@pytest.fixture
def created(alice_client) -> str:
    """The id of a response Alice's key created."""
    return alice_client.responses.create(model="gpt-4o", input="Remember the number 42.").id


def test_the_creator_reads_lists_cancels_and_deletes_its_response(alice_client, created):
    retrieved = alice_client.responses.retrieve(created)
    items = alice_client.responses.input_items.list(created)
    cancelled = alice_client.responses.cancel(created)
    alice_client.responses.delete(created)

    assert retrieved.id == created
    assert items.data[0].content[0].text == "Remember the number 42."
    assert cancelled.status == "cancelled"


@pytest.mark.parametrize("action", ["retrieve", "input_items", "cancel", "delete"])
def test_another_key_gets_404_and_the_upstream_sees_nothing(mallory_client, created, fake_upstream, action):
    fake_upstream.reset()
    calls = {
        "retrieve": lambda: mallory_client.responses.retrieve(created),
        "input_items": lambda: mallory_client.responses.input_items.list(created),
        "cancel": lambda: mallory_client.responses.cancel(created),
        "delete": lambda: mallory_client.responses.delete(created),
    }

    with pytest.raises(openai.NotFoundError) as caught:
        calls[action]()

    assert caught.value.code == "not_found"
    assert fake_upstream.requests == []


def test_another_key_cannot_build_on_the_response(mallory_client, created, fake_upstream):
    fake_upstream.reset()

    with pytest.raises(openai.NotFoundError) as caught:
        mallory_client.responses.create(model="gpt-4o", input="What was the number?", previous_response_id=created)

    assert caught.value.param == "previous_response_id"
    assert fake_upstream.requests == []


def test_the_creator_builds_on_its_own_response(alice_client, created, fake_upstream):
    alice_client.responses.create(model="gpt-4o", input="What was the number?", previous_response_id=created)

    assert fake_upstream.requests_for("/v1/responses")[-1].json["previous_response_id"] == created


def test_ownership_comes_from_the_audit_log_when_this_worker_did_not_see_the_create(
    alice_client, mallory_client, created
):
    ownership._recent.clear()  # as if another worker had served the create

    assert alice_client.responses.retrieve(created).id == created
    with pytest.raises(openai.NotFoundError):
        mallory_client.responses.retrieve(created)


def test_the_attempt_is_audited(live, make_key, created):
    key = make_key("mallory-app")

    httpx.get(
        f"{live.url}/v1/responses/{created}",
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": "stolen-read-1"},
        timeout=10,
    )

    record = records_of("stolen-read-1", 1)["stolen-read-1"]
    assert (record.status_code, record.outcome, record.key_name) == (404, "rejected", "mallory-app")
    assert record.endpoint == "responses_object"


def test_an_unknown_or_malformed_id_is_404(alice_client, live, alice_key, fake_upstream):
    with pytest.raises(openai.NotFoundError):
        alice_client.responses.retrieve("resp_nobody")
    odd = httpx.get(f"{live.url}/v1/responses/resp%2F..%2Fx", headers={"Authorization": f"Bearer {alice_key}"})

    assert odd.status_code == 404
    assert fake_upstream.requests_for("/v1/responses/resp_nobody") == []
