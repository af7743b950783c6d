"""/health says the process is alive; /ready says whether it can serve."""

import httpx
import pytest

from tests.test_upstream import closed_port

pytestmark = pytest.mark.django_db(transaction=True)


def test_health_touches_nothing(live, settings):
    settings.LITELLM_BASE_URL = f"http://127.0.0.1:{closed_port()}"

    response = httpx.get(live.url + "/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_and_upstream_answer(live):
    response = httpx.get(live.url + "/ready")

    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_not_ready_names_the_unreachable_upstream(live, settings):
    settings.LITELLM_BASE_URL = f"http://127.0.0.1:{closed_port()}"

    response = httpx.get(live.url + "/ready")

    assert response.status_code == 503
    assert "upstream" in response.json()["problems"]
    assert "database" not in response.json()["problems"]


def test_ready_answers_within_its_own_timeout_while_the_database_hangs(live, monkeypatch):
    import time

    from proxy import views

    monkeypatch.setattr(views, "_database_ping", lambda: time.sleep(8))

    # The client gives up well before the hung database would answer: /ready must not wait for it.
    response = httpx.get(live.url + "/ready", timeout=6)

    assert response.status_code == 503
    assert response.json()["problems"]["database"] == "TimeoutError"
