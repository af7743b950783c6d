"""Shared fixtures: the fake upstream and aiproxy, both served by uvicorn on 127.0.0.1."""

import time

import openai
import pytest
from django.conf import settings

from tests.fake_upstream import FakeUpstream
from tests.servers import ServerThread


@pytest.fixture(scope="session")
def fake_upstream():
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def aiproxy_server(fake_upstream, django_db_setup):
    """aiproxy's real ASGI application under uvicorn, on the test database."""
    settings.LITELLM_BASE_URL = fake_upstream.url
    from aiproxy.asgi import application

    with ServerThread(application, name="aiproxy") as server:
        yield server


@pytest.fixture
def live(aiproxy_server, transactional_db, fake_upstream):
    """A running aiproxy whose database the test can write to (committed, so the server sees it)."""
    from policies.cache import config_cache
    from proxy.audit_writer import audit_writer

    config_cache.clear()
    fake_upstream.reset()
    yield aiproxy_server
    # Let the audit writer finish this test's records before the database is flushed for the next.
    deadline = time.monotonic() + 5
    while audit_writer.backlog() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def make_key(transactional_db):
    from policies.keys import api_key_create

    def make(name: str = "alice-app", **kwargs) -> str:
        return api_key_create(name=name, **kwargs)[1]

    return make


@pytest.fixture
def alice_key(make_key) -> str:
    """The raw key of Alice's application, which has no policy of its own."""
    return make_key("alice-app")


@pytest.fixture
def openai_client(live, alice_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key=alice_key, max_retries=0, timeout=10)


@pytest.fixture
def async_openai_client(live, alice_key) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=live.url + "/v1", api_key=alice_key, max_retries=0, timeout=10)
