"""The upstream connection pool: busy connections are reused, idle ones dropped before the upstream drops them."""

import asyncio

import pytest

from proxy import upstream

MODELS = "/v1/models"


@pytest.fixture
async def fresh_session(settings, fake_upstream, monkeypatch):
    """A session of this test's own, made with its settings (the process's one is made once)."""
    settings.LITELLM_BASE_URL = fake_upstream.url
    monkeypatch.setattr(upstream, "_session", None)
    yield
    await upstream.close()


async def ports_of(*gaps: float, fake_upstream) -> list[int]:
    """Sends GET /v1/models after each gap; the client port each request arrived on."""
    fake_upstream.reset()
    for gap in gaps:
        await asyncio.sleep(gap)
        response = await upstream.send(method="GET", path=MODELS, query=b"", headers={}, body=None)
        await response.aread()
        await response.aclose()
    return [request.client_port for request in fake_upstream.requests_for(MODELS)]


async def test_back_to_back_requests_share_one_connection(settings, fake_upstream, fresh_session):
    settings.UPSTREAM_KEEPALIVE_SECONDS = 5.0

    ports = await ports_of(0, 0, 0, fake_upstream=fake_upstream)

    assert len(set(ports)) == 1


async def test_a_connection_idle_longer_than_the_keepalive_is_not_reused(settings, fake_upstream, fresh_session):
    settings.UPSTREAM_KEEPALIVE_SECONDS = 0.2

    ports = await ports_of(0, 1.0, fake_upstream=fake_upstream)

    assert len(set(ports)) == 2
