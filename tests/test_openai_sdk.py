"""What a client sees through aiproxy with the official OpenAI SDK, sync and async."""

import openai
import pytest

from tests.fake_upstream import DEFAULT_CONTENT, MODEL_IDS

pytestmark = pytest.mark.django_db(transaction=True)


def test_chat_completion(openai_client, fake_upstream):
    completion = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
    )

    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.model == "gpt-4o-mini"
    assert fake_upstream.last_request.path == "/v1/chat/completions"


def test_streaming_chat_reassembles_to_the_full_answer(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
    )

    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == DEFAULT_CONTENT


def test_completion(openai_client):
    completion = openai_client.completions.create(model="gpt-3.5-turbo", prompt="Say hello")

    assert completion.choices[0].text == DEFAULT_CONTENT


def test_embeddings_one_vector_per_input(openai_client):
    result = openai_client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])

    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 8


def test_models_list_and_detail(openai_client):
    ids = {model.id for model in openai_client.models.list()}
    detail = openai_client.models.retrieve("gpt-4o")

    assert ids == set(MODEL_IDS)
    assert detail.id == "gpt-4o"


def test_unknown_model_detail_is_not_found(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.models.retrieve("no-such-model")


def test_bad_key_raises_authentication_error(live):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="aip-not-a-real-key", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

    assert caught.value.code == "invalid_api_key"


async def test_async_client_chat_and_stream(async_openai_client):
    completion = await async_openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
    )
    stream = await async_openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]

    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert "".join(pieces) == DEFAULT_CONTENT


async def test_async_client_embeddings(async_openai_client):
    result = await async_openai_client.embeddings.create(model="text-embedding-3-small", input="hello")

    assert len(result.data) == 1
