"""A worker's shutdown releases what it holds, even when one step of it fails."""

import pytest

from aiproxy import lifecycle
from proxy import upstream


async def test_the_upstream_session_is_closed_even_when_the_audit_writer_fails_to_stop(monkeypatch):
    # This process may serve the suite's aiproxy too: its tasks and session are not this test's to stop.
    monkeypatch.setattr(lifecycle, "_tasks", [])
    monkeypatch.setattr(upstream, "_session", None)
    session = upstream.client()

    async def writer_stop_fails(*args, **kwargs):
        raise RuntimeError("the database went away during shutdown")

    monkeypatch.setattr(lifecycle.audit_writer, "stop", writer_stop_fails)

    with pytest.raises(RuntimeError):
        await lifecycle.shutdown()

    assert session.closed
