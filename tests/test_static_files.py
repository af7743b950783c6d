"""The admin's static files are served (collected), without touching the /v1 path."""

import httpx
import pytest
from django.core.management import call_command


@pytest.fixture
def collected(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    return tmp_path


async def test_admin_css_is_served(collected):
    from aiproxy.asgi import Application

    transport = httpx.ASGITransport(app=Application())
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert response.content == (collected / "admin/css/base.css").read_bytes()
